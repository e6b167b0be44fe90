"""Connection reuse: one SSH connection per endpoint, shared by every caller of a sweep, and
kept between sweeps when the pool is (`Checker.sweep(pool=...)`: `--watch`, `serve`).

```python
async with SSHPool(SSHOptions.from_config(config)) as pool:
    conn = await pool.connect(params)          # opened once, shared
    tunnel = await conn.tunnel("127.0.0.1", 15132)
```
Concurrent `connect()` calls for the same `SSHParams` (host, port, user, keys, agent) share one
attempt; a failed attempt is not cached, so a later call tries again. A caller that is cancelled
(its own deadline) does not cancel the attempt other callers wait on. Connections are the pool's:
closing the pool closes them, and their tunnels. A connection found closed (lost, or by its
keepalive) is replaced at the next `connect()`.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from flow.errors import SSHError
from flow.ssh.connection import ConnectFactory, SSHConnection, connect
from flow.ssh.known_hosts import KnownHostsStore
from flow.ssh.params import SSHOptions, SSHParams

__all__ = ["SSHPool"]


class SSHPool:
    """Shares SSH connections (and one known-hosts store) among the tasks of a sweep."""

    def __init__(self, options: SSHOptions, *, connect_factory: ConnectFactory | None = None) -> None:
        self.options = options
        self._factory = connect_factory
        self._known_hosts = KnownHostsStore(options.user_known_hosts_files, options.known_hosts_file)
        self._attempts: dict[SSHParams, asyncio.Task[SSHConnection]] = {}
        self._closed = False

    async def connect(self, params: SSHParams) -> SSHConnection:
        """The pooled connection for `params`, opening it if needed (see `flow.ssh.connect`).

        Raises:
            SSHError: as `flow.ssh.connect`; kind `closed` once the pool is closed.
        """
        if self._closed:
            raise SSHError(f"{params.label}: the SSH pool is closed", host=params.host, kind="closed")
        task = self._attempts.get(params)
        if task is not None and task.done() and (
            task.cancelled() or task.exception() is not None or task.result().closed
        ):
            task = None
        if task is None:
            task = asyncio.ensure_future(
                connect(params, self.options, connect_factory=self._factory, known_hosts=self._known_hosts)
            )
            self._attempts[params] = task
        return await asyncio.shield(task)

    def __len__(self) -> int:
        """Open connections held."""
        return sum(
            1
            for t in self._attempts.values()
            if t.done() and not t.cancelled() and t.exception() is None and not t.result().closed
        )

    async def close_except(self, keep: set[SSHParams]) -> int:
        """Close the connections of endpoints not in `keep` (nodes gone from the inventory of
        a pool kept between sweeps); returns how many were dropped."""
        gone = [params for params in self._attempts if params not in keep]
        for params in gone:
            await _close_attempt(self._attempts.pop(params))
        return len(gone)

    async def close(self) -> None:
        """Close every connection; cancel attempts still running (idempotent)."""
        self._closed = True
        attempts, self._attempts = list(self._attempts.values()), {}
        await asyncio.gather(*(_close_attempt(task) for task in attempts))

    async def __aenter__(self) -> SSHPool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def _close_attempt(task: asyncio.Task[SSHConnection]) -> None:
    """Cancel an attempt still running; close the connection of one that succeeded (a failed
    or cancelled attempt holds nothing)."""
    if not task.done():
        task.cancel()
    result = (await asyncio.gather(task, return_exceptions=True))[0]
    if isinstance(result, SSHConnection):
        await result.close()
