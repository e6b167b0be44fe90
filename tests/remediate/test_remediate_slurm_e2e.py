"""`flow health remediate` end to end: simulated GPUd nodes behind a real OpenSSH sshd, mapped
to Slurm nodes (tasks.yaml `scheduler_node`) of a real slurmctld; what happened is read back
with Slurm's own tools (`scontrol show node`, `sinfo -R`), and from the audit log.

The module's cluster is shared: each test maps its simulated nodes to Slurm nodes of its own.
"""

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
from slurm_support import SlurmCluster, SlurmFactory
from sshd_support import SshdServer

pytestmark = pytest.mark.slow

# The foreign node is critical too (a fatal XID), but an operator drained it first.
SCENARIOS = ["healthy", "xid-fatal", "ecc", "row-remap-failed", "xid-app", "xid-fatal"]
FOREIGN_REASON = "ticket 4711: hands off"


def slurm_names(first: int) -> list[str]:
    return [f"gpu{first + i:03d}" for i in range(len(SCENARIOS))]


@pytest.fixture
def sim() -> Iterator[FleetThread]:
    with start_fleet_in_thread(len(SCENARIOS), scenario=SCENARIOS) as fleet:
        yield fleet


def setup_fleet(flow_home: Path, sshd: SshdServer, sim: FleetThread, cluster: SlurmCluster,
                names: list[str], extra: str = "") -> dict[str, str]:
    """tasks.yaml mapping each simulated node to a Slurm node; returns scenario -> Slurm name
    (the foreign node under the key "foreign")."""
    tasks = []
    by_scenario: dict[str, str] = {}
    for i, (node, name) in enumerate(zip(sim.nodes, names, strict=True)):
        key = "foreign" if node.scenario in by_scenario else node.scenario
        by_scenario[key] = name
        tasks.append(Task(
            id=f"task-slurm{i:03d}", name=f"sim-{key}", instance_type="h100.8xlarge",
            gpud_port=node.port,
            nodes=(Node(host=sshd.host, port=sshd.port, user=sshd.user,
                        identity_file=str(sshd.client_key.path), scheduler_node=name),)))
    Inventory(flow_home / "tasks.yaml", tasks).save()
    (flow_home / "config.yaml").write_text(
        "health:\n  remediation:\n    backend: slurm\n"
        f"    slurm_conf: {json.dumps(str(cluster.conf))}\n    max_fraction: 1\n{extra}")
    result = cluster.scontrol("update", f"NodeName={by_scenario['foreign']}", "State=DRAIN",
                              f"Reason={FOREIGN_REASON}")
    assert result.returncode == 0, result.stderr
    return by_scenario


def remediate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, dict[str, object]]]:
    code = main(["health", "remediate", "--json", *args])
    doc = orjson.loads(capsys.readouterr().out)
    return code, {str(n["node"]): n for n in doc["nodes"]}


def audit(flow_home: Path) -> list[dict[str, object]]:
    path = flow_home / "actions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ours(cluster: SlurmCluster, names: list[str]) -> dict[str, str]:
    """The nodes among `names` that `sinfo -R` lists, with their reasons."""
    return {node: reason for node, reason in cluster.reasons().items() if node in names}


def test_dry_run_changes_nothing(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, sim: FleetThread, slurm: SlurmCluster,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = slurm_names(51)
    by = setup_fleet(flow_home, sshd, sim, slurm, names)
    before = {name: slurm.show_node(name) for name in names}
    code, nodes = remediate(capsys)
    assert code == 0
    assert {n for n, item in nodes.items() if item["action"] == "drain"} == {
        by["xid-fatal"], by["row-remap-failed"]}
    assert ours(slurm, names) == {by["foreign"]: FOREIGN_REASON}
    for name in names:  # not a flag nor a reason changed anywhere
        assert slurm.node_fields(name) == (("drained", FOREIGN_REASON) if name == by["foreign"]
                                           else ("idle", "none"))
        assert _state(slurm.show_node(name)) == _state(before[name])
    assert {r["mode"] for r in audit(flow_home)} == {"dry-run"}


def _state(line: str) -> str:
    return next(word for word in line.split() if word.startswith("State="))


def test_apply_drains_exactly_the_right_nodes_and_resumes_a_recovered_one(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, sim: FleetThread, slurm: SlurmCluster,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = slurm_names(61)
    by = setup_fleet(flow_home, sshd, sim, slurm, names, extra="    healthy_sweeps: 1\n")

    code, _ = remediate(capsys, "--apply")
    assert code == 0
    drained = ours(slurm, names)
    assert set(drained) == {by["xid-fatal"], by["row-remap-failed"], by["foreign"]}
    assert drained[by["foreign"]] == FOREIGN_REASON  # another's reason untouched
    for key in ("xid-fatal", "row-remap-failed"):
        assert drained[by[key]].startswith("flow: ")
        assert f"Reason={drained[by[key]]} [" in slurm.show_node(by[key])
        assert "+DRAIN" in _state(slurm.show_node(by[key]))

    # The second sweep in a row: the uncorrected ECC node as well; nothing else changes.
    code, _ = remediate(capsys, "--apply")
    assert code == 0
    second = ours(slurm, names)
    assert set(second) == {by["xid-fatal"], by["row-remap-failed"], by["ecc"], by["foreign"]}
    assert {k: v for k, v in second.items() if k != by["ecc"]} == drained
    assert second[by["foreign"]] == FOREIGN_REASON

    # Drained by hand through flow, healthy since: resumed at the next sweep; the foreign one,
    # critical or not, is never resumed by flow.
    assert main(["health", "drain", by["healthy"], "--reason", "manual check", "--apply"]) == 0
    capsys.readouterr()
    assert ours(slurm, names)[by["healthy"]].startswith("flow: manual check (")
    code, nodes = remediate(capsys, "--apply")
    assert code == 0 and nodes[by["healthy"]]["action"] == "undrain"
    assert by["healthy"] not in ours(slurm, names)
    state, _ = slurm.node_fields(by["healthy"])
    assert state.startswith("idle") and "drain" not in state
    assert ours(slurm, names)[by["foreign"]] == FOREIGN_REASON

    # Every applied action is in the audit log with Slurm's read back.
    applied = [(r["node"], r["action"]) for r in audit(flow_home) if r["mode"] == "applied"]
    assert sorted(applied) == sorted([
        (by["xid-fatal"], "drain"), (by["row-remap-failed"], "drain"), (by["ecc"], "drain"),
        (by["healthy"], "drain"), (by["healthy"], "undrain")])
    for record in audit(flow_home):
        if record["mode"] == "applied":
            assert record["scheduler"] == "slurm" and "reads back State=" in str(record["answer"])
    assert not [r for r in audit(flow_home) if r["node"] == by["foreign"] and r["mode"] == "applied"]


def test_brake_holds_at_its_limit(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, sim: FleetThread, slurm: SlurmCluster,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = slurm_names(71)
    by = setup_fleet(flow_home, sshd, sim, slurm, names)
    code, nodes = remediate(capsys, "--apply", "--max-nodes", "1")
    assert code == 1
    drained = {n for n in ours(slurm, names) if n != by["foreign"]}
    assert len(drained) == 1 and drained <= {by["xid-fatal"], by["row-remap-failed"]}
    refused = [n for n, item in nodes.items() if item["refused"]]
    assert len(refused) == 1 and "brake" in str(nodes[refused[0]]["note"])
    # The node drained counts against the window: the next run drains nothing more.
    code, _ = remediate(capsys, "--apply", "--max-nodes", "1")
    assert code == 1
    assert {n for n in ours(slurm, names) if n != by["foreign"]} == drained


def test_controller_down_each_node_a_clear_error_and_nothing_done(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, sim: FleetThread,
    slurm_factory: SlurmFactory, capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = slurm_factory.start()
    names = slurm_names(81)
    by = setup_fleet(flow_home, sshd, sim, cluster, names)
    cluster.stop_controller()

    code, nodes = remediate(capsys, "--apply")
    assert code == 1
    for key in ("xid-fatal", "row-remap-failed", "foreign"):
        assert nodes[by[key]]["action"] == "none"
        assert "Unable to contact slurm controller" in str(nodes[by[key]]["note"])
    assert not [r for r in audit(flow_home) if r["mode"] == "applied"]

    cluster.start_controller()
    assert ours(cluster, names) == {by["foreign"]: FOREIGN_REASON}


def test_controller_stopped_between_reading_and_draining(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, sim: FleetThread,
    slurm_factory: SlurmFactory, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    cluster = slurm_factory.start()
    names = slurm_names(91)
    by = setup_fleet(flow_home, sshd, sim, cluster, names)
    process = cluster.daemons["slurmctld"].process
    assert process is not None
    # The real scontrol, behind a trigger: the first `update` (the first drain, after every node
    # was read) kills slurmctld by its PID and waits until it has exited before going on.
    trigger = tmp_path / "scontrol"
    pid = process.pid
    trigger.write_text(
        "#!/bin/sh\n"
        f"if [ \"$1\" = update ] && [ -e {tmp_path}/armed ]; then\n"
        f"  rm -f {tmp_path}/armed; kill -KILL {pid}\n"
        # A killed child stays a zombie until reaped here (at stop_controller): wait for that.
        f"  while [ -e /proc/{pid} ] && ! grep -q ') Z' /proc/{pid}/stat; do sleep 0.05; done\n"
        "fi\n"
        f"exec {cluster.scontrol_path} \"$@\"\n")
    trigger.chmod(0o755)
    (tmp_path / "armed").touch()
    with (flow_home / "config.yaml").open("a") as handle:
        handle.write(f"    scontrol: {json.dumps(str(trigger))}\n")

    code, nodes = remediate(capsys, "--apply")
    assert code == 1
    assert not (tmp_path / "armed").exists()  # the trigger fired
    records = audit(flow_home)
    assert not [r for r in records if r["mode"] == "applied"]  # nothing recorded as done
    failed = {str(r["node"]): str(r["answer"]) for r in records if r["mode"] == "failed"}
    assert set(failed) == {by["xid-fatal"], by["row-remap-failed"]}
    for node, answer in failed.items():
        assert "Unable to contact slurm controller" in answer, answer
        assert "Unable to contact slurm controller" in json.dumps(nodes[node])

    cluster.stop_controller()  # reaps the killed one
    cluster.start_controller()
    assert ours(cluster, names) == {by["foreign"]: FOREIGN_REASON}
