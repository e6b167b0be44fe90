"""SSH connections kept between sweeps (`Checker.sweep(pool=...)`, used by --watch and serve):
one login per node for many sweeps, a node whose sshd restarted is read again at once, and a
node gone from the inventory has its connection closed. Real sshd, simulated GPUd."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from collector.daemon import Gpud
from flow.health.sim import FleetThread, start_fleet_in_thread
from flow.health.snapshot import HealthStatus
from flow.health.sweep.checker import Checker, NodeTarget, SweepOptions, SweepResult
from flow.ssh import SSHOptions, SSHParams
from sshd_support import SshdFactory, SshdServer

pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[FleetThread]:
    fleet = start_fleet_in_thread(3, gpu_count=2)
    try:
        yield fleet
    finally:
        fleet.stop()


def _target(i: int, server: SshdServer, factory: SshdFactory, gpud_port: int) -> NodeTarget:
    return NodeTarget(task_id=f"task-{i}", task_name=f"node-{i}", node=f"node-{i}",
                      ssh=SSHParams(host="127.0.0.1", port=server.port, user=factory.user,
                                    key_paths=(factory.client_key.path,), use_agent=False),
                      gpud_port=gpud_port)


def _checker(flow_home: Path) -> Checker:
    ssh = SSHOptions(host_key_policy="accept-new", known_hosts_file=flow_home / "known_hosts",
                     user_known_hosts_files=(), ssh_config_files=(), connect_timeout_s=5)
    return Checker(ssh, SweepOptions(timeout_s=10))


def _logins(server: SshdServer) -> int:
    return server.log().count("Accepted publickey")


def _kill_connections(port: int) -> None:
    """Kill the sshd processes serving connections on `port` (they left the listener's group)."""
    pids = {c.pid for c in psutil.net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED and c.pid}
    assert pids, "no connection to kill"
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def test_sweeps_with_one_pool_log_in_once_and_follow_restarts_and_removals(
    sim: FleetThread, sshd_factory: SshdFactory, flow_home: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    servers = sshd_factory.start_many(3)
    targets = [_target(i, s, sshd_factory, n.port)
               for i, (s, n) in enumerate(zip(servers, sim.nodes, strict=True))]
    checker = _checker(flow_home)

    async def scenario() -> list[SweepResult]:
        results = []
        async with checker.new_pool() as pool:
            for _ in range(3):
                results.append(await checker.sweep(targets, pool=pool))
            assert len(pool) == 3
            # Node 1's sshd service restarts (an upgrade): same port, same host key. As on any
            # node, the running connection outlives its listener and stays in use.
            restarted = servers[1]
            restarted.stop()
            servers[1] = sshd_factory.start(port=restarted.port, host_key=restarted.host_key)
            results.append(await checker.sweep(targets, pool=pool))
            assert _logins(servers[1]) == 0
            # Then the node "reboots": the connection's sshd dies too. The next sweep logs in anew.
            _kill_connections(servers[1].port)
            results.append(await checker.sweep(targets, pool=pool))
            # Node 2 leaves the inventory: its connection is closed after the next sweep.
            results.append(await checker.sweep(targets[:2], pool=pool))
            assert len(pool) == 2
        return results

    results = asyncio.run(scenario())
    for result in results:
        assert all(s.status == HealthStatus.HEALTHY for s in result.snapshots), [
            (s.node, s.gpud.state, s.gpud.error) for s in result.snapshots]
    assert [_logins(servers[0]), _logins(servers[2])] == [1, 1]  # six sweeps, one login each
    assert _logins(servers[1]) == 1  # the new sshd: one login after its restart


@pytest.fixture
def one_node(sim: FleetThread, sshd_factory: SshdFactory, flow_home: Path,
             monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Checker, NodeTarget, SshdServer]:
    monkeypatch.setenv("HOME", str(tmp_path))
    server = sshd_factory.start()
    return _checker(flow_home), _target(0, server, sshd_factory, sim.nodes[0].port), server


def test_a_sweep_without_a_pool_closes_what_it_opened(
        one_node: tuple[Checker, NodeTarget, SshdServer]) -> None:
    checker, target, server = one_node
    for _ in range(2):
        result = asyncio.run(checker.sweep([target]))
        assert result.snapshots[0].status == HealthStatus.HEALTHY
    assert _logins(server) == 2  # a one-shot sweep logs in and out each time
    assert "Disconnected from user" in server.log() or "Received disconnect" in server.log()


def test_an_empty_pool_is_still_the_callers_pool(one_node: tuple[Checker, NodeTarget, SshdServer]) -> None:
    # An SSHPool has a length; an empty one must not be mistaken for "no pool given".
    checker, target, _ = one_node

    async def scenario() -> int:
        async with checker.new_pool() as pool:
            assert len(pool) == 0 and not pool
            await checker.sweep([target], pool=pool)
            return len(pool)

    assert asyncio.run(scenario()) == 1  # the connection went into (and stayed in) the caller's pool


def test_a_session_keeps_each_nodes_gpud_connection_and_recovers_when_gpud_restarts(
    sshd_factory: SshdFactory, flow_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    gpud = Gpud(gpu_count=2)  # a simulated GPUd that can go down and come back on its port
    try:
        server = sshd_factory.start()
        target = _target(0, server, sshd_factory, gpud.port)
        checker = _checker(flow_home)

        async def scenario() -> list[tuple[str, int, int]]:
            seen = []
            async with checker.session() as session:
                for step in range(6):
                    if step == 3:
                        gpud.down()
                    if step == 4:
                        gpud.up()
                    result = await session.sweep([target])
                    node = gpud.node
                    seen.append((result.snapshots[0].status.value,
                                 node.requests["/healthz"] if node else -1, len(session.clients)))
                assert len(session.clients) == 1
            assert len(session.clients) == 0  # closed with the session
            return seen

        seen = asyncio.run(scenario())
    finally:
        gpud.close()
    statuses = [status for status, _, _ in seen]
    assert statuses == ["healthy", "healthy", "healthy", "unknown", "healthy", "healthy"]
    # While GPUd answers, a kept client asks /healthz once, not at every sweep.
    assert [healthz for _, healthz, _ in seen[:3]] == [1, 1, 1]
    assert _logins(server) == 1  # GPUd's restart did not cost a new SSH login
