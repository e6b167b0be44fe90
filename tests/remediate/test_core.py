"""Remediation's pure parts: policy, marker, brake, plan and the audit log."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from flow.config import load_config
from flow.errors import ConfigError
from flow.health.remediate import (
    ActionRecord,
    AuditLog,
    Brake,
    NodeState,
    NodeView,
    RemediationSettings,
    drain_reasons,
    held_by_us,
    is_ours,
    make_plan,
    make_reason,
)
from flow.health.remediate.marker import MAX_REASON_CHARS
from flow.health.scoring import score_snapshot
from flow.health.snapshot import (
    ComponentState,
    GpudStatus,
    GpuReading,
    Snapshot,
    XidError,
    utcnow,
)

NOW = utcnow()


def snap(*, xid: int | None = None, ecc: int = 0, aggregate: int = 0, remap_failed: bool = False,
         util: float = 50.0, mem_used: int = 10, temp: float = 60.0,
         component: ComponentState | None = None, reachable: bool = True, minutes_ago: int = 0,
         node: str = "n0") -> Snapshot:
    gpus = (GpuReading(index=0, temp_c=temp, util_gpu_pct=util, mem_used_bytes=mem_used,
                       mem_total_bytes=100, ecc_volatile_uncorrected=ecc,
                       ecc_aggregate_uncorrected=aggregate, remap_failed=remap_failed),) if reachable else ()
    s = Snapshot(timestamp=NOW - timedelta(minutes=minutes_ago), task_id="task-abc123", task_name="t",
                 node=node,
                 gpud=GpudStatus(reachable=reachable, state="ok" if reachable else "ssh_refused",
                                 error=None if reachable else "refused"),
                 gpus=gpus, xids=(XidError(code=xid, gpu_index=0),) if xid else (),
                 components=(component,) if component else ())
    return s.with_verdict(score_snapshot(s))


DEFAULT = RemediationSettings()


def codes(s: Snapshot, settings: RemediationSettings = DEFAULT) -> set[str]:
    return {r.code for r in drain_reasons(s, settings)}


# -- policy -----------------------------------------------------------------------------------

def test_policy_drains_hardware_faults_only() -> None:
    assert codes(snap(xid=79)) == {"xid_fatal"}
    assert codes(snap(ecc=2)) == {"ecc_uncorrected"}
    assert codes(snap(remap_failed=True)) == {"remap_failed"}
    # Application XIDs, memory pressure, idleness, heat below critical, lifetime ECC: nothing.
    assert codes(snap(xid=13)) == set()
    assert codes(snap(mem_used=99)) == set()
    assert codes(snap(util=1)) == set()
    assert codes(snap(temp=84)) == set()
    assert codes(snap(aggregate=3)) == set()


def test_component_asking_for_hardware_inspection_drains() -> None:
    inspect = ComponentState(component="accelerator-nvidia-hw-slowdown", name="hw_slowdown",
                             health="Unhealthy", reason="slowdown", repair_actions=("HARDWARE_INSPECTION",))
    reboot = ComponentState(component="accelerator-nvidia-hw-slowdown", name="hw_slowdown",
                            health="Unhealthy", reason="slowdown", repair_actions=("REBOOT_SYSTEM",))
    assert codes(snap(component=inspect)) == {"component_unhealthy"}
    assert codes(snap(component=reboot)) == set()


def test_unknown_drains_only_when_configured() -> None:
    down = snap(reachable=False)
    assert codes(down) == set()
    assert codes(down, RemediationSettings(drain_unknown=True)) == {"gpud_unreachable"}


def test_settings_from_config_yaml(flow_home: Path) -> None:
    (flow_home / "config.yaml").write_text(
        "health:\n  remediation:\n    backend: command\n    command: [/bin/true, --x]\n"
        "    consecutive_sweeps: 3\n    max_fraction: 0.5\n    drain_on: [xid_fatal]\n")
    settings = RemediationSettings.from_mapping(load_config().remediation)
    assert settings.backend == "command" and settings.command == ("/bin/true", "--x")
    assert settings.consecutive_sweeps == 3 and settings.max_fraction == 0.5
    assert settings.drain_on == ("xid_fatal",) and settings.healthy_sweeps == 3


@pytest.mark.parametrize(("raw", "needle"), [
    ({"consecutive_sweeps": 0}, "health.remediation.consecutive_sweeps=0"),
    ({"max_fraction": float("nan")}, "health.remediation.max_fraction"),
    ({"max_fraction": 2}, "0-1"),
    ({"backend": "pbs"}, "slurm, command"),
    ({"backend": "command"}, "needs health.remediation.command"),
    ({"drain_on": ["XID!"]}, "is not a reason code"),
    ({"drain_on_repair_actions": ["FIX_IT"]}, "HARDWARE_INSPECTION"),
    ({"command": "rm -rf /"}, "is not a list"),
    ({"bogus": 1}, "health.remediation.bogus is not a remediation setting"),
    ({"window_hours": 0}, "more than 0"),
])
def test_bad_settings_name_the_key(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RemediationSettings.from_mapping(raw)
    assert needle in caught.value.message


def test_brake_limit_is_the_smaller_and_at_least_one() -> None:
    assert RemediationSettings().brake_limit(1000) == 5
    assert RemediationSettings().brake_limit(30) == 3
    assert RemediationSettings().brake_limit(4) == 1
    assert RemediationSettings(max_nodes=0).brake_limit(1000) == 0


# -- marker -----------------------------------------------------------------------------------

def test_reason_is_marked_ascii_one_line_and_bounded() -> None:
    reason = make_reason('GPU 0 at 91 °C "hot"\nnext line; `rm` = bad\x1b[2J ' + "x" * 400, NOW)
    assert reason.startswith("flow: GPU 0 at 91 C hot next line; rm bad")
    assert len(reason) <= MAX_REASON_CHARS and reason.isascii() and "\n" not in reason
    assert not set(reason) & set("\"'`=\\\x1b")
    assert reason.endswith(f"({NOW:%Y-%m-%dT%H:%M}Z)") and "..." in reason
    assert is_ours(reason) and not is_ours("bad DIMM, ticket 42") and not is_ours(None)


# -- brake ------------------------------------------------------------------------------------

def record(node: str, *, action: str = "drain", mode: str = "applied", hours_ago: float = 0) -> ActionRecord:
    return ActionRecord(time=NOW - timedelta(hours=hours_ago), node=node, action=action, mode=mode,
                        scheduler="command")


def test_brake_counts_our_drains_in_the_window_and_our_marked_nodes() -> None:
    records = [record("a"), record("b", hours_ago=3), record("c", mode="dry-run"),
               record("d", mode="failed")]
    states = {"e": NodeState(name="e", states=frozenset({"DRAIN"}), reason="flow: old (x)"),
              "f": NodeState(name="f", states=frozenset({"DRAIN"}), reason="someone's")}
    held = held_by_us(records, states, since=NOW - timedelta(hours=1))
    assert held == {"a", "e"}
    brake = Brake(3, held, 1.0)
    assert brake.left == 1 and brake.split(["x", "y"]) == (["x"], ["y"])


# -- plan -------------------------------------------------------------------------------------

def view(history: list[Snapshot], name: str = "gpu001") -> NodeView:
    return NodeView(snapshot=history[-1], scheduler_node=name, history=tuple(history))


def plan_for(views: list[NodeView], states: dict[str, NodeState] | None = None, *, limit: int = 5,
             settings: RemediationSettings = DEFAULT):  # type: ignore[no-untyped-def]
    return make_plan(views, states or {}, settings, brake=Brake(limit, frozenset(), 1.0), fleet_size=100)


def test_a_fault_that_heals_waits_for_consecutive_sweeps() -> None:
    once = plan_for([view([snap(minutes_ago=5), snap(ecc=1)])]).items[0]
    assert once.action == "none" and "1 of the 2 sweeps" in once.note
    twice = plan_for([view([snap(ecc=1, minutes_ago=5), snap(ecc=1)])]).items[0]
    assert twice.action == "drain" and "2 sweeps in a row" in twice.note


def test_a_gpu_off_the_bus_or_failed_remap_drains_at_once() -> None:
    for fault in (snap(xid=79), snap(remap_failed=True)):
        item = plan_for([view([fault])]).items[0]
        assert item.action == "drain" and "does not heal" in item.note
    # Another fatal XID heals by a reset: it waits.
    assert plan_for([view([snap(xid=48)])]).items[0].action == "none"


def test_someone_elses_drain_is_left_alone_and_ours_is_not_repeated() -> None:
    theirs = {"gpu001": NodeState(name="gpu001", states=frozenset({"IDLE", "DRAIN"}), reason="RMA 1234")}
    item = plan_for([view([snap(xid=79)])], theirs).items[0]
    assert item.action == "none" and "drained by someone else (RMA 1234)" in item.note
    healthy = [snap(minutes_ago=3), snap(minutes_ago=2), snap()]
    assert plan_for([view(healthy)], theirs).items[0].action == "none"
    ours = {"gpu001": NodeState(name="gpu001", states=frozenset({"DRAIN"}), reason="flow: x (t)")}
    assert plan_for([view([snap(xid=79)])], ours).items[0].action == "none"


def test_undrain_after_healthy_sweeps_only_when_ours() -> None:
    ours = {"gpu001": NodeState(name="gpu001", states=frozenset({"DRAIN"}), reason="flow: x (t)")}
    two = [snap(minutes_ago=2), snap()]
    three = [snap(xid=13, minutes_ago=9), snap(minutes_ago=3), snap(minutes_ago=2), snap()]
    assert plan_for([view(two)], ours).items[0].action == "none"
    assert plan_for([view(three)], ours).items[0].action == "undrain"


def test_brake_keeps_the_most_severe() -> None:
    worst = view([snap(xid=79, ecc=3, remap_failed=True)], "gpu003")
    mild = view([snap(remap_failed=True)], "gpu001")
    middle = view([snap(xid=79, ecc=2)], "gpu002")
    plan = plan_for([mild, middle, worst], limit=2)
    by_node = {i.node: i for i in plan.items}
    assert by_node["gpu003"].acts and by_node["gpu002"].acts
    assert by_node["gpu001"].refused and "brake" in by_node["gpu001"].note
    assert plan.brake_held


# -- audit ------------------------------------------------------------------------------------

def test_audit_is_private_append_only_and_skips_damage(tmp_path: Path) -> None:
    os.umask(0o022)
    log = AuditLog(tmp_path / "home" / "actions.jsonl")
    log.append([record("a", hours_ago=2)])
    log.append([ActionRecord(time=NOW, node="b", action="undrain", mode="dry-run", scheduler="slurm",
                             answer="ok\x1b]0;pwned\x07 done", user="me")])
    with log.path.open("ab") as f:
        f.write(b'{"broken": \n' + b"not json\n" + b'{"time": "x"}\n')
    log.append([record("c")])
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700
    read = log.read()
    assert [r.node for r in read.records] == ["a", "b", "c"] and read.damaged == 3
    assert read.records[1].answer == "ok done"
    assert [r.node for r in log.read(since=NOW - timedelta(hours=1)).records] == ["b", "c"]
    assert AuditLog(tmp_path / "missing.jsonl").read().records == ()


# -- scheduler names --------------------------------------------------------------------------

def test_scheduler_name_defaults_to_the_short_host_name(flow_home: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from flow.cli.main import main
    from flow.fleet.inventory import Inventory
    from flow.fleet.model import FieldError, Node

    assert Node(host="gpu001.cluster.local").scheduler_name == "gpu001"
    assert Node(host="10.0.0.5").scheduler_name == "10.0.0.5"
    assert Node(host="n1", scheduler_node="gpu[001-002]".replace("[", "")
                .replace("]", "").replace("-", "")).scheduler_name == "gpu001002"
    with pytest.raises(FieldError):
        Node(host="n1", scheduler_node="gpu[001-100]")  # a Slurm host list would drain them all
    assert main(["tasks", "add", "t", "--host", "a.lan", "--node", "b.lan",
                 "--scheduler-node", "gpu001", "--scheduler-node", "gpu002"]) == 0
    nodes = Inventory.load(flow_home / "tasks.yaml").resolve("t").nodes
    assert [n.scheduler_name for n in nodes] == ["gpu001", "gpu002"]
    assert "scheduler_node: gpu002" in (flow_home / "tasks.yaml").read_text()
    capsys.readouterr()
    assert main(["tasks", "add", "u", "--host", "a.lan", "--scheduler-node", "x,y"]) == 2
    assert "--scheduler-node" in capsys.readouterr().err
    assert main(["tasks", "add", "v", "--host", "a.lan", "--node", "b", "--scheduler-node", "x"]) == 2
