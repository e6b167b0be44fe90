"""A sweep shared among processes (flow.health.sweep.shards): same rows, and a worker's failure costs
only its own nodes, each an `unknown` row saying what happened. Real sshd, simulated GPUd."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flow.health.sim import FleetThread, start_fleet_in_thread
from flow.health.snapshot import HealthStatus
from flow.health.sweep.checker import Checker, NodeTarget, SweepOptions, SweepResult
from flow.health.sweep.shards import MIN_NODES_PER_WORKER, SWEEP_WORKER_STATE, auto_workers, sweep_in_shards
from flow.ssh import SSHOptions, SSHParams
from sshd_support import SshdFactory

pytestmark = pytest.mark.slow

SCENARIOS = ["healthy", "hot", "ecc", "gpud-down", "healthy", "idle", "xid-fatal"]


@pytest.fixture
def sim() -> Iterator[FleetThread]:
    fleet = start_fleet_in_thread(len(SCENARIOS), scenario=SCENARIOS, gpu_count=2)
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def setup(sim: FleetThread, sshd_factory: SshdFactory, flow_home: Path,
          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Checker, list[NodeTarget]]:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh of the machine running the tests
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    servers = sshd_factory.start_many(len(SCENARIOS))
    targets = [
        NodeTarget(task_id=f"task-{i}", task_name=node.scenario, node=f"node-{i}",
                   ssh=SSHParams(host="127.0.0.1", port=server.port, user=sshd_factory.user,
                                 key_paths=(sshd_factory.client_key.path,), use_agent=False),
                   gpud_port=node.port)
        for i, (node, server) in enumerate(zip(sim.nodes, servers, strict=True))
    ]
    ssh = SSHOptions(host_key_policy="accept-new", known_hosts_file=flow_home / "known_hosts",
                     user_known_hosts_files=(), ssh_config_files=(), connect_timeout_s=5)
    return Checker(ssh, SweepOptions(timeout_s=10)), targets


def _sweep(checker: Checker, targets: list[NodeTarget], workers: int, **kw: object) -> SweepResult:
    return asyncio.run(sweep_in_shards(checker, targets, workers=workers, **kw))  # type: ignore[arg-type]


def _rows(result: SweepResult) -> list[tuple[str, str, str | None]]:
    return [(s.task_name, s.gpud.state, s.status.value) for s in result.snapshots]


def test_three_processes_give_the_rows_one_gives_in_the_same_order(
        setup: tuple[Checker, list[NodeTarget]]) -> None:
    checker, targets = setup
    progress: list[tuple[int, int]] = []
    shared = _sweep(checker, targets, 3, progress=lambda done, total: progress.append((done, total)))
    alone = _sweep(checker, targets, 1)
    assert _rows(shared) == _rows(alone)
    assert [s.task_id for s in shared.snapshots] == [t.task_id for t in targets]
    assert shared.snapshots[SCENARIOS.index("hot")].status == HealthStatus.CRITICAL
    assert shared.snapshots[3].gpud.state == "not_installed"  # a failure class met in a worker
    # Progress climbs one node at a time to the total, whichever process read the node.
    assert progress[0] == (0, len(targets)) and progress[-1] == (len(targets), len(targets))
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_a_worker_that_dies_costs_only_its_nodes_each_saying_why(
        setup: tuple[Checker, list[NodeTarget]]) -> None:
    checker, targets = setup
    crash = [sys.executable, "-c",
             "import sys; sys.stdin.buffer.read(); print('out of memory', file=sys.stderr); sys.exit(3)"]
    result = _sweep(checker, targets, 2, worker_argv=crash)
    local, lost = result.snapshots[0::2], result.snapshots[1::2]  # shards are dealt round-robin
    assert all(s.gpud.state != SWEEP_WORKER_STATE for s in local)
    assert local[0].status == HealthStatus.HEALTHY
    for s in lost:
        assert s.status == HealthStatus.UNKNOWN and s.gpud.state == SWEEP_WORKER_STATE
        assert s.gpud.error is not None
        assert "exited with status 3: out of memory" in s.gpud.error and "not checked" in s.gpud.error
        assert s.verdict is not None and "--workers 1" in (s.verdict.reasons[0].action or "")


def test_a_worker_that_hangs_is_stopped_and_what_it_sent_is_kept(
        setup: tuple[Checker, list[NodeTarget]]) -> None:
    checker, targets = setup
    # Reports its first node for real (the genuine worker's line), then hangs.
    hang = [sys.executable, "-c",
            "import io, sys, pickle\n"
            "from flow.health.sweep.shard_worker import run_job\n"
            "ssh, opts, targets = pickle.load(sys.stdin.buffer)\n"
            "run_job(io.BytesIO(pickle.dumps((ssh, opts, targets[:1]))), sys.stdout.buffer)\n"
            "import time; time.sleep(600)\n"]
    quick = checker.with_options(SweepOptions(timeout_s=3))
    started = time.monotonic()
    result = _sweep(quick, targets, 2, worker_argv=hang, worker_slack_s=5)
    assert time.monotonic() - started < 120  # stopped after 3 + 5 s, not left for its 600 s (hang bound)
    lost = result.snapshots[1::2]
    assert lost[0].gpud.state != SWEEP_WORKER_STATE and lost[0].status == HealthStatus.CRITICAL  # "hot"
    for s in lost[1:]:
        assert s.gpud.state == SWEEP_WORKER_STATE
        assert "did not finish within 8 s and was stopped" in (s.gpud.error or "")


def test_a_worker_that_cannot_start_is_reported_not_raised(
        setup: tuple[Checker, list[NodeTarget]], tmp_path: Path) -> None:
    checker, targets = setup
    result = _sweep(checker, targets[:2], 2, worker_argv=[str(tmp_path / "no-such-python")])
    assert result.snapshots[0].status == HealthStatus.HEALTHY
    assert result.snapshots[1].gpud.state == SWEEP_WORKER_STATE
    assert "could not start" in (result.snapshots[1].gpud.error or "")


def test_auto_workers_one_per_core_with_enough_nodes_each() -> None:
    assert auto_workers(10, cpus=16) == 1
    assert auto_workers(MIN_NODES_PER_WORKER * 2 - 1, cpus=16) == 1
    assert auto_workers(MIN_NODES_PER_WORKER * 2, cpus=16) == 2
    assert auto_workers(5000, cpus=16) == 16
    assert auto_workers(5000, cpus=2) == 2
    assert auto_workers(0, cpus=8) == 1
    with pytest.raises(ValueError, match="workers"):
        asyncio.run(sweep_in_shards(Checker(SSHOptions()), [], workers=0))


def test_a_worker_writing_garbage_or_an_endless_line_is_stopped_not_fatal(
        setup: tuple[Checker, list[NodeTarget]]) -> None:
    checker, targets = setup
    # Lines that are not `<index> <snapshot>` are ignored; a line beyond 16 MiB stops the worker.
    noisy = [sys.executable, "-c",
             "import sys; sys.stdin.buffer.read(); print('hello'); print('0 {not json'); "
             "sys.stdout.write('x' * (17 * 1024 * 1024)); sys.stdout.flush()"]
    result = _sweep(checker, targets[:2], 2, worker_argv=noisy)
    assert result.snapshots[0].status == HealthStatus.HEALTHY
    lost = result.snapshots[1]
    assert lost.gpud.state == SWEEP_WORKER_STATE
    assert "output could not be read" in (lost.gpud.error or "")
