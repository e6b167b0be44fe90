"""Nodes behind a jump host (ssh_config ProxyJump), issue 12: one connection to the jump host
for the whole sweep, the nodes as channels through it; the host-key policy and the failure
classes apply to the hop and name it. Real OpenSSH sshd for the jump host (left at OpenSSH's
default `MaxStartups 10:30:100`) and for the nodes, simulated GPUd behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import pytest

from flow.errors import SSHError
from flow.health.sim import FleetThread, start_fleet_in_thread
from flow.health.snapshot import HealthStatus
from flow.health.sweep.checker import Checker, NodeTarget, SweepOptions, SweepResult
from flow.ssh import SSHConnection, SSHOptions, SSHParams, SSHPool, connect
from flow.ssh.jump import MAX_HOPS, jump_chain, parse_proxy_jump
from sshd_support import KeyPair, SshdFactory, SshdServer, free_port

NODES = 60
NODE_SERVERS = 6  # ten node aliases per real sshd: the jump host is what is under test


# --- ProxyJump parsing and resolution (no servers) ---------------------------------------


def test_proxy_jump_values_parse_as_openssh_writes_them() -> None:
    assert parse_proxy_jump("bastion") == ((None, "bastion", None),)
    assert parse_proxy_jump("ops@b1:2222,b2") == (("ops", "b1", 2222), (None, "b2", None))
    assert parse_proxy_jump("ssh://ops@b1:2200") == (("ops", "b1", 2200),)
    assert parse_proxy_jump("[fe80::1]:2222") == ((None, "fe80::1", 2222),)
    assert parse_proxy_jump("fe80::1") == ((None, "fe80::1", None),)
    assert parse_proxy_jump("none") == ()


@pytest.mark.parametrize("value", ["b1:port", "b1:0", "b1:70000", "@b1", "b1,,b2", "[fe80::1", "[::1]x"])
def test_a_malformed_proxy_jump_names_the_hop_and_what_is_allowed(value: str) -> None:
    with pytest.raises(ValueError, match="jump host") as info:
        parse_proxy_jump(value)
    assert "allowed" in str(info.value)


def _options(tmp_path: Path, config: str | None = None, **changes: object) -> SSHOptions:
    files: tuple[Path, ...] = ()
    if config is not None:
        (tmp_path / "ssh_config").write_text(config)
        files = (tmp_path / "ssh_config",)
    options = SSHOptions(host_key_policy="accept-new", known_hosts_file=tmp_path / "flow_known_hosts",
                         user_known_hosts_files=(), ssh_config_files=files, connect_timeout_s=5.0)
    return dataclasses.replace(options, **changes)  # type: ignore[arg-type]


def test_the_chain_comes_from_ssh_config_outermost_first(tmp_path: Path) -> None:
    key = tmp_path / "node_key"
    options = _options(tmp_path, (
        "Host outer\n  HostName 10.0.0.1\n"
        "Host bastion\n  ProxyJump ops@outer:2200\n  IdentityFile ~/.ssh/bastion\n"
        "Host gpu-*\n  ProxyJump bastion,inner:2222\n"
        "Host direct-*\n  ProxyJump none\n"
    ))
    node = SSHParams(host="gpu-1", user="ubuntu", key_paths=(key,), use_agent=False)
    chain = jump_chain(node, options)
    assert [h.label for h in chain] == ["ops@outer:2200", "bastion", "inner:2222"]
    # A hop whose ssh_config names its own key gets that key (asyncssh reads it); the others
    # are offered the node's key.
    assert [h.key_paths for h in chain] == [(key,), (), (key,)]
    assert all(h.use_agent is False for h in chain)
    assert jump_chain(SSHParams(host="direct-1"), options) == ()
    assert jump_chain(SSHParams(host="other"), options) == ()
    assert jump_chain(node, _options(tmp_path)) == ()  # no ssh_config at all


def test_a_looping_or_endless_chain_is_an_error_naming_the_node(tmp_path: Path) -> None:
    options = _options(tmp_path, "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\nHost gpu\n  ProxyJump a\n")
    with pytest.raises(SSHError, match="loops") as info:
        jump_chain(SSHParams(host="gpu"), options)
    assert info.value.kind == "error" and info.value.message.startswith("gpu:")
    hops = "\n".join(f"Host h{i}\n  ProxyJump h{i + 1}" for i in range(MAX_HOPS + 2))
    with pytest.raises(SSHError, match=f"longer than {MAX_HOPS} hops"):
        jump_chain(SSHParams(host="h0"), _options(tmp_path, hops + "\n"))
    with pytest.raises(SSHError, match="ProxyJump 'b:x'") as bad:
        jump_chain(SSHParams(host="gpu"), _options(tmp_path, "Host gpu\n  ProxyJump b:x\n"))
    assert bad.value.kind == "error"


# --- a fleet behind a real OpenSSH jump host -------------------------------------------------


@pytest.fixture
def sim() -> Iterator[FleetThread]:
    fleet = start_fleet_in_thread(NODE_SERVERS, gpu_count=1)
    try:
        yield fleet
    finally:
        fleet.stop()


@dataclasses.dataclass
class JumpFleet:
    bastion: SshdServer
    servers: list[SshdServer]
    targets: list[NodeTarget]
    options: SSHOptions
    known_hosts: Path

    def checker(self, **changes: object) -> Checker:
        return Checker(dataclasses.replace(self.options, **changes),  # type: ignore[arg-type]
                       SweepOptions(timeout_s=30, concurrency=256))


def _fleet(factory: SshdFactory, sim: FleetThread, tmp_path: Path, *, nodes: int = NODES,
           bastion_port: int | None = None) -> JumpFleet:
    bastion = factory.start(default_limits=True)  # OpenSSH's MaxStartups 10:30:100
    assert "MaxStartups" not in (bastion.directory / "sshd_config").read_text()
    servers = factory.start_many(NODE_SERVERS)
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host bastion\n  HostName 127.0.0.1\n  Port {bastion_port or bastion.port}\n  User {factory.user}\n"
        "Host node-*\n  HostName 127.0.0.1\n  ProxyJump bastion\n"
    )
    targets = [
        NodeTarget(task_id=f"task-{i:02d}", task_name=f"node-{i:02d}", node=f"node-{i:02d}",
                   ssh=SSHParams(host=f"node-{i:02d}", port=servers[i % NODE_SERVERS].port,
                                 user=factory.user, key_paths=(factory.client_key.path,), use_agent=False),
                   gpud_port=sim.nodes[i % NODE_SERVERS].port)
        for i in range(nodes)
    ]
    known_hosts = tmp_path / "flow_known_hosts"
    options = SSHOptions(host_key_policy="accept-new", known_hosts_file=known_hosts,
                         user_known_hosts_files=(), ssh_config_files=(config,), connect_timeout_s=10)
    return JumpFleet(bastion, servers, targets, options, known_hosts)


@pytest.fixture
def jump_fleet(sshd_factory: SshdFactory, sim: FleetThread, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> JumpFleet:
    # No ~/.ssh of the machine running the tests (asyncssh would read its config and keys).
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return _fleet(sshd_factory, sim, tmp_path)


def _logins(server: SshdServer) -> int:
    return server.log().count("Accepted publickey")


def _connections(server: SshdServer) -> int:
    return server.log().count("Connection from ")


def _states(result: SweepResult) -> set[str | None]:
    return {s.gpud.state for s in result.snapshots}


@pytest.mark.slow
def test_a_sweep_of_sixty_nodes_logs_in_to_the_jump_host_once_and_learns_its_key(
        jump_fleet: JumpFleet) -> None:
    fleet = jump_fleet
    assert not fleet.known_hosts.exists()  # the jump host's key is not known yet
    probes = _connections(fleet.bastion)  # the fixture's readiness check
    result = asyncio.run(fleet.checker().sweep(fleet.targets))
    assert [s.status for s in result.snapshots] == [HealthStatus.HEALTHY] * NODES, sorted(
        {(s.gpud.state, s.gpud.error) for s in result.snapshots}, key=str)
    assert _logins(fleet.bastion) == 1
    assert _connections(fleet.bastion) - probes == 1
    # accept-new learned the hop's key (a first contact, not a "changed" key) ...
    recorded = fleet.known_hosts.read_text()
    assert f"[127.0.0.1]:{fleet.bastion.port} {fleet.bastion.host_key.public}" in recorded
    # ... and trusts it from then on: a second sweep is one more login, nothing refused.
    again = asyncio.run(fleet.checker().sweep(fleet.targets[:5]))
    assert _states(again) == {"ok"}
    assert _logins(fleet.bastion) == 2
    assert recorded == fleet.known_hosts.read_text()


@pytest.mark.slow
def test_an_unknown_jump_host_key_under_strict_is_refused_for_every_node_naming_the_hop(
        jump_fleet: JumpFleet) -> None:
    fleet = jump_fleet
    probes = _connections(fleet.bastion)
    result = asyncio.run(fleet.checker(host_key_policy="strict").sweep(fleet.targets[:20]))
    assert _states(result) == {"ssh_host_key_unknown"}
    for snapshot in result.snapshots:
        error = snapshot.gpud.error or ""
        assert snapshot.status == HealthStatus.UNKNOWN
        assert error.startswith(f"{fleet.bastion.user}@{snapshot.node}:")
        assert f"via jump host bastion: host key of [127.0.0.1]:{fleet.bastion.port}" in error
    assert _connections(fleet.bastion) - probes == 1  # one attempt for all twenty nodes
    assert not fleet.known_hosts.exists()


@pytest.mark.slow
def test_a_changed_jump_host_key_makes_every_node_unknown_naming_the_hop(
        jump_fleet: JumpFleet, tmp_path: Path) -> None:
    fleet = jump_fleet
    impostor = KeyPair.generate(tmp_path / "old_bastion_key", "old")
    fleet.known_hosts.write_text(f"[127.0.0.1]:{fleet.bastion.port} {impostor.public}\n")
    probes = _connections(fleet.bastion)
    result = asyncio.run(fleet.checker().sweep(fleet.targets[:20]))
    assert _states(result) == {"ssh_host_key_changed"}
    for snapshot in result.snapshots:
        error = snapshot.gpud.error or ""
        assert snapshot.status == HealthStatus.UNKNOWN
        assert error.startswith(f"{fleet.bastion.user}@{snapshot.node}:")
        assert "via jump host bastion: " in error
        assert f"[127.0.0.1]:{fleet.bastion.port}" in error and "HAS CHANGED" in error
    assert _logins(fleet.bastion) == 0
    assert _connections(fleet.bastion) - probes == 1  # not twenty attempts at the jump host
    assert fleet.known_hosts.read_text().count("\n") == 1  # the recorded key is left alone


@pytest.mark.slow
def test_a_jump_host_that_is_down_fails_every_node_at_once_naming_the_hop(
        sshd_factory: SshdFactory, sim: FleetThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    down = free_port()  # nothing listens there
    fleet = _fleet(sshd_factory, sim, tmp_path, nodes=20, bastion_port=down)
    start = time.monotonic()
    result = asyncio.run(fleet.checker().sweep(fleet.targets))
    assert time.monotonic() - start < 25  # generous: it did not wait for each node's deadline
    assert _states(result) == {"ssh_refused"}
    for snapshot in result.snapshots:
        assert "via jump host bastion: connection refused" in (snapshot.gpud.error or "")


@pytest.mark.slow
def test_a_node_the_jump_host_cannot_reach_is_refused_naming_both(
        jump_fleet: JumpFleet) -> None:
    fleet = jump_fleet
    closed_port = dataclasses.replace(fleet.targets[0].ssh, port=free_port())
    gone = dataclasses.replace(fleet.targets[0], ssh=closed_port)
    result = asyncio.run(fleet.checker().sweep([gone, fleet.targets[1]]))
    lost, fine = result.snapshots
    assert fine.status == HealthStatus.HEALTHY
    assert lost.gpud.state == "ssh_refused"
    assert "jump host" in (lost.gpud.error or "") and "bastion" in (lost.gpud.error or "")


def _kill_connections(port: int) -> None:
    """Kill the sshd processes serving established connections on `port` (not the listener)."""
    pids = {c.pid for c in psutil.net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED and c.pid}
    assert pids, "no connection to kill"
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


@pytest.mark.slow
def test_a_kept_pool_keeps_the_jump_connection_replaces_it_when_it_dies_and_drops_it_when_unused(
        jump_fleet: JumpFleet) -> None:
    fleet = jump_fleet
    targets = fleet.targets[:12]
    checker = fleet.checker()

    async def scenario() -> tuple[list[SweepResult], list[int]]:
        results, jumps = [], []
        async with checker.session() as session:
            for _ in range(3):
                results.append(await session.sweep(targets))
            assert _logins(fleet.bastion) == 1  # three sweeps, one jump login
            # The jump host's connection dies (its sshd child killed, as by a bastion reboot):
            # the next sweep opens a new one and reads every node again.
            nodes = [await session.pool.connect(t.ssh) for t in targets]
            hop = nodes[0].jump
            assert hop is not None and all(n.jump is hop for n in nodes)
            _kill_connections(fleet.bastion.port)
            for _ in range(200):  # bounded: the reset reaches us at once on loopback
                if hop.closed and all(n.closed for n in nodes):
                    break
                await asyncio.sleep(0.05)
            assert hop.closed and all(n.closed for n in nodes)  # the nodes' channels went with it
            results.append(await session.sweep(targets))
            jumps.append(session.pool.jumps)
            # The nodes behind it leave the inventory: the jump connection is closed too.
            results.append(await session.sweep([]))
            jumps.append(session.pool.jumps)
        return results, jumps

    results, jumps = asyncio.run(scenario())
    for result in results:
        assert all(s.status == HealthStatus.HEALTHY for s in result.snapshots), sorted(
            {(s.gpud.state, s.gpud.error) for s in result.snapshots}, key=str)
    assert _logins(fleet.bastion) == 2
    assert jumps == [1, 0]


@pytest.mark.slow
def test_connect_alone_goes_through_the_jump_host_and_closes_it(jump_fleet: JumpFleet) -> None:
    fleet = jump_fleet
    node = fleet.targets[0].ssh

    async def go() -> tuple[str, bool, bool]:
        async with await connect(node, fleet.options) as conn:
            assert conn.jump is not None and conn.jump.params.host == "bastion"
            hop = conn.jump
            out = (await conn.run("echo through")).stdout
        return out, conn.closed, hop.closed

    assert asyncio.run(go()) == ("through\n", True, True)
    assert _logins(fleet.bastion) == 1


@pytest.mark.slow
def test_many_concurrent_pool_connects_share_one_jump_attempt(jump_fleet: JumpFleet) -> None:
    fleet = jump_fleet
    nodes: Sequence[SSHParams] = [t.ssh for t in fleet.targets[:30]]

    async def go() -> int:
        async with SSHPool(fleet.options) as pool:
            conns = await asyncio.gather(*(pool.connect(n) for n in nodes))
            assert {id(c.jump) for c in conns} == {id(conns[0].jump)}
            return pool.jumps

    assert asyncio.run(go()) == 1
    assert _logins(fleet.bastion) == 1


@pytest.mark.slow
def test_a_failed_jump_host_is_not_retried_within_a_sweep_but_is_at_the_next(jump_fleet: JumpFleet,
                                                                              tmp_path: Path) -> None:
    fleet = jump_fleet
    impostor = KeyPair.generate(tmp_path / "old_bastion_key", "old")
    fleet.known_hosts.write_text(f"[127.0.0.1]:{fleet.bastion.port} {impostor.public}\n")
    # One node at a time: each asks for the hop after the previous one saw it fail.
    checker = Checker(fleet.options, SweepOptions(timeout_s=30, concurrency=1))
    probes = _connections(fleet.bastion)

    async def scenario() -> list[SweepResult]:
        async with checker.session() as session:
            failed = await session.sweep(fleet.targets[:10])
            fleet.known_hosts.write_text("")  # the operator removed the stale key
            return [failed, await session.sweep(fleet.targets[:10])]

    failed, fixed = asyncio.run(scenario())
    assert _states(failed) == {"ssh_host_key_changed"}
    assert _states(fixed) == {"ok"}  # the next sweep tried again, without waiting out the hold
    assert _connections(fleet.bastion) - probes == 2  # one per sweep, not one per node
    assert _logins(fleet.bastion) == 1


@pytest.mark.slow
def test_a_chain_of_two_jump_hosts_is_one_login_on_each(
        sshd_factory: SshdFactory, sim: FleetThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    fleet = _fleet(sshd_factory, sim, tmp_path, nodes=12)
    inner = sshd_factory.start(default_limits=True)
    config = fleet.options.ssh_config_files[0]
    # The inner bastion is reached through the outer one: `ProxyJump bastion,inner`.
    config.write_text(config.read_text().replace("ProxyJump bastion", "ProxyJump bastion,inner") +
                      f"Host inner\n  HostName 127.0.0.1\n  Port {inner.port}\n")
    result = asyncio.run(fleet.checker().sweep(fleet.targets))
    assert _states(result) == {"ok"}, sorted({s.gpud.error for s in result.snapshots}, key=str)
    assert [_logins(fleet.bastion), _logins(inner)] == [1, 1]
    # Both hops' keys were learned under accept-new.
    recorded = fleet.known_hosts.read_text()
    assert inner.host_key.public in recorded and fleet.bastion.host_key.public in recorded


@pytest.mark.slow
def test_a_jump_host_that_drops_the_login_past_max_startups_is_tried_again(
        sshd_factory: SshdFactory, sim: FleetThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Several processes (sharded sweep workers, other users) logging in to the bastion at once
    # meet MaxStartups. Made deterministic here: the bastion allows one login in progress and a
    # silent client holds that slot until flow's first attempt has been dropped.
    monkeypatch.setenv("HOME", str(tmp_path))
    fleet = _fleet(sshd_factory, sim, tmp_path, nodes=3)
    fleet.bastion.stop()
    bastion = sshd_factory.start(port=fleet.bastion.port, host_key=fleet.bastion.host_key,
                                 extra_config=["MaxStartups 1"], default_limits=True)

    def hold_the_slot() -> socket.socket:
        # Until the readiness probe's connection is gone, the holder itself may be dropped.
        for _ in range(100):
            holder = socket.create_connection((bastion.host, bastion.port))
            holder.settimeout(5)
            if holder.recv(64).startswith(b"SSH-"):
                return holder
            holder.close()
            time.sleep(0.05)
        raise AssertionError("could not hold the bastion's one login slot")

    async def scenario() -> tuple[list[SSHConnection], int]:
        holder = hold_the_slot()
        dropped_before = bastion.log().count("past MaxStartups")
        try:
            async with SSHPool(fleet.options) as pool:
                attempt = asyncio.gather(*(pool.connect(t.ssh) for t in fleet.targets))
                for _ in range(500):  # bounded wait for sshd to drop flow's first try
                    if bastion.log().count("past MaxStartups") > dropped_before:
                        break
                    await asyncio.sleep(0.01)
                holder.close()
                conns = await attempt
                assert all(not c.closed for c in conns)
                return list(conns), bastion.log().count("past MaxStartups") - dropped_before
        finally:
            holder.close()

    conns, dropped = asyncio.run(scenario())
    assert len(conns) == 3 and dropped >= 1
    assert _logins(bastion) == 1
