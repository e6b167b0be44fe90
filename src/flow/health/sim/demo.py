"""The demo fleet: simulated GPUd nodes, each behind its own SSH server on loopback.

`DemoFleet` starts one `SimNode` per scenario and, in front of each, an asyncssh server with its
own host key that accepts one generated client key and allows port forwarding, then writes a
throw-away inventory (`tasks.yaml`) under the given `FLOW_HOME`. The real checker then sweeps it
through real SSH tunnels. Two extra nodes show SSH-side failures: one whose SSH port is closed,
and one where GPUd was never installed.

The nodes also take `flow ssh` and `flow logs`: each runs the commands sent to it on this
machine, as the user running the demo, in its own directory (see flow.health.sim.demo_node).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncssh

from flow.fleet.inventory import Inventory
from flow.fleet.model import Node, Task
from flow.fs import ensure_private_dir
from flow.health.sim import SCENARIOS, SimNode
from flow.health.sim.demo_node import DemoNodeHome, session_handler
from flow.ssh import SSHOptions

__all__ = ["DEMO_EXTRA_SCENARIOS", "DemoFleet", "DemoNode", "demo_plan"]

#: Failure classes the simulator alone cannot show: they live on the SSH side.
DEMO_EXTRA_SCENARIOS = ("ssh-refused", "gpud-not-installed")

# Realistic variety: (scenario, GPU model, GPUs per node, instance type).
_MODELS = (("H100-80GB", 8, "h100.8xlarge"), ("A100-80GB", 8, "a100.8xlarge"),
           ("H200-141GB", 8, "h200.8xlarge"), ("L4-24GB", 4, "l4.4xlarge"))
_DEMO_USER = "flow"
# An L4 has neither row remapping nor NVLink.
_NEEDS_DATACENTER_GPU = frozenset({"row-remap-pending", "row-remap-failed", "nvlink-errors"})


@dataclass(frozen=True)
class DemoNode:
    scenario: str
    task: Task
    gpu_model: str


def demo_plan(nodes: int) -> list[str]:
    """Scenarios for `nodes` demo nodes: every scenario once, then healthy ones."""
    every = [*SCENARIOS, *DEMO_EXTRA_SCENARIOS]
    if nodes <= len(every):
        return every[:nodes]
    return every + ["healthy"] * (nodes - len(every))


class _Server(asyncssh.SSHServer):
    """Key-only authentication; direct TCP forwarding allowed (GPUd's tunnel).

    Each connection is recorded in `live`, so that stopping the demo can close the sessions
    still open (a `flow ssh` shell, `flow logs --follow`): closing the listener alone leaves them.
    """

    def __init__(self, live: set[asyncssh.SSHServerConnection]) -> None:
        self._live = live
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._live.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._live.discard(self._conn)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return True


class DemoFleet:
    """Start with `async with DemoFleet(home, nodes=19) as fleet:`; `fleet.ssh_options` is hermetic."""

    def __init__(self, home: Path, *, nodes: int | None = None, slow_delay_s: float = 30.0,
                 gpud_version: str = "v0.5.1") -> None:
        self.home = home
        self.plan = demo_plan(nodes if nodes is not None else len(SCENARIOS) + len(DEMO_EXTRA_SCENARIOS))
        self.slow_delay_s = slow_delay_s
        self.gpud_version = gpud_version
        self.nodes: list[DemoNode] = []
        self._sims: list[SimNode] = []
        self._servers: list[Any] = []
        self._connections: set[asyncssh.SSHServerConnection] = set()

    @property
    def ssh_options(self) -> SSHOptions:
        # Hermetic: no ~/.ssh/config, no ~/.ssh/known_hosts; keys recorded on first contact.
        return SSHOptions(host_key_policy="accept-new", known_hosts_file=self.home / "known_hosts",
                          user_known_hosts_files=(), ssh_config_files=(), connect_timeout_s=5.0)

    async def start(self) -> DemoFleet:
        ensure_private_dir(self.home)
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        key_path = self.home / "demo_id_ed25519"
        client_key.write_private_key(str(key_path))
        key_path.chmod(0o600)
        authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
        tasks: list[Task] = []
        try:
            for i, scenario in enumerate(self.plan):
                model, count, instance_type = _MODELS[i % len(_MODELS)]
                if scenario in _NEEDS_DATACENTER_GPU:
                    model, count, instance_type = _MODELS[0]
                sim_scenario = "gpud-down" if scenario == "gpud-not-installed" else scenario
                if scenario == "ssh-refused":
                    sim_scenario = "healthy"
                sim = SimNode(index=i, scenario=sim_scenario, gpu_model=model, gpu_count=count,
                              gpud_version=self.gpud_version, seed=i, slow_delay_s=self.slow_delay_s)
                await sim.start()
                self._sims.append(sim)
                task_id = f"task-demo{i:02d}"
                node_home = DemoNodeHome(self.home / "nodes" / task_id, task_id=task_id, scenario=scenario,
                                         gpud_port=sim.port, gpu_model=model, gpu_count=count,
                                         gpud_version=self.gpud_version).create()
                ssh_port = await self._start_ssh(authorized, node_home, refuse=scenario == "ssh-refused")
                task = Task(
                    id=task_id, name=f"demo-{scenario}",
                    nodes=(Node(host="127.0.0.1", port=ssh_port, user=_DEMO_USER,
                                identity_file=str(key_path)),),
                    instance_type=instance_type, gpud_port=sim.port,
                    labels={"scenario": scenario, "env": "demo"},
                )
                tasks.append(task)
                self.nodes.append(DemoNode(scenario, task, model))
            inventory = Inventory(self.home / "tasks.yaml", tasks)
            inventory.save()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start_ssh(self, authorized: Any, node_home: DemoNodeHome, *, refuse: bool) -> int:
        if refuse:
            # A port that was free a moment ago: nothing listens, SSH is refused.
            probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            port = int(probe.sockets[0].getsockname()[1])
            probe.close()
            await probe.wait_closed()
            return port
        server = await asyncssh.create_server(
            lambda: _Server(self._connections), "127.0.0.1", 0,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            authorized_client_keys=authorized,
            process_factory=session_handler(node_home),
            # Bytes in and out, and no line editing of our own: the command's terminal does that.
            encoding=None, line_editor=False,
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self._connections):
            conn.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        await asyncio.gather(*(sim.stop() for sim in self._sims), return_exceptions=True)
        self._sims.clear()

    @property
    def tasks(self) -> Sequence[Task]:
        return [n.task for n in self.nodes]

    async def __aenter__(self) -> DemoFleet:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
