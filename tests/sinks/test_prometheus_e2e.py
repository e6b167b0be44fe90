"""End to end with the real Debian binaries: `flow health serve` and the Pushgateway sink, scraped
by a real Prometheus every second, and the values read back with PromQL over the HTTP API.
The Grafana dashboard's every expression is run against that Prometheus too."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flow.health.sinks.base import SinkError
from flow.health.sinks.grafana import dashboard, dashboard_expressions
from flow.health.sinks.pushgateway import PushgatewaySink, grouping_path
from flow.health.sinks.settings import PushgatewaySettings, parse_sink_settings
from flow.health.snapshot import Snapshot

from .servers import (
    PUSHGATEWAY_TEST_BCRYPT,
    PUSHGATEWAY_TEST_PASSWORD,
    PUSHGATEWAY_TEST_USER,
    Server,
    _stop,
    _wait_ready,
    free_port,
    run_prometheus,
    run_pushgateway,
)
from .snapshots import fleet, snapshot


def _push(url: str, batch: list[Snapshot], job: str = "flow-health", *, username: str | None = None,
          password: str | None = None) -> None:
    section: dict[str, object] = {"url": url, "job": job}
    if username is not None:
        section["username"] = username
    env = {"FLOW_PUSHGATEWAY_PASSWORD": password} if password is not None else {}
    settings = parse_sink_settings("pushgateway", section, env)
    assert isinstance(settings, PushgatewaySettings)

    async def main() -> None:
        sink = PushgatewaySink(settings)
        try:
            await sink.send(batch)
        finally:
            await sink.aclose()

    asyncio.run(main())


def _gateway_samples(
    url: str, name: str, auth: httpx.Auth | None = None
) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{url}/metrics", timeout=5, auth=auth).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    }


def test_pushgateway_groups_by_job_task_and_node(pushgateway: Server) -> None:
    _push(pushgateway.url, fleet(2))
    temps = _gateway_samples(pushgateway.url, "flow_gpu_temperature_celsius")
    assert len(temps) == 4
    labels = dict(next(k for k, v in temps.items() if v == 61.0 and ("gpu", "0") in k))
    assert (labels["job"], labels["task_id"], labels["node"]) == ("flow-health", "task-abc123", "gpu-node-1")


def test_a_put_replaces_the_nodes_group(pushgateway: Server) -> None:
    _push(pushgateway.url, [snapshot(node="n1", gpus=2), snapshot(node="n2", gpus=2)])
    _push(pushgateway.url, [snapshot(node="n1", gpus=1, temp_c=80.0)])  # GPU 1 went away on n1
    temps = {
        (dict(k)["node"], dict(k)["gpu"]): v
        for k, v in _gateway_samples(pushgateway.url, "flow_gpu_temperature_celsius").items()
    }
    assert temps == {("n1", "0"): 80.0, ("n2", "0"): 60.0, ("n2", "1"): 60.0}


def test_grouping_values_with_slashes_and_spaces_round_trip(pushgateway: Server) -> None:
    assert grouping_path("j", "t/1", "") == "/metrics/job/j/task_id@base64/dC8x/node@base64/="
    _push(pushgateway.url, [snapshot(task_id="team/a b", node="rack 1/node")])
    scores = _gateway_samples(pushgateway.url, "flow_node_health_score")
    (labels,) = [dict(k) for k in scores]
    assert (labels["task_id"], labels["node"]) == ("team/a b", "rack 1/node")


def test_a_gateway_behind_basic_auth_takes_the_password_from_the_environment(tmp_path: Path) -> None:
    user, password = PUSHGATEWAY_TEST_USER, PUSHGATEWAY_TEST_PASSWORD
    with run_pushgateway(tmp_path, basic_auth=(user, PUSHGATEWAY_TEST_BCRYPT)) as gateway:
        _push(gateway.url, [snapshot(node="n1")], username=user, password=password)
        scores = _gateway_samples(gateway.url, "flow_node_health_score", httpx.BasicAuth(user, password))
        assert [dict(k)["node"] for k in scores] == ["n1"]

        # Without the password, or with a wrong one, the gateway refuses: not retryable (a
        # retry cannot fix credentials), the status kept, the password never in the message.
        for wrong in (None, "not-" + password):
            with pytest.raises(SinkError) as info:
                _push(gateway.url, [snapshot(node="n2")], username=user if wrong else None, password=wrong)
            assert info.value.status == 401 and not info.value.retryable
            assert password not in str(info.value)
        assert httpx.get(f"{gateway.url}/metrics", timeout=5).status_code == 401


def test_an_unreachable_gateway_is_retryable() -> None:
    with pytest.raises(SinkError) as info:
        _push(f"http://127.0.0.1:{free_port()}", [snapshot()])
    assert info.value.retryable and info.value.status is None


@pytest.fixture
def serve_cli(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """`flow health serve --input FILE` as a real subprocess on a free port."""
    snapshots = tmp_path / "fleet.jsonl"
    snapshots.write_bytes(b"".join(s.to_json() + b"\n" for s in fleet(3)))
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flow.cli.main",
                "health",
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--interval",
                "1",
                "--input",
                str(snapshots),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/metrics", proc, log)
        yield f"127.0.0.1:{port}", snapshots, proc
    finally:
        _stop(proc)


@pytest.mark.slow
def test_serve_cli_exits_cleanly_on_sigterm(serve_cli: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    address, _, proc = serve_cli
    text = httpx.get(f"http://{address}/metrics", timeout=5).text
    temps = {
        s.labels["node"] + "/" + s.labels["gpu"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "flow_gpu_temperature_celsius"
    }
    assert temps == {
        "gpu-node-0/0": 60.0,
        "gpu-node-0/1": 60.0,
        "gpu-node-1/0": 61.0,
        "gpu-node-1/1": 61.0,
        "gpu-node-2/0": 62.0,
        "gpu-node-2/1": 62.0,
    }
    proc.terminate()
    assert proc.wait(timeout=15) == 0


def _dashboard_queries() -> list[str]:
    exprs = []
    for expr in dashboard_expressions(dashboard()):
        expr = expr.replace("$task", ".*").replace("$node", ".*")
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", expr)
        exprs.append(f"count by ({match.group(2)}) ({match.group(1)})" if match else expr)
    return exprs


@pytest.mark.slow
def test_prometheus_scrapes_exporter_and_gateway_and_answers_promql(
    tmp_path: Path, serve_cli: tuple[str, Path, subprocess.Popen[bytes]]
) -> None:
    exporter, snapshots_file, _ = serve_cli
    with run_pushgateway(tmp_path) as gateway:
        _push(gateway.url, [snapshot(task_id="task-pushed", node="edge-1", temp_c=71.0)])
        targets = {"flow-exporter": exporter, "pushgateway": f"127.0.0.1:{gateway.port}"}
        with run_prometheus(tmp_path, targets, honor_labels=("pushgateway",)) as prom:
            (temp,) = prom.wait_for(
                'flow_gpu_temperature_celsius{job="flow-exporter", node="gpu-node-2", gpu="1"}'
            )
            assert float(temp["value"][1]) == 62.0
            (pushed,) = prom.wait_for(
                'flow_gpu_temperature_celsius{job="flow-health", node="edge-1", gpu="0"}'
            )
            assert float(pushed["value"][1]) == 71.0
            assert pushed["metric"]["task_id"] == "task-pushed"  # honor_labels keeps the pushed labels
            (success,) = prom.wait_for('flow_sweep_success{job="flow-exporter"}')
            assert success["value"][1] == "1"
            healthy = prom.wait_for('count(flow_node_status{status="healthy"} == 1)')
            assert healthy[0]["value"][1] == "4"  # three served, one pushed

            # The exporter re-reads its input every interval: a hotter fleet shows up.
            snapshots_file.write_bytes(
                b"".join(s.to_json() + b"\n" for s in [snapshot(node="gpu-node-2", temp_c=88.0)])
            )
            prom.wait_for(
                'flow_gpu_temperature_celsius{job="flow-exporter", node="gpu-node-2", gpu="1"} == 88',
                timeout_s=30,
            )
            prom.wait_for('flow_node_status{job="flow-exporter", node="gpu-node-2", status="critical"} == 1')

            # Every dashboard expression is valid PromQL, and the core panels have data.
            answers = {expr: prom.query(expr) for expr in _dashboard_queries()}
            for expr in (
                'flow_gpu_temperature_celsius{task_id=~".*", node=~".*"}',
                'flow_node_health_score{task_id=~".*", node=~".*"}',
                "count by (task_id) (flow_node_status)",
            ):
                assert answers[expr], expr
