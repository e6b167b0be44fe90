"""Remote write into a real Prometheus (`--web.enable-remote-write-receiver`): the samples land
with the snapshot's time and values, the dashboard works on them, a refused batch never wedges
delivery, and the collector streams to it with its own durable cursor."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from collector.daemon import Gpud, InProcessDaemon, stored_ids, wait_for
from flow.errors import ConfigError
from flow.health.collector import CollectorSettings
from flow.health.sinks.remote_write import RemoteWriteSink, encode_write_request, write_request_series
from flow.health.sinks.settings import RemoteWriteSettings, parse_sink_settings
from flow.health.sinks.vocabulary import metric_families
from flow.health.streaming.sink_bridge import SinkBridge
from sinks.servers import PrometheusServer, run_prometheus
from sinks.snapshots import fleet, snapshot
from sinks.test_prometheus_e2e import _dashboard_queries


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    with run_prometheus(tmp_path, {}, remote_write_receiver=True) as prom:
        yield prom


def sink(prom: PrometheusServer, **changes: object) -> RemoteWriteSink:
    settings = RemoteWriteSettings(name="rw", type="remote_write", url=f"{prom.url}/api/v1/write", **changes)  # type: ignore[arg-type]
    return RemoteWriteSink(settings)


async def send(rw: RemoteWriteSink, batch: list) -> None:  # type: ignore[type-arg]
    try:
        await rw.send(batch)
    finally:
        await rw.aclose()


def test_samples_land_with_the_snapshots_time_values_and_labels(prometheus: PrometheusServer) -> None:
    when = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=30)
    batch = fleet(3, when=when)
    asyncio.run(send(sink(prometheus, labels=(("cluster", "west"),)), batch))
    (temp,) = prometheus.wait_for('flow_gpu_temperature_celsius{node="gpu-node-2", gpu="1"}')
    assert float(temp["value"][1]) == 62.0
    assert temp["metric"]["cluster"] == "west" and temp["metric"]["task_id"] == "task-abc123"
    assert temp["metric"]["instance_type"] == "8xH100"
    # Stamped with the snapshot's time, not the receiver's.
    at = prometheus.query('timestamp(flow_gpu_temperature_celsius{node="gpu-node-2", gpu="1"})')
    assert float(at[0]["value"][1]) == when.timestamp()
    healthy = prometheus.query('count(flow_node_status{status="healthy"} == 1)')
    assert healthy[0]["value"][1] == "3"


def test_the_dashboard_works_on_remote_written_data(prometheus: PrometheusServer) -> None:
    asyncio.run(send(sink(prometheus), fleet(2)))
    prometheus.wait_for("flow_node_health_score")
    answers = {expr: prometheus.query(expr) for expr in _dashboard_queries()}
    for expr in ('flow_gpu_temperature_celsius{task_id=~".*", node=~".*"}',
                 'flow_node_health_score{task_id=~".*", node=~".*"}',
                 "count by (task_id) (flow_node_status)"):
        assert answers[expr], expr


def test_a_batch_refused_as_out_of_order_is_counted_and_delivery_goes_on(
        prometheus: PrometheusServer, caplog: pytest.LogCaptureFixture) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    asyncio.run(send(sink(prometheus), [snapshot(node="n1", when=now - timedelta(seconds=5))]))
    prometheus.wait_for('flow_node_health_score{node="n1"}')
    rw = sink(prometheus)
    with caplog.at_level(logging.WARNING):
        # A clock stepped back: older than what Prometheus holds for these series.
        asyncio.run(send(rw, [snapshot(node="n1", when=now - timedelta(seconds=60))]))
    assert rw.refused_samples > 0
    assert "refused a batch of 1 snapshot(s)" in caplog.text
    asyncio.run(send(sink(prometheus), [snapshot(node="n1", temp_c=77.0, when=now)]))
    prometheus.wait_for('flow_gpu_temperature_celsius{node="n1", gpu="0"} == 77')


def test_series_carry_sorted_labels_without_empty_values() -> None:
    s = snapshot(node="n1")
    series = write_request_series(metric_families([s, s]), (("cluster", "c"),))
    for labels, points in series:
        names = [k for k, _ in labels]
        assert names == sorted(names) and "__name__" in names
        assert all(v != "" for _, v in labels)
        assert [t for _, t in points] == sorted(t for _, t in points)
    assert encode_write_request(series)[:1] == b"\x0a"  # field 1, length-delimited


@pytest.mark.parametrize(("raw", "needle"), [
    ({"type": "remote_write"}, "health.sinks.rw.url is missing"),
    ({"type": "remote_write", "url": "http://prom.example/api/v1/write"}, "health.sinks.rw.url"),
    ({"type": "remote_write", "url": "https://p/api/v1/write", "labels": {"__name__": "x"}}, "label name"),
    ({"type": "remote_write", "url": "https://p/api/v1/write", "labels": {"node": "x"}}, "flow's own labels"),
    ({"type": "remote_write", "url": "https://p/api/v1/write", "token": "t"}, "FLOW_REMOTE_WRITE_TOKEN"),
])
def test_bad_settings_name_the_key(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_sink_settings("rw", raw, env={})
    assert needle in info.value.message


@pytest.mark.slow
def test_the_collector_streams_to_prometheus_losing_nothing_while_it_is_down(tmp_path: Path) -> None:
    gpud = Gpud(gpu_count=1)
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    try:
        with run_prometheus(prom_dir, {}, remote_write_receiver=True) as prom:
            url, port = prom.url, prom.port
        settings = CollectorSettings(
            task_id="task-rw", node="node-rw", interval_s=0.2, gpud_url=gpud.url, use_nvml=False,
            metrics_dir=tmp_path / "metrics", batch_size=5, backoff_min_s=0.05, backoff_max_s=0.3,
            send_timeout_s=2.0, shutdown_grace_s=2.0)
        rw = RemoteWriteSink(RemoteWriteSettings(name="prom", type="remote_write", url=f"{url}/api/v1/write"))
        daemon = InProcessDaemon(settings, sinks={"prom": SinkBridge(rw)}).start()
        try:  # Prometheus is down: the samples wait in the store
            wait_for(lambda: len(stored_ids(tmp_path / "metrics", "task-rw")) >= 5, what="a backlog")
            with run_prometheus(prom_dir, {}, remote_write_receiver=True, port=port) as prom:
                def all_there() -> bool:
                    stored = len(stored_ids(tmp_path / "metrics", "task-rw"))
                    got = prom.query('count_over_time(flow_node_scrape_success{node="node-rw"}[1h])')
                    return bool(got) and int(got[0]["value"][1]) >= stored
                wait_for(all_there, timeout=60, what="every stored sample in Prometheus")
        finally:
            daemon.stop()
        cursor = tmp_path / "metrics" / ".collector" / "stream-cursor-prom.json"
        assert cursor.exists()
    finally:
        gpud.close()
