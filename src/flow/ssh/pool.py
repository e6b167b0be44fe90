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

Jump hosts (ssh_config `ProxyJump`, see `flow.ssh.jump`): the pool opens one connection per hop
(keyed by the chain up to it: host, port, user, keys, agent) and every node behind it is a
channel through that connection, so a sweep of N nodes is one login on the bastion, not N.
The hop is opened once even when every node asks at the same moment, under the nodes' host-key
policy and known-hosts store (and tried again, briefly, if it drops the connection before login:
`HOP_ATTEMPTS`). A failed hop is not retried for `HOP_RETRY_AFTER_S` (nor again
within a sweep of a kept pool): every node behind it gets the hop's failure, naming the hop,
without hammering it. A hop found closed is replaced at the next `connect()` (the nodes through
it closed with it and are replaced too); it is closed once no node kept in the pool uses it.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

from flow.errors import SSHError
from flow.ssh.connection import ConnectFactory, SSHConnection, connect_hop, connect_via
from flow.ssh.errors import via_jump_error
from flow.ssh.jump import jump_chain
from flow.ssh.known_hosts import KnownHostsStore
from flow.ssh.params import SSHOptions, SSHParams

__all__ = ["HOP_RETRY_AFTER_S", "SSHPool"]

#: Seconds a failed jump host attempt is reused for the nodes behind it before a new try.
HOP_RETRY_AFTER_S = 10.0

_Chain = tuple[SSHParams, ...]


class SSHPool:
    """Shares SSH connections (and one known-hosts store) among the tasks of a sweep."""

    def __init__(self, options: SSHOptions, *, connect_factory: ConnectFactory | None = None) -> None:
        self.options = options
        self._factory = connect_factory
        self._known_hosts = KnownHostsStore(options.user_known_hosts_files, options.known_hosts_file)
        self._attempts: dict[SSHParams, asyncio.Task[SSHConnection]] = {}
        #: Jump host connections, keyed by the chain that ends at the hop.
        self._hops: dict[_Chain, asyncio.Task[SSHConnection]] = {}
        self._hop_failed_at: dict[_Chain, float] = {}
        #: The hops each node's connection went through (to close hops no node uses).
        self._chains: dict[SSHParams, _Chain] = {}
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
            task = asyncio.ensure_future(self._open(params))
            self._attempts[params] = task
        return await asyncio.shield(task)

    async def _open(self, params: SSHParams) -> SSHConnection:
        chain = jump_chain(params, self.options)
        self._chains[params] = chain
        jump: SSHConnection | None = None
        for depth in range(1, len(chain) + 1):
            try:
                jump = await asyncio.shield(self._hop(chain[:depth], jump))
            except SSHError as exc:
                raise via_jump_error(exc, params, chain[depth - 1]) from exc
        return await connect_via(
            params, self.options, jump=jump, connect_factory=self._factory, known_hosts=self._known_hosts
        )

    def _hop(self, chain: _Chain, via: SSHConnection | None) -> asyncio.Task[SSHConnection]:
        """The shared attempt for the hop at the end of `chain`, reached through `via`."""
        task = self._hops.get(chain)
        if task is not None and task.done():
            if task.cancelled():
                task = None
            elif task.exception() is not None:
                failed_at = self._hop_failed_at.get(chain)
                if failed_at is None or time.monotonic() - failed_at >= HOP_RETRY_AFTER_S:
                    task = None
            elif task.result().closed:
                task = None
        if task is None:
            self._hop_failed_at.pop(chain, None)
            task = asyncio.ensure_future(connect_hop(
                chain[-1], self.options, jump=via, connect_factory=self._factory,
                known_hosts=self._known_hosts,
            ))

            def failed(done: asyncio.Task[SSHConnection], chain: _Chain = chain) -> None:
                if not done.cancelled() and done.exception() is not None:
                    self._hop_failed_at[chain] = time.monotonic()

            task.add_done_callback(failed)
            self._hops[chain] = task
        return task

    @property
    def jumps(self) -> int:
        """Open jump host connections held (each carries every node behind it)."""
        return sum(1 for t in self._hops.values() if _open_connection(t) is not None)

    def __len__(self) -> int:
        """Open connections held."""
        return sum(1 for t in self._attempts.values() if _open_connection(t) is not None)

    async def close_except(self, keep: set[SSHParams]) -> int:
        """Close the connections of endpoints not in `keep` (nodes gone from the inventory of
        a pool kept between sweeps), and the jump hosts no kept node goes through; returns how
        many node connections were dropped. A hop that failed is tried again after this (the
        next sweep), whatever `HOP_RETRY_AFTER_S` says."""
        gone = [params for params in self._attempts if params not in keep]
        for params in gone:
            self._chains.pop(params, None)
            await _close_attempt(self._attempts.pop(params))
        used = {chain[:depth] for chain in self._chains.values() for depth in range(1, len(chain) + 1)}
        # Innermost hops first: each one is a channel through the hop before it.
        for chain in sorted(self._hops, key=len, reverse=True):
            if chain not in used:
                await _close_attempt(self._hops.pop(chain))
        self._hop_failed_at.clear()
        return len(gone)

    async def close(self) -> None:
        """Close every connection; cancel attempts still running (idempotent)."""
        self._closed = True
        attempts, self._attempts = list(self._attempts.values()), {}
        await asyncio.gather(*(_close_attempt(task) for task in attempts))
        hops, self._hops = self._hops, {}
        self._chains.clear()
        for chain in sorted(hops, key=len, reverse=True):
            await _close_attempt(hops[chain])

    async def __aenter__(self) -> SSHPool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _open_connection(task: asyncio.Task[SSHConnection]) -> SSHConnection | None:
    if task.done() and not task.cancelled() and task.exception() is None and not task.result().closed:
        return task.result()
    return None


async def _close_attempt(task: asyncio.Task[SSHConnection]) -> None:
    """Cancel an attempt still running; close the connection of one that succeeded (a failed
    or cancelled attempt holds nothing)."""
    if not task.done():
        task.cancel()
    result = (await asyncio.gather(task, return_exceptions=True))[0]
    if isinstance(result, SSHConnection):
        await result.close()
