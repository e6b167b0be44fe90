"""`flow health remediate|drain|undrain|actions` with the command backend (a real script that
records its arguments) over a simulated fleet behind a real OpenSSH sshd; `set-healthy` and
`check-node` against the simulator's GPUd (v0.8 and older)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from flow.cli.main import main
from flow.fleet.inventory import Inventory
from flow.fleet.model import Node, Task
from flow.health.sim import FleetThread, start_fleet_in_thread
from sshd_support import SshdServer

pytestmark = pytest.mark.slow

SCENARIOS = ["healthy", "xid-fatal", "ecc", "row-remap-failed", "xid-app"]
NAMES = {s: f"gpu{i + 1:03d}" for i, s in enumerate(SCENARIOS)}


@pytest.fixture
def sim() -> Iterator[FleetThread]:
    with start_fleet_in_thread(len(SCENARIOS), scenario=SCENARIOS) as fleet:
        yield fleet


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A drain command that appends its arguments (one JSON list a line) and exits 0, or
    with the status in the file `fail` next to it."""
    log = tmp_path / "calls.jsonl"
    script = tmp_path / "site-drain"
    script.write_text(
        "#!/usr/bin/env python3\nimport json, sys, pathlib\n"
        f"log = pathlib.Path({str(log)!r})\n"
        "with log.open('a') as f: f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "fail = log.parent / 'fail'\n"
        "print('recorded', sys.argv[1:])\n"
        "sys.exit(int(fail.read_text()) if fail.exists() else 0)\n")
    script.chmod(0o755)
    return script, log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def setup_fleet(flow_home: Path, sshd: SshdServer, sim: FleetThread, script: Path,
                extra: str = "") -> None:
    tasks = []
    for i, node in enumerate(sim.nodes):
        tasks.append(Task(
            id=f"task-rem{i:03d}", name=f"sim-{node.scenario}", instance_type="h100.8xlarge",
            gpud_port=node.port,
            nodes=(Node(host=sshd.host, port=sshd.port, user=sshd.user,
                        identity_file=str(sshd.client_key.path), scheduler_node=NAMES[node.scenario]),)))
    Inventory(flow_home / "tasks.yaml", tasks).save()
    (flow_home / "config.yaml").write_text(
        "health:\n  remediation:\n    backend: command\n"
        f"    command: [{json.dumps(str(script))}]\n    max_fraction: 1\n{extra}")


def remediate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, dict[str, object]]]:
    code = main(["health", "remediate", "--json", *args])
    doc = orjson.loads(capsys.readouterr().out)
    return code, {n["node"]: n for n in doc["nodes"]}


def audit(flow_home: Path) -> list[dict[str, object]]:
    path = flow_home / "actions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_dry_run_changes_nothing_and_is_audited(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, sim: FleetThread,
    recorder: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    script, log = recorder
    setup_fleet(flow_home, sshd, sim, script)
    code, nodes = remediate(capsys)
    assert code == 0
    assert calls(log) == []  # nothing ran
    drains = {n for n, item in nodes.items() if item["action"] == "drain"}
    # At the first sweep only faults that never heal by themselves: XID 79, failed remapping.
    assert drains == {NAMES["xid-fatal"], NAMES["row-remap-failed"]}
    assert nodes[NAMES["ecc"]]["action"] == "none" and "1 of the 2" in str(nodes[NAMES["ecc"]]["note"])
    assert nodes[NAMES["xid-app"]]["action"] == "none"
    records = audit(flow_home)
    assert {(r["node"], r["mode"]) for r in records} == {(n, "dry-run") for n in drains}
    assert all(str(r["reason"]).startswith("flow: ") and r["user"] for r in records)
    # The table says the same.
    assert main(["health", "remediate"]) == 0
    out = capsys.readouterr()
    assert "dry run" in out.out and "nothing was changed" in out.err


def test_apply_drains_exactly_the_critical_hardware_faults_then_resumes(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, sim: FleetThread,
    recorder: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    script, log = recorder
    setup_fleet(flow_home, sshd, sim, script, extra="    healthy_sweeps: 1\n")
    code, _ = remediate(capsys, "--apply")
    assert code == 0
    first = calls(log)
    assert sorted(c[0] for c in first) == sorted([NAMES["xid-fatal"], NAMES["row-remap-failed"]])
    assert all(c[1] == "drain" and c[2].startswith("flow: ") and len(c) == 3 for c in first)
    # The second sweep in a row: the uncorrected ECC node too, and no node drained twice.
    code, nodes = remediate(capsys, "--apply")
    assert code == 0
    assert [c[0] for c in calls(log)[len(first):]] == [NAMES["ecc"]]
    assert nodes[NAMES["xid-fatal"]]["note"] == "already drained by flow"
    applied = [r for r in audit(flow_home) if r["mode"] == "applied"]
    assert len(applied) == 3 and all(r["scheduler"] == "command" and "recorded" in str(r["answer"])
                                     for r in applied)

    # Drained by hand, healthy since: resumed after healthy_sweeps (1) sweep.
    assert main(["health", "drain", NAMES["healthy"], "--reason", "manual check", "--apply"]) == 0
    capsys.readouterr()
    assert calls(log)[-1] == [NAMES["healthy"], "drain", calls(log)[-1][2]]
    assert calls(log)[-1][2].startswith("flow: manual check (")
    code, nodes = remediate(capsys, "--apply")
    assert code == 0 and nodes[NAMES["healthy"]]["action"] == "undrain"
    assert calls(log)[-1] == [NAMES["healthy"], "resume"]

    assert main(["health", "actions", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert [(a["node"], a["action"]) for a in doc["actions"] if a["mode"] == "applied"][-2:] == [
        (NAMES["healthy"], "drain"), (NAMES["healthy"], "undrain")]
    assert main(["health", "actions", "--since", "1"]) == 0
    assert "undrain" in capsys.readouterr().out


def test_brake_holds_at_max_nodes_and_exits_1(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, sim: FleetThread,
    recorder: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    script, log = recorder
    setup_fleet(flow_home, sshd, sim, script)
    code, nodes = remediate(capsys, "--apply", "--max-nodes", "1")
    assert code == 1
    assert len(calls(log)) == 1
    refused = [n for n, item in nodes.items() if item["refused"]]
    assert len(refused) == 1 and "brake" in str(nodes[refused[0]]["note"])
    assert {r["mode"] for r in audit(flow_home)} == {"applied", "refused"}
    # The drained node counts: the next run may drain nothing more.
    code, _ = remediate(capsys, "--apply", "--max-nodes", "1")
    assert code == 1 and len(calls(log)) == 1


def test_a_failing_command_is_failed_not_done(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, sim: FleetThread,
    recorder: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    script, log = recorder
    setup_fleet(flow_home, sshd, sim, script)
    (log.parent / "fail").write_text("3")
    code, _ = remediate(capsys, "--apply")
    assert code == 1
    modes = {r["mode"] for r in audit(flow_home)}
    assert modes == {"failed"}
    assert all("exited with status 3" in str(r["answer"]) for r in audit(flow_home))
    # Nothing recorded as done: the command backend still sees the nodes in service.
    assert main(["health", "undrain", NAMES["xid-fatal"], "--apply"]) == 0
    assert "not drained" in capsys.readouterr().out


def test_bad_remediation_config_exits_2(
    flow_home: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    (flow_home / "config.yaml").write_text("health:\n  remediation:\n    max_nodes: -1\n")
    assert main(["health", "remediate"]) == 2
    assert "health.remediation.max_nodes=-1" in capsys.readouterr().err


# -- set-healthy and check-node against the simulator ----------------------------------------

@pytest.fixture
def xid_node_v08() -> Iterator[FleetThread]:
    fleet = start_fleet_in_thread(1, scenario="xid-fatal", gpud_version="v0.8.0")
    try:
        yield fleet
    finally:
        fleet.stop()


def one_task(flow_home: Path, sshd: SshdServer, port: int) -> None:
    Inventory(flow_home / "tasks.yaml", [Task(
        id="task-fix001", name="fixed", instance_type="h100.8xlarge", gpud_port=port,
        nodes=(Node(host=sshd.host, port=sshd.port, user=sshd.user,
                    identity_file=str(sshd.client_key.path)),))]).save()


def test_set_healthy_clears_a_sticky_xid_on_gpud_v08(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, xid_node_v08: FleetThread,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = xid_node_v08.nodes[0]
    one_task(flow_home, sshd, node.port)
    monkeypatch.setenv("FLOW_GPUD_PORT", str(node.port))
    assert main(["health", "check-node"]) == 1
    assert capsys.readouterr().out.startswith("flow: critical")
    assert main(["health", "set-healthy", "fixed"]) == 0
    assert "set healthy: accelerator-nvidia-error-xid" in capsys.readouterr().out
    assert node.requests["/v1/health-states/set-healthy"] == 1
    assert main(["health", "check-node"]) == 0
    assert capsys.readouterr().out.startswith("flow: healthy")
    # A component GPUd cannot set healthy is GPUd's refusal, named.
    assert main(["health", "set-healthy", "fixed", "--component", "accelerator-nvidia-ecc"]) == 1
    assert "does not support setting healthy state" in capsys.readouterr().err


def test_set_healthy_on_an_older_gpud_is_a_clear_error(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, sim: FleetThread,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node = next(n for n in sim.nodes if n.scenario == "xid-fatal")  # the default v0.5.1
    one_task(flow_home, sshd, node.port)
    assert main(["health", "set-healthy", "fixed"]) == 1
    err = capsys.readouterr().err
    assert "v0.5.1" in err and "needs GPUd v0.8.0 or later" in err and "Traceback" not in err
    assert node.requests["/v1/health-states/set-healthy"] == 0


def test_check_node_exit_codes(
    sim: FleetThread, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    by = {n.scenario: n for n in sim.nodes}
    for scenario, code in (("healthy", 0), ("xid-app", 0), ("ecc", 1), ("row-remap-failed", 1)):
        monkeypatch.setenv("FLOW_GPUD_PORT", str(by[scenario].port))
        assert main(["health", "check-node"]) == code, scenario
        line = capsys.readouterr().out
        assert line.startswith("flow: ") and line.count("\n") == 1 and line.isascii()
    from sshd_support import free_port

    monkeypatch.setenv("FLOW_GPUD_PORT", str(free_port()))
    assert main(["health", "check-node", "--timeout", "5"]) == 1
    assert capsys.readouterr().out.startswith("flow: unknown")
