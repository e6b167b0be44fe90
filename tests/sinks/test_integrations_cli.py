"""`flow health serve | export | grafana-dashboard | sinks`: exit codes, messages, exact dry-run output."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flow.cli.main import main
from flow.config import load_config
from flow.health.snapshot import Snapshot
from flow.health.storage import MetricsStore

from .servers import Server
from .snapshots import fleet, snapshot


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.jsonl"
    path.write_bytes(b"".join(s.to_json() + b"\n" for s in fleet(2)))
    return path


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1:99999", "::1:9464", "host:port"])
def test_bad_listen_is_a_usage_error(capsys: pytest.CaptureFixture[str], listen: str) -> None:
    code, _, err = _run(capsys, "health", "serve", "--listen", listen, "--input", "x.jsonl")
    assert code == 2
    assert "Invalid value for '--listen'" in err and repr(listen) in err and "HOST:PORT" in err


@pytest.mark.parametrize("interval", ["0", "-5", "soon"])
def test_bad_interval_is_a_usage_error(capsys: pytest.CaptureFixture[str], interval: str) -> None:
    code, _, err = _run(capsys, "health", "serve", "--interval", interval, "--input", "x.jsonl")
    assert code == 2 and "'--interval'" in err


def test_bad_format_is_a_usage_error(capsys: pytest.CaptureFixture[str], fleet_file: Path) -> None:
    code, _, err = _run(
        capsys, "health", "export", "--format", "influx", "--dry-run", "--input", str(fleet_file)
    )
    assert code == 2
    assert "Invalid value for '--format': 'influx' is not one of" in err and "'datadog'" in err


def test_a_bad_input_line_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(snapshot().to_json() + b"\n{not json\n")
    code, _, err = _run(capsys, "health", "export", "--format", "json", "--input", str(path))
    assert code == 2 and f"ERROR: --input={str(path)!r} line 2 is not a snapshot" in err


def test_input_and_store_are_exclusive(capsys: pytest.CaptureFixture[str], fleet_file: Path) -> None:
    code, _, err = _run(
        capsys, "health", "export", "--format", "json", "--input", str(fleet_file), "--from-store"
    )
    assert code == 2 and "exclusive" in err


def test_json_export_is_the_vocabulary(capsys: pytest.CaptureFixture[str], fleet_file: Path) -> None:
    code, out, _ = _run(capsys, "health", "export", "--format", "json", "--input", str(fleet_file))
    assert code == 0
    doc = orjson.loads(out)
    temps = next(m for m in doc["metrics"] if m["name"] == "flow_gpu_temperature_celsius")
    assert (temps["type"], temps["unit"], len(temps["samples"])) == ("gauge", "celsius", 4)
    assert temps["samples"][0]["labels"]["node"] == "gpu-node-0"


def test_datadog_dry_run_prints_the_body_and_never_the_key(
    capsys: pytest.CaptureFixture[str], fleet_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DD_API_KEY", "super-secret-dd-key")
    code, out, err = _run(
        capsys, "health", "export", "--format", "datadog", "--dry-run", "--input", str(fleet_file)
    )
    assert code == 0, err
    assert "super-secret-dd-key" not in out + err
    lines = out.splitlines()
    assert lines[:3] == [
        "# request 1 of 1",
        "POST https://api.datadoghq.com/api/v2/series",
        "Content-Type: application/json",
    ]
    assert "DD-API-KEY: <redacted>" in lines
    body = orjson.loads(next(line for line in lines if line.startswith('{"series"')))
    assert {s["metric"] for s in body["series"]} >= {"flow_node_health_score", "flow_gpu_temperature_celsius"}


def test_prometheus_dry_run_shows_one_put_per_node(
    capsys: pytest.CaptureFixture[str], fleet_file: Path
) -> None:
    code, out, _ = _run(
        capsys, "health", "export", "--format", "prometheus", "--dry-run", "--input", str(fleet_file)
    )
    assert code == 0
    puts = [line for line in out.splitlines() if line.startswith("PUT ")]
    assert puts == [
        f"PUT http://127.0.0.1:9091/metrics/job/flow-health/task_id/task-abc123/node/gpu-node-{i}"
        for i in range(2)
    ]
    text = out.split("\n\n", 1)[1].split("# request 2", 1)[0]
    families = {f.name for f in text_string_to_metric_families(text)}
    assert "flow_gpu_temperature_celsius" in families


@pytest.mark.parametrize(
    ("fmt", "first"),
    [
        ("otlp", "POST http://127.0.0.1:4318/v1/metrics"),
        ("cloudwatch", "PutMetricData https://monitoring.eu-west-1.amazonaws.com"),
    ],
)
def test_other_dry_runs(
    capsys: pytest.CaptureFixture[str],
    fleet_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    first: str,
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    code, out, err = _run(
        capsys, "health", "export", "--format", fmt, "--dry-run", "--input", str(fleet_file)
    )
    assert code == 0, err
    assert out.splitlines()[1] == first


def test_sending_needs_a_configured_sink(capsys: pytest.CaptureFixture[str], fleet_file: Path) -> None:
    code, _, err = _run(capsys, "health", "export", "--format", "datadog", "--input", str(fleet_file))
    assert code == 2
    assert "ERROR: no health.sinks section of type datadog" in err and "HINT: add one" in err


def test_export_sends_to_the_configured_pushgateway(
    capsys: pytest.CaptureFixture[str], fleet_file: Path, flow_home: Path, pushgateway: Server
) -> None:
    (flow_home / "config.yaml").write_text(
        f"health:\n  sinks:\n    gw: {{type: pushgateway, url: '{pushgateway.url}'}}\n"
    )
    code, _, err = _run(capsys, "health", "export", "--format", "prometheus", "--input", str(fleet_file))
    assert code == 0, err
    assert f"sent 2 snapshot(s) to pushgateway {pushgateway.url}" in err
    text = httpx.get(f"{pushgateway.url}/metrics", timeout=5).text
    assert (
        'flow_node_health_score{instance="",instance_type="8xH100",job="flow-health",node="gpu-node-1"'
        in text
    )


def test_export_from_the_store(capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(timezone.utc)
    store = MetricsStore(config=load_config(os.environ))
    store.write_snapshots(
        [
            snapshot(task_id="task-a", node="n1", when=now - timedelta(hours=3)),
            snapshot(task_id="task-a", node="n1", when=now - timedelta(minutes=10)),
            snapshot(task_id="task-b", node="n2", when=now - timedelta(minutes=5)),
        ]
    )
    code, out, err = _run(
        capsys, "health", "export", "--format", "json", "--from-store", "--task", "task-a", "--hours", "1"
    )
    assert code == 0, err
    scores = next(m for m in orjson.loads(out)["metrics"] if m["name"] == "flow_node_health_score")
    assert [(s["labels"]["task_id"], s["labels"]["node"]) for s in scores["samples"]] == [("task-a", "n1")]


def test_sinks_lists_configured_sinks_and_validates(
    capsys: pytest.CaptureFixture[str], flow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DD_API_KEY", raising=False)
    config = flow_home / "config.yaml"
    config.write_text("health:\n  sinks:\n    datadog: {site: datadoghq.eu}\n    otlp: {encoding: json}\n")
    code, out, _ = _run(capsys, "health", "sinks")
    assert code == 0
    assert out.splitlines() == [
        "datadog          datadog      enabled   datadog https://api.datadoghq.eu/api/v2/series"
        "  api key: NOT SET",
        "otlp             otlp         enabled   otlp http://127.0.0.1:4318/v1/metrics",
    ]
    config.write_text("health:\n  sinks:\n    datadog: {sitee: datadoghq.eu}\n")
    code, _, err = _run(capsys, "health", "sinks")
    assert code == 2 and "health.sinks.datadog.sitee is not a known key" in err


def test_snapshot_file_round_trip_feeds_the_same_metrics(fleet_file: Path) -> None:
    from flow.cli.integrations_cmd import read_snapshot_file

    assert read_snapshot_file(fleet_file) == [
        Snapshot.from_json(line) for line in fleet_file.read_bytes().splitlines()
    ]


def test_live_sweep_without_gpu_tasks_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "health", "serve", "--listen", "127.0.0.1:0")
    assert code == 2 and "ERROR: no GPU tasks to check in" in err
    assert "HINT: add one with: flow tasks add" in err
    code, _, err = _run(capsys, "health", "export", "--format", "json")
    assert code == 2 and "no GPU tasks to check" in err
