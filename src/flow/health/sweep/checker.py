"""The fleet sweep: every node through its own SSH tunnel, concurrently, each under a deadline.

```python
checker = Checker(SSHOptions.from_config(config), SweepOptions(timeout_s=15))
result = await checker.sweep(targets, progress=lambda done, total: ...)
```
At most `concurrency` nodes are checked at once; each node gets `timeout_s` for everything
(SSH connect, tunnel, GPUd), so the sweep is bounded even when nodes hang. A node that fails
becomes a snapshot with an `unknown` verdict whose GPUd status names the failure class
(`ssh_dns`, `ssh_refused`, `ssh_timeout`, `ssh_auth`, `ssh_host_key_changed`, `not_installed`,
`not_listening`, `timeout`, `bad_response`, ...): one node's failure never stops the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from flow.config import Config, Thresholds
from flow.errors import SSHError
from flow.fleet.access import gpud_address, node_params
from flow.fleet.model import Task
from flow.health.gpud import GpudClient
from flow.health.scoring import score_snapshot
from flow.health.snapshot import GpudStatus, Snapshot, utcnow
from flow.ssh import SSHConnection, SSHOptions, SSHParams, SSHPool
from flow.ssh.connection import ConnectFactory, Tunnel

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_NODE_TIMEOUT_S",
    "Checker",
    "GpudClients",
    "NodeTarget",
    "SweepOptions",
    "SweepResult",
    "SweepSession",
    "failure_snapshot",
    "targets_for",
]

DEFAULT_CONCURRENCY = 256
DEFAULT_NODE_TIMEOUT_S = 20.0

#: SSHError.kind -> GpudStatus.state
_SSH_STATES = {
    "dns": "ssh_dns",
    "refused": "ssh_refused",
    "timeout": "ssh_timeout",
    "auth": "ssh_auth",
    "host_key_changed": "ssh_host_key_changed",
    "host_key_unknown": "ssh_host_key_unknown",
    "gpud_not_listening": "not_listening",
    "tunnel": "ssh_tunnel",
    "closed": "ssh_error",
    "error": "ssh_error",
}

_GPUD_PRESENT = "command -v gpud >/dev/null 2>&1 || test -x /usr/local/bin/gpud"


@dataclass(frozen=True, kw_only=True)
class NodeTarget:
    """One node to check: who it belongs to, how to reach it, where GPUd listens on it."""

    task_id: str
    task_name: str
    node: str
    ssh: SSHParams
    instance_type: str | None = None
    expected_gpus: int | None = None  # the task's `gpus:`, else its instance type's count
    gpud_host: str = "127.0.0.1"
    gpud_port: int = 15132


def targets_for(tasks: Sequence[Task], config: Config) -> list[NodeTarget]:
    """One target per node of each task, GPUd at FLOW_GPUD_BIND and the task's (or the) GPUd port."""
    targets: list[NodeTarget] = []
    for task in tasks:
        host, port = gpud_address(task, config)
        for node in task.nodes:
            targets.append(NodeTarget(
                task_id=task.id, task_name=task.name, node=node.label, ssh=node_params(node),
                instance_type=task.instance_type, expected_gpus=task.gpu_count, gpud_host=host,
                gpud_port=port,
            ))
    return targets


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = DEFAULT_NODE_TIMEOUT_S
    request_timeout_s: float = 10.0
    events_window_s: float = 3600.0
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True)
class SweepResult:
    snapshots: tuple[Snapshot, ...]
    started_at: datetime
    elapsed_s: float


def _node_key(target: NodeTarget) -> tuple[SSHParams, str, int]:
    return target.ssh, target.gpud_host, target.gpud_port


class GpudClients:
    """GPUd clients kept between sweeps, one per node, each tied to the tunnel it reads through.

    A kept client skips /healthz while GPUd answers and reuses its HTTPS connection (no channel
    open, no TLS handshake per sweep). A node whose tunnel changed (a new SSH connection) gets a
    new client; the old one is closed.
    """

    def __init__(self) -> None:
        self._held: dict[tuple[SSHParams, str, int], tuple[Tunnel, GpudClient]] = {}

    async def client_for(
        self, target: NodeTarget, tunnel: Tunnel, make: Callable[[], GpudClient]
    ) -> GpudClient:
        key = _node_key(target)
        held = self._held.get(key)
        if held is not None and held[0] is tunnel:
            return held[1]
        if held is not None:
            await held[1].aclose()
        client = make()
        self._held[key] = (tunnel, client)
        return client

    async def close_except(self, keep: set[tuple[SSHParams, str, int]]) -> None:
        for key in [k for k in self._held if k not in keep]:
            await self._held.pop(key)[1].aclose()

    async def aclose(self) -> None:
        await self.close_except(set())

    def __len__(self) -> int:
        return len(self._held)


class SweepSession:
    """Repeated sweeps over kept SSH connections and GPUd clients; see `Checker.session()`."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.pool = checker.new_pool()
        self.clients = GpudClients()

    async def sweep(self, targets: Sequence[NodeTarget], *,
                    progress: Callable[[int, int], None] | None = None) -> SweepResult:
        return await self.checker.sweep(targets, progress=progress, pool=self.pool, clients=self.clients)

    async def aclose(self) -> None:
        await self.clients.aclose()
        await self.pool.close()

    async def __aenter__(self) -> SweepSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def failure_snapshot(target: NodeTarget, state: str, error: str, *, thresholds: Thresholds) -> Snapshot:
    """An `unknown` snapshot for a node that could not be read, naming why."""
    snapshot = Snapshot(
        timestamp=utcnow(), task_id=target.task_id, task_name=target.task_name, node=target.node,
        instance_type=target.instance_type, expected_gpus=target.expected_gpus,
        gpud=GpudStatus(reachable=False, state=state, error=error),
    )
    return snapshot.with_verdict(score_snapshot(snapshot, thresholds))


class Checker:
    """Sweeps nodes. Holds no state between sweeps except what `SSHPool` shares within one."""

    def __init__(
        self,
        ssh_options: SSHOptions,
        options: SweepOptions | None = None,
        *,
        connect_factory: ConnectFactory | None = None,
    ) -> None:
        self.ssh_options = ssh_options
        self.options = options or SweepOptions()
        self._connect_factory = connect_factory

    def with_options(self, options: SweepOptions) -> Checker:
        """The same checker (SSH options, connect factory) with other sweep options."""
        return Checker(self.ssh_options, options, connect_factory=self._connect_factory)

    def new_pool(self) -> SSHPool:
        """An SSH pool for `sweep(pool=...)`, to keep connections between sweeps."""
        return SSHPool(self.ssh_options, connect_factory=self._connect_factory)

    def session(self) -> SweepSession:
        """Sweeps that keep each node's SSH connection, tunnel and GPUd HTTPS connection from
        one to the next (`--watch`, `serve`): `async with checker.session() as s: await s.sweep(t)`."""
        return SweepSession(self)

    @property
    def in_process_only(self) -> bool:
        """True with a custom connect factory (tests, the demo): it cannot go to another process."""
        return self._connect_factory is not None

    async def sweep(
        self,
        targets: Sequence[NodeTarget],
        *,
        progress: Callable[[int, int], None] | None = None,
        on_snapshot: Callable[[int, Snapshot], None] | None = None,
        pool: SSHPool | None = None,
        clients: GpudClients | None = None,
    ) -> SweepResult:
        """Check every target; results keep the order of `targets`.

        `progress(done, total)` is called as nodes finish; `on_snapshot(index, snapshot)` gets
        each node's snapshot as soon as it is ready (`index` into `targets`). With `pool`, the
        SSH connections (and their tunnels) are the pool's and stay open after the sweep, so
        the next sweep with the same pool logs in to no node again (`--watch`, `serve`);
        without, the sweep opens its own and closes them at the end. With `clients` too, each
        node's GPUd HTTPS connection is kept as well (see `session()`).
        """
        started_at, start = utcnow(), time.monotonic()
        semaphore = asyncio.Semaphore(max(1, self.options.concurrency))
        done = 0
        total = len(targets)
        if progress:
            progress(0, total)

        own_pool = pool is None
        # Not `pool or ...`: an SSHPool has a length, and an empty one is falsy.
        shared = self.new_pool() if pool is None else pool
        try:

            async def one(index: int, target: NodeTarget) -> Snapshot:
                nonlocal done
                async with semaphore:
                    snapshot = await self.check(target, shared, kept_before=start, clients=clients)
                done += 1
                if on_snapshot:
                    on_snapshot(index, snapshot)
                if progress:
                    progress(done, total)
                return snapshot

            snapshots = await asyncio.gather(*(one(i, t) for i, t in enumerate(targets)))
        finally:
            if own_pool:
                await shared.close()
            else:  # a kept pool keeps only this sweep's nodes (the inventory may have changed)
                await shared.close_except({t.ssh for t in targets})
            if clients is not None:
                await clients.close_except({_node_key(t) for t in targets})
        return SweepResult(tuple(snapshots), started_at, time.monotonic() - start)

    async def check(self, target: NodeTarget, pool: SSHPool, *, kept_before: float | None = None,
                    clients: GpudClients | None = None) -> Snapshot:
        """One node, within `timeout_s`; never raises for a node problem.

        A connection opened before `kept_before` (monotonic time: kept from an earlier sweep)
        that turns out to be dead is replaced once, within the same deadline: a node that
        rebooted between two sweeps is read, not reported unreachable.
        """
        phase = ["ssh"]
        deadline = time.monotonic() + self.options.timeout_s

        async def attempt() -> Snapshot:
            snapshot, conn = await self._check(target, pool, phase, deadline, clients)
            if (conn is not None and conn.closed and not snapshot.gpud.reachable
                    and kept_before is not None and conn.opened_at < kept_before):
                phase[0] = "ssh"
                snapshot, _ = await self._check(target, pool, phase, deadline, clients)
            return snapshot

        try:
            return await asyncio.wait_for(attempt(), self.options.timeout_s)
        except asyncio.TimeoutError:
            t = self.options.timeout_s
            if phase[0] == "ssh":
                return self._failed(target, "ssh_timeout",
                                    f"SSH to {target.ssh.label} did not complete within {t:g} s")
            return self._failed(target, "timeout", f"GPUd did not answer within the {t:g} s deadline")

    async def _check(
        self, target: NodeTarget, pool: SSHPool, phase: list[str], deadline: float,
        clients: GpudClients | None = None,
    ) -> tuple[Snapshot, SSHConnection | None]:
        """The node's snapshot, and the connection it was read over (None if none opened)."""
        conn: SSHConnection | None = None
        try:
            conn = await pool.connect(target.ssh)
            phase[0] = "tunnel"
            tunnel = await conn.tunnel(target.gpud_host, target.gpud_port)
        except SSHError as exc:
            if exc.kind == "gpud_not_listening" and conn is not None:
                return await self._not_listening(target, conn, exc), conn
            return self._failed(target, _SSH_STATES.get(exc.kind, "ssh_error"), exc.message), conn
        phase[0] = "gpud"
        # Leave the client a little slack so it reports its own timeout before ours fires.
        remaining = max(0.5, deadline - time.monotonic() - 0.25)
        if clients is not None:
            client = await clients.client_for(target, tunnel, lambda: self._gpud_client(tunnel, remaining))
            snapshot = await self._read(client, target)
        else:
            async with self._gpud_client(tunnel, remaining) as client:
                snapshot = await self._read(client, target)
        return snapshot.with_verdict(score_snapshot(snapshot, self.options.thresholds)), conn

    @staticmethod
    async def _read(client: GpudClient, target: NodeTarget) -> Snapshot:
        snapshot = await client.read(task_id=target.task_id, task_name=target.task_name,
                                     node=target.node, instance_type=target.instance_type)
        return replace(snapshot, expected_gpus=target.expected_gpus)

    def _gpud_client(self, tunnel: Tunnel, deadline_s: float) -> GpudClient:
        return GpudClient(
            tunnel.url("https"),
            timeout_s=min(self.options.request_timeout_s, deadline_s),
            deadline_s=deadline_s,
            events_window_s=self.options.events_window_s,
        )

    async def _not_listening(self, target: NodeTarget, conn: SSHConnection, exc: SSHError) -> Snapshot:
        # Only on failure: one more round trip tells "not installed" from "installed, not running".
        where = f"{target.gpud_host}:{target.gpud_port}"
        try:
            result = await asyncio.wait_for(conn.run(_GPUD_PRESENT), 5.0)
            installed: bool | None = result.exit_status == 0
        except (SSHError, asyncio.TimeoutError):
            installed = None
        if installed is False:
            return self._failed(target, "not_installed", "GPUd is not installed on the node (no gpud binary)")
        prefix = "GPUd is installed but " if installed else ""
        return self._failed(target, "not_listening", f"{prefix}nothing listens on {where} on the node")

    def _failed(self, target: NodeTarget, state: str, error: str) -> Snapshot:
        return failure_snapshot(target, state, error, thresholds=self.options.thresholds)

