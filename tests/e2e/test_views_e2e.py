"""`flow health --task ID --history H`, `flow health` (self-check) and `flow health demo`."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from flow.cli.main import main
from flow.fleet.inventory import Inventory
from flow.fleet.model import Node, Task
from flow.health.scoring import score_snapshot
from flow.health.sim import SCENARIOS
from flow.health.sim.demo import DEMO_EXTRA_SCENARIOS
from flow.health.snapshot import GpudStatus, GpuReading, Snapshot, utcnow
from flow.health.storage import MetricsStore
from sshd_support import SshdServer

TASK_ID = "task-hist01"


def history(hours: int, *, hot_from: int, hot_to: int) -> list[Snapshot]:
    """One snapshot every 10 minutes for `hours`; GPU 0 at 90 °C between the two offsets."""
    now = utcnow()
    out = []
    for i in range(hours * 6):
        when = now - timedelta(minutes=10 * (hours * 6 - i) - 5)
        temp = 90.0 if hot_from <= i < hot_to else 60.0
        s = Snapshot(timestamp=when, task_id=TASK_ID, task_name="trainer", node="n0",
                     gpud=GpudStatus(reachable=True),
                     gpus=(GpuReading(index=0, temp_c=temp, util_gpu_pct=50.0),))
        out.append(s.with_verdict(score_snapshot(s)))
    return out


def write_inventory(home: Path, sshd: SshdServer) -> None:
    node = Node(host=sshd.host, port=sshd.port, user=sshd.user, identity_file=str(sshd.client_key.path))
    Inventory(home / "tasks.yaml", [Task(id=TASK_ID, name="trainer", nodes=(node,),
                                          instance_type="h100.8xlarge")]).save()


def test_history_comes_from_the_nodes_store_over_ssh(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    node_store_dir = tmp_path / "node-var-lib-flow-metrics"
    MetricsStore(node_store_dir).write_snapshots(history(6, hot_from=12, hot_to=18))
    monkeypatch.setenv("FLOW_NODE_METRICS_DIR", str(node_store_dir))
    write_inventory(flow_home, sshd)

    assert main(["health", "--task", "trainer", "--history", "6", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["kind"] == "history" and doc["source"] == "node"
    assert len(doc["snapshots"]) == 36
    summary = doc["summary"]
    assert len(summary["unhealthy_periods"]) == 1  # the hour at 90 °C
    # A second fetch rebuilds the mirror: no duplicates.
    assert main(["health", "--task", TASK_ID, "--history", "6", "--json"]) == 0
    assert len(orjson.loads(capsys.readouterr().out)["snapshots"]) == 36

    assert main(["health", "--task", TASK_ID, "--history", "6"]) == 0
    out = capsys.readouterr().out
    assert "History from the nodes' collector stores: 36 snapshots" in out
    assert "Unhealthy periods" in out and "Score" in out


def test_history_falls_back_to_the_local_store_and_says_so(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, capsys: pytest.CaptureFixture[str],
) -> None:
    MetricsStore(flow_home / "metrics").write_snapshots(history(3, hot_from=0, hot_to=0))
    write_inventory(flow_home, sshd)
    sshd.stop()
    assert main(["health", "--task", TASK_ID, "--history", "3", "--json"]) == 0
    captured = capsys.readouterr()
    doc = orjson.loads(captured.out)
    assert doc["source"] == "local" and len(doc["snapshots"]) == 18
    assert any("could not fetch" in note for note in doc["notes"])


def test_history_needs_a_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--history", "3"]) == 2
    assert "--history" in capsys.readouterr().err


def test_unknown_task_lists_near_matches(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, capsys: pytest.CaptureFixture[str],
) -> None:
    write_inventory(flow_home, sshd)
    assert main(["health", "--task", "trainr"]) == 2
    assert "trainer" in capsys.readouterr().err


def test_self_check_names_what_to_fix(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["health"]) == 1  # no inventory yet
    out = capsys.readouterr().out
    assert "ok   configuration valid" in out and "FIX  no inventory" in out
    write_inventory(flow_home, sshd)
    sshd.client_key.path.chmod(0o644)
    assert main(["health"]) == 1
    assert "chmod 600" in capsys.readouterr().out
    sshd.client_key.path.chmod(0o600)
    assert main(["health"]) == 0
    out = capsys.readouterr().out
    assert "FIX" not in out and "metrics store" in out and "1 tasks (1 with GPUs)" in out


def test_self_check_as_json_without_gpu(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, capsys: pytest.CaptureFixture[str],
) -> None:
    # Issue 13 item 10: `flow health --json` alone printed the text self-check.
    assert main(["health", "--json"]) == 1  # no inventory yet
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["schema"] == 1 and doc["kind"] == "self_check" and doc["ok"] is False
    checks = {c["check"]: c for c in doc["checks"]}
    assert checks["configuration"]["ok"] is True
    assert checks["inventory"]["ok"] is False and "flow tasks add" in checks["inventory"]["message"]
    write_inventory(flow_home, sshd)
    assert main(["health", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["ok"] is True and all(c["ok"] for c in doc["checks"])
    assert [c["check"] for c in doc["checks"]] == ["configuration", "inventory", "ssh_key", "metrics_store"]


def test_bad_options_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["health", "--gpu", "--timeout", "0"], ["health", "--gpu", "--concurrency", "0"],
                 ["health", "--gpu", "--watch", "-1"], ["health", "--gpu", "--fail-on", "sometimes"],
                 ["health", "--gpu", "--task", "x"]):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.strip()
    for bad in ("0", "many", "-2", "257"):
        assert main(["health", "--gpu", "--workers", bad]) == 2, bad
        err = capsys.readouterr().err
        assert "--workers" in err and "auto or 1-256" in err and repr(bad) in err


def test_empty_inventory_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--gpu"]) == 2
    err = capsys.readouterr().err
    assert "no GPU tasks to check" in err and "flow tasks add" in err


@pytest.mark.slow
def test_demo_shows_every_kind_of_node_as_a_new_user_would(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env.update(HOME=str(tmp_path), COLUMNS="220", NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-m", "flow.cli.main", "health", "demo", "--timeout", "8"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for name, status in (("demo-healthy", "healthy"), ("demo-warm", "degraded"), ("demo-hot", "critical"),
                         ("demo-gpud-down", "unknown")):
        line = next(line for line in out.splitlines() if name in line)
        assert status in line, line
    assert "GPU 0 row remapping failed" in out or "row remapping" in out
    assert "XID 79" in out and "not installed" in out and "connection refused" in out
    assert f"Nodes: {len(SCENARIOS) + len(DEMO_EXTRA_SCENARIOS)}" in out and "Issues" in out
    assert "7 of 8 GPUs visible" in out and "is listed by GPUd but reports no readings" in out
    assert "\x1b[" not in out  # NO_COLOR / not a TTY: plain text
    assert not list(tmp_path.glob(".flow*"))  # nothing written to the real home


@pytest.mark.slow
def test_watch_resweeps_and_shows_what_changed(
    flow_home: Path, isolated_home: Path, sshd: SshdServer,
) -> None:
    import select
    import signal
    import time

    from flow.health.sim import start_fleet_in_thread

    fleet = start_fleet_in_thread(1)
    try:
        node = Node(host=sshd.host, port=sshd.port, user=sshd.user, identity_file=str(sshd.client_key.path))
        Inventory(flow_home / "tasks.yaml", [Task(id=TASK_ID, name="watched", nodes=(node,),
                                                  instance_type="h100.8xlarge",
                                                  gpud_port=fleet.nodes[0].port)]).save()
        env = {**os.environ, "NO_COLOR": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "flow.cli.main", "health", "--gpu", "--watch", "1",
                                 "--timeout", "5"], env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        seen = ""
        deadline = time.monotonic() + 90
        stopped_gpud = False
        while time.monotonic() < deadline and "healthy → unknown" not in seen:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                seen += proc.stdout.readline()
            if not stopped_gpud and "Changes since the last sweep: none" in seen:
                fleet.stop()  # GPUd goes away between two sweeps
                stopped_gpud = True
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        assert "healthy → unknown" in seen, seen[-3000:]
        assert proc.returncode == 0
        # Several sweeps, one SSH login: --watch keeps the connection between sweeps.
        assert seen.count("GPU fleet health") >= 3
        assert sshd.log().count("Accepted publickey") == 1, sshd.log()[-2000:]
    finally:
        fleet.stop()


def test_history_skips_an_unreadable_day_file_with_a_note(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, capsys: pytest.CaptureFixture[str],
) -> None:
    """One unreadable day file used to fail the whole --history (issue 12, class 11)."""
    store = MetricsStore(flow_home / "metrics")
    store.write_snapshots(history(3, hot_from=0, hot_to=0))
    earlier = (utcnow() - timedelta(days=1)).date().isoformat()
    (store.task_dir(TASK_ID) / f"{earlier}.jsonl.gz").mkdir()  # a directory in the way
    write_inventory(flow_home, sshd)
    sshd.stop()
    assert main(["health", "--task", TASK_ID, "--history", "30", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["source"] == "local" and len(doc["snapshots"]) == 18
    assert any(f"{earlier}.jsonl.gz: cannot read metrics" in note for note in doc["notes"])
    assert main(["health", "--task", TASK_ID, "--history", "30"]) == 0
    assert f"skipped {store.task_dir(TASK_ID) / earlier}.jsonl.gz" in capsys.readouterr().err
