"""`flow health --gpu` end to end: real OpenSSH sshd per node, simulator-backed GPUd through the tunnel.

Covers every simulator scenario and every failure class (DNS, refused, SSH timeout on a server
that hangs after accepting, authentication, changed host key, GPUd not installed, GPUd not
listening, GPUd timed out, GPUd garbage), and checks the sweep stays within its deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from flow.cli.main import main
from flow.fleet.inventory import Inventory
from flow.fleet.model import Node, Task
from flow.health.sim import SCENARIOS, FleetThread, start_fleet_in_thread
from sshd_support import HangingServer, KeyPair, SshdFactory, SshdServer

pytestmark = pytest.mark.slow

NODE_TIMEOUT_S = 12.0


@pytest.fixture
def isolated_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    # No ~/.ssh/config or ~/.ssh/known_hosts of the machine running the tests.
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("FLOW_SSH_CONNECT_TIMEOUT", "4")
    return home


@pytest.fixture
def sim() -> Iterator[FleetThread]:
    fleet = start_fleet_in_thread(len(SCENARIOS), scenario=list(SCENARIOS), slow_delay_s=120.0)
    try:
        yield fleet
    finally:
        fleet.stop()


def _task(i: int, name: str, server_port: int, user: str, key: Path, gpud_port: int,
          host: str = "127.0.0.1") -> Task:
    return Task(id=f"task-e2e{i:03d}", name=name, instance_type="h100.8xlarge", gpud_port=gpud_port,
                nodes=(Node(host=host, port=server_port, user=user, identity_file=str(key)),))


# "3": the same sweep shared by this process and two worker processes (flow.health.sweep.shards),
# each failure class then met in a worker too; the verdicts must not depend on where.
@pytest.mark.parametrize("workers", ["1", "3"])
def test_every_scenario_and_failure_class_through_real_sshd(
    flow_home: Path, isolated_home: Path, sim: FleetThread, sshd_factory: SshdFactory,
    hanging_server: HangingServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str,
) -> None:
    # A fake `gpud` on PATH for nodes where GPUd is "installed but not listening".
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    (fake_bin / "gpud").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "gpud").chmod(0o755)
    servers = sshd_factory.start_many(len(SCENARIOS) + 4)
    with_gpud = sshd_factory.start(env={"PATH": f"{fake_bin}:/usr/bin:/bin"})
    key = sshd_factory.client_key.path
    user = sshd_factory.user
    tasks: list[Task] = []
    for i, node in enumerate(sim.nodes):
        server = with_gpud if node.scenario == "gpud-down" else servers[i]
        tasks.append(_task(i, f"sim-{node.scenario}", server.port, user, key, node.port))
    healthy_port = sim.nodes[0].port
    n = len(SCENARIOS)
    # GPUd not installed: nothing on GPUd's port and no gpud binary on the node.
    closed = next(node.port for node in sim.nodes if node.scenario == "gpud-down")
    tasks.append(_task(n, "no-gpud", servers[n].port, user, key, closed))
    # Authentication: a key the server does not trust.
    wrong = sshd_factory.wrong_key.path
    tasks.append(_task(n + 1, "bad-key", servers[n + 1].port, user, wrong, healthy_port))
    # Changed host key: flow's known_hosts holds another key for this server.
    changed = servers[n + 2]
    other = KeyPair.generate(tmp_path / "other_host_key", "other")
    (flow_home / "known_hosts").write_text(f"[127.0.0.1]:{changed.port} {other.public}\n")
    tasks.append(_task(n + 2, "key-changed", changed.port, user, key, healthy_port))
    # Refused: an sshd that was stopped.
    refused = servers[n + 3]
    refused.stop()
    tasks.append(_task(n + 3, "ssh-refused", refused.port, user, key, healthy_port))
    # DNS, and a server that accepts TCP then hangs.
    tasks.append(_task(n + 4, "no-dns", 22, user, key, healthy_port, host="no-such-node.invalid"))
    tasks.append(_task(n + 5, "ssh-hangs", hanging_server.port, user, key, healthy_port))
    Inventory(flow_home / "tasks.yaml", tasks).save()

    started = time.monotonic()
    code = main(["health", "--gpu", "--json", "--timeout", str(NODE_TIMEOUT_S), "--workers", workers])
    elapsed = time.monotonic() - started
    doc = orjson.loads(capsys.readouterr().out)
    assert code == 0
    # Bounded by the per-node deadline, though one GPUd answers after 120 s and one sshd never.
    assert elapsed < NODE_TIMEOUT_S + 15

    by_name = {node["task_name"]: node for node in doc["nodes"]}
    assert len(by_name) == len(tasks)

    def state(name: str) -> str:
        return str(by_name[name]["gpud"]["state"])

    def status(name: str) -> str:
        return str(by_name[name]["verdict"]["status"])

    def codes(name: str) -> set[str]:
        return {r["code"] for r in by_name[name]["verdict"]["reasons"]}

    for scenario in ("healthy", "hot", "warm", "throttled", "ecc", "xid-fatal", "xid-app",
                     "row-remap-pending", "row-remap-failed", "nvlink-errors", "memory-pressure", "idle"):
        assert state(f"sim-{scenario}") == "ok", (scenario, by_name[f"sim-{scenario}"]["gpud"])
        assert len(by_name[f"sim-{scenario}"]["gpus"]) == 8
    assert status("sim-healthy") == "healthy" and codes("sim-healthy") == set()
    assert status("sim-hot") == "critical" and "temp_critical" in codes("sim-hot")
    hot = max(g["temp_c"] for g in by_name["sim-hot"]["gpus"])
    assert hot > 85
    assert "temp_warning" in codes("sim-warm") and status("sim-warm") != "healthy"
    assert "throttle_hw" in codes("sim-throttled")
    assert status("sim-ecc") == "critical" and "ecc_uncorrected" in codes("sim-ecc")
    assert status("sim-xid-fatal") == "critical" and "xid_fatal" in codes("sim-xid-fatal")
    assert {x["code"] for x in by_name["sim-xid-fatal"]["xids"]} & {79, 48}
    assert "xid_application" in codes("sim-xid-app") and "xid_fatal" not in codes("sim-xid-app")
    assert "remap_pending" in codes("sim-row-remap-pending")
    assert status("sim-row-remap-failed") == "critical" and "remap_failed" in codes("sim-row-remap-failed")
    assert "nvlink_errors" in codes("sim-nvlink-errors")
    assert "mem_critical" in codes("sim-memory-pressure")
    assert "util_low" in codes("sim-idle")

    # A GPU gone from NVML: seven listed where the instance type (h100.8xlarge) has eight.
    missing = by_name["sim-gpu-missing"]
    assert (state("sim-gpu-missing"), len(missing["gpus"]), missing["expected_gpus"]) == ("ok", 7, 8)
    assert status("sim-gpu-missing") == "critical"
    assert [(r["code"], r["severity"], r["message"]) for r in missing["verdict"]["reasons"]] == [
        ("gpu_missing", "critical", "7 of 8 GPUs visible")]
    # A GPU lost after GPUd started: listed by machine-info, read by nothing.
    silent = by_name["sim-gpu-silent"]
    assert [g["index"] for g in silent["gpus"] if g["silent"]] == [3]
    assert status("sim-gpu-silent") == "degraded"
    (reason,) = silent["verdict"]["reasons"]
    assert (reason["code"], reason["severity"], reason["gpu"]) == ("gpu_silent", "warning", 3)
    assert reason["message"] == "GPU 3 (0000:5d:00.0) is listed by GPUd but reports no readings"

    expected_states = {
        "sim-gpud-down": "not_listening",
        "sim-gpud-slow": "timeout",
        "sim-gpud-garbage": "bad_response",
        "no-gpud": "not_installed",
        "bad-key": "ssh_auth",
        "key-changed": "ssh_host_key_changed",
        "ssh-refused": "ssh_refused",
        "no-dns": "ssh_dns",
        "ssh-hangs": "ssh_timeout",
    }
    for name, expected in expected_states.items():
        assert state(name) == expected, (name, by_name[name]["gpud"])
        assert status(name) == "unknown"
        assert by_name[name]["gpud"]["error"], name
        # Not judged, so not "critical", and no missing-GPU reason for a node nobody could read.
        reasons = by_name[name]["verdict"]["reasons"]
        assert [(r["code"], r["severity"]) for r in reasons] == [("gpud_unreachable", "unknown")], name
    assert "known_hosts" in by_name["key-changed"]["gpud"]["error"]

    summary = doc["summary"]
    assert summary["nodes"] == len(tasks) and summary["unknown"] == len(expected_states)
    assert doc["schema"] == 1 and doc["kind"] == "fleet"

    # Every snapshot went into the local store.
    from flow.health.storage import MetricsStore

    stored = list(MetricsStore(flow_home / "metrics").read_snapshots(task_id="task-e2e001"))
    assert len(stored) == 1 and stored[0].task_name == "sim-hot"


def test_table_view_and_fail_on(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "220")
    fleet = start_fleet_in_thread(2, scenario=["healthy", "xid-fatal"])
    try:
        tasks = [_task(i, f"view-{node.scenario}", sshd.port, sshd.user, sshd.client_key.path, node.port)
                 for i, node in enumerate(fleet.nodes)]
        Inventory(flow_home / "tasks.yaml", tasks).save()
        assert main(["health", "--gpu"]) == 0
        out = capsys.readouterr().out
        assert "view-healthy" in out and "view-xid-fatal" in out
        assert "critical" in out and "Issues" in out and "XID 79" in out
        assert "GPUs healthy" in out
        assert main(["health", "--gpu", "--fail-on", "issues", "--json"]) == 1
        capsys.readouterr()
        assert main(["health", "--task", "view-xid-fatal"]) == 0
        detail = capsys.readouterr().out
        assert "GPUd components" in detail and "accelerator-nvidia-error-xid" in detail
        assert "Why this score" in detail
    finally:
        fleet.stop()


def test_issues_table_says_actions_in_words_and_severity_agrees_with_status(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    fleet = start_fleet_in_thread(4, scenario=["gpu-missing", "gpu-silent", "row-remap-failed", "gpud-down"])
    try:
        tasks = [_task(i, f"words-{node.scenario}", sshd.port, sshd.user, sshd.client_key.path, node.port)
                 for i, node in enumerate(fleet.nodes)]
        Inventory(flow_home / "tasks.yaml", tasks).save()
        assert main(["health", "--gpu"]) == 0
        out = capsys.readouterr().out
        issues = out[out.index("Issues"):]

        def issue_line(task: str) -> str:
            """The task's rows, each with the lines a long cell folds onto joined back."""
            lines = issues.splitlines()
            starts = [i for i, ln in enumerate(lines) if task in ln]
            assert starts, task
            row: list[str] = []
            for start in starts:
                row.append(lines[start])
                for ln in lines[start + 1:]:
                    if not ln.startswith("│ ") or ln[2] != " ":
                        break  # a border, or the next row
                    row.append(ln)
            return " ".join(" ".join(ln.replace("│", " ").split()) for ln in row)

        assert "7 of 8 GPUs visible" in issue_line("words-gpu-missing")
        assert "critical" in issue_line("words-gpu-missing")
        assert "is listed by GPUd but reports no readings" in issue_line("words-gpu-silent")
        assert "warning" in issue_line("words-gpu-silent")
        # GPUd's HARDWARE_INSPECTION, in words; the enum itself stays out of the table.
        assert "Have the node's hardware inspected" in issue_line("words-row-remap-failed")
        assert "HARDWARE_INSPECTION" not in out and "REBOOT_SYSTEM" not in out
        # The unreachable node: unknown in the fleet table, unknown on its issue line.
        down = issue_line("words-gpud-down")
        assert "GPUd unreachable" in down and "unknown" in down and "critical" not in down

        assert main(["health", "--gpu", "--json"]) == 0
        doc = orjson.loads(capsys.readouterr().out)
        by_name = {n["task_name"]: n for n in doc["nodes"]}
        remap_reasons = by_name["words-row-remap-failed"]["verdict"]["reasons"]
        assert any(r["repair_actions"] == ["HARDWARE_INSPECTION"]
                   and r["action"].startswith("Have the node's hardware inspected") for r in remap_reasons)
    finally:
        fleet.stop()
