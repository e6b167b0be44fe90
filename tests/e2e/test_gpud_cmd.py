"""`flow health gpud TASK [PATH]`: GPUd's paths through a real sshd tunnel to the simulator."""

from __future__ import annotations

import time
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

SCENARIOS = ["xid-fatal", "control-chars", "drip", "huge-body"]


@pytest.fixture(scope="module")
def sim() -> Iterator[FleetThread]:
    with start_fleet_in_thread(len(SCENARIOS), scenario=SCENARIOS) as fleet:
        yield fleet


@pytest.fixture
def fleet(flow_home: Path, isolated_home: Path, sim: FleetThread, sshd: SshdServer) -> dict[str, int]:
    """One task per scenario, named after it, each reaching its simulated GPUd through `sshd`."""
    node = Node(host=sshd.host, port=sshd.port, user=sshd.user, identity_file=str(sshd.client_key.path))
    tasks = [Task(id=f"task-gpud{i:02d}", name=n.scenario, nodes=(node,), instance_type="h100.8xlarge",
                  gpud_port=n.port) for i, n in enumerate(sim.nodes)]
    Inventory(flow_home / "tasks.yaml", tasks).save()
    return {n.scenario: n.port for n in sim.nodes}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["health", "gpud", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_states_by_default_as_indented_json(fleet: dict[str, int],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "xid-fatal")
    assert code == 0, err
    states = orjson.loads(out)
    assert out.startswith("[\n  {")  # indented, not one line
    by_name = {entry["component"]: entry for entry in states}
    xid = by_name["accelerator-nvidia-error-xid"]["states"][0]
    assert xid["health"] == "Unhealthy" and "XID 79" in xid["reason"]


def test_events_get_a_window_gpud_alone_would_not(
    fleet: dict[str, int], capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "xid-fatal", "/v1/events")
    assert code == 0, err
    events = [e for entry in orjson.loads(out) for e in entry["events"] or ()]
    assert any(e["type"] == "Fatal" for e in events)
    assert "events of the last 24h" in err
    # An explicit startTime is GPUd's: "now" gives nothing, as GPUd does.
    code, out, _ = run(capsys, "xid-fatal", "/v1/events", "--query", f"startTime={int(time.time()) + 60}")
    assert code == 0
    assert not any(entry["events"] for entry in orjson.loads(out))
    # --since narrows the window; the path's own query works as --query does.
    code, out, err = run(capsys, "xid-fatal", "/v1/events?components=accelerator-nvidia-error-xid",
                         "--since", "2h")
    assert code == 0, err
    assert [entry["component"] for entry in orjson.loads(out)] == ["accelerator-nvidia-error-xid"]
    assert "events of the last 2h" in err


def test_metrics_machine_info_healthz_and_prometheus_text(
    fleet: dict[str, int], capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "xid-fatal", "/v1/metrics", "-q",
                         "components=accelerator-nvidia-temperature")
    assert code == 0, err
    names = {m["name"] for entry in orjson.loads(out) for m in entry["metrics"]}
    assert "accelerator_nvidia_temperature_current_celsius" in names
    code, out, _ = run(capsys, "xid-fatal", "/machine-info")
    assert code == 0 and len(orjson.loads(out)["gpuInfo"]["gpus"]) == 8
    code, out, _ = run(capsys, "xid-fatal", "/healthz")
    assert code == 0 and orjson.loads(out)["status"] == "ok"
    code, out, _ = run(capsys, "xid-fatal", "/metrics")
    assert code == 0 and "gpud_component=" in out and not out.startswith("[")


def test_json_document_names_the_request(fleet: dict[str, int],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "xid-fatal", "/v1/events", "--since", "30m", "--json")
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["kind"] == "gpud" and doc["task_name"] == "xid-fatal" and doc["path"] == "/v1/events"
    assert doc["status_code"] == 200 and isinstance(doc["body"], list) and doc["text"] is None
    start = int(doc["query"]["startTime"])
    assert abs(time.time() - 1800 - start) < 600


def test_v1_gpu_says_where_the_gpu_data_is_without_connecting(
    flow_home: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # No inventory at all: the answer needs no node.
    code, _, err = run(capsys, "train-a", "/v1/gpu")
    assert code == 2
    assert "GPUd has no /v1/gpu" in err and "/v1/metrics" in err and "/machine-info" in err
    assert "accelerator-nvidia-" in err
    assert ("flow health gpud train-a /v1/metrics --query components=accelerator-nvidia-temperature"
            in err) and "flow health --task train-a" in err


def test_unknown_path_and_unknown_component(fleet: dict[str, int],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "xid-fatal", "/v1/nope")
    assert code == 2
    assert "GPUd has no path /v1/nope" in err and "/v1/states" in err and "/machine-info" in err
    code, _, err = run(capsys, "xid-fatal", "/v1/states", "-q", "components=no-such-component")
    assert code == 1
    assert "component not found: no-such-component" in err and "/v1/components" in err


@pytest.mark.parametrize("argv,culprit", [
    (["http://localhost:15132/v1/states"], "'http://localhost:15132/v1/states' is not a GPUd path"),
    (["v1/states"], "is not a GPUd path"),
    (["/v1/../etc/passwd"], "'.' or '..' segment"),
    (["/v1/states%00"], "holds '%'"),
    (["/" + "a" * 300], "at most 256"),
    (["/v1/states", "--query", "components"], "'components' is not KEY=VALUE"),
    (["/v1/states", "--query", "components=a b"], "holds ' '"),
    (["/v1/states", "--query", "1x=2"], "the key '1x' is not allowed"),
    (["/v1/events", "--query", "startTime=yesterday"], "integer unix seconds"),
    (["/v1/states?components=a", "--query", "components=b"], "given twice"),
    (["/v1/events", "--since", "forever"], "'forever' is not allowed"),
    (["/v1/events", "--since", "400d"], "out of range"),
])
def test_bad_input_is_exit_2_naming_it(
    flow_home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], culprit: str,
) -> None:
    code, _, err = run(capsys, "train-a", *argv)
    assert code == 2
    assert culprit in err and "Traceback" not in err


def test_node_text_cannot_reach_the_terminal(fleet: dict[str, int],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["/v1/events"], ["/machine-info"], ["/v1/events", "--json"]):
        code, out, err = run(capsys, "control-chars", *argv)
        assert code == 0, err
        assert not any(c in out for c in "\x1b\x07\x00\x9b\u202e\r"), argv
        assert orjson.loads(out)  # still the same JSON: the characters are escapes now
    assert "\\u202e" in out or "\\u009b" in out


def test_hostile_answers_are_bounded_in_size_and_time(
    fleet: dict[str, int], capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    code, out, err = run(capsys, "drip", "/v1/states", "--timeout", "3")
    assert code == 1 and out == ""
    assert "did not finish answering /v1/states within 3 s" in err
    code, out, err = run(capsys, "huge-body", "/v1/states")
    assert code == 1 and out == ""
    assert "the limit for one answer" in err
    assert time.monotonic() - started < 120  # a hang bound, not a timing


def test_gpud_not_listening_names_the_next_step(
    flow_home: Path, sshd: SshdServer, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sshd_support import free_port

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    node = Node(host=sshd.host, port=sshd.port, user=sshd.user, identity_file=str(sshd.client_key.path))
    Inventory(flow_home / "tasks.yaml", [Task(id="task-down01", name="down", nodes=(node,),
                                              gpud_port=free_port())]).save()
    code, _, err = run(capsys, "down", "/healthz")
    assert code == 1
    assert "nothing listens on 127.0.0.1:" in err and "systemctl status gpud" in err
