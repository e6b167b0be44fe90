"""FLOW_HEALTH_MONITORING=false (issue 13, item 8): sweeps still run on demand, and say on stderr
that monitoring is disabled here. A real OpenSSH sshd, the simulated GPUd through the tunnel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from flow.cli.main import main
from flow.fleet.inventory import Inventory
from flow.fleet.model import Node, Task
from flow.health.sim import FleetThread, start_fleet_in_thread
from sshd_support import SshdServer

NOTE = ("note: health monitoring is disabled here (FLOW_HEALTH_MONITORING=false); "
        "this sweep runs on demand")


@pytest.fixture
def sim() -> Iterator[FleetThread]:
    fleet = start_fleet_in_thread(1)
    try:
        yield fleet
    finally:
        fleet.stop()


def test_sweeps_run_on_demand_and_say_monitoring_is_disabled(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, sim: FleetThread,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    node = Node(host=sshd.host, port=sshd.port, user=sshd.user, identity_file=str(sshd.client_key.path))
    Inventory(flow_home / "tasks.yaml", [Task(id="task-off001", name="off", nodes=(node,),
                                              instance_type="h100.8xlarge",
                                              gpud_port=sim.nodes[0].port)]).save()
    monkeypatch.setenv("FLOW_HEALTH_MONITORING", "false")

    assert main(["health", "--gpu", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines().count(NOTE) == 1
    (checked,) = orjson.loads(out)["nodes"]
    assert checked["task_id"] == "task-off001" and checked["gpud"]["state"] == "ok"

    assert main(["health", "--task", "task-off001"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines().count(NOTE) == 1
    assert "task-off001" in out

    monkeypatch.setenv("FLOW_HEALTH_MONITORING", "true")
    assert main(["health", "--gpu", "--json"]) == 0
    assert "monitoring is disabled" not in capsys.readouterr().err
