"""The Prometheus exporter: sweeps, the latest verdicts at /metrics over real HTTP, sweep health."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from flow.errors import ConfigError
from flow.health.sinks.prometheus import (
    PrometheusExporter,
    parse_listen,
    serve_prometheus,
    start_metrics_server,
)
from flow.health.snapshot import Snapshot, XidError

from .snapshots import fleet, snapshot


def _values(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _one(text: str, name: str, **labels: str) -> float:
    matches = [v for k, v in _values(text, name).items() if labels.items() <= dict(k).items()]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


class Sweeps:
    """A sweep stub: returns the queued results in turn (an exception is raised)."""

    def __init__(self, *results: Sequence[Snapshot] | BaseException) -> None:
        self.results = list(results)
        self.calls = 0

    async def __call__(self) -> Sequence[Snapshot]:
        self.calls += 1
        result = self.results[min(self.calls, len(self.results)) - 1]
        if isinstance(result, BaseException):
            raise result
        return result


async def _scrape(exporter: PrometheusExporter, accept: str = "") -> httpx.Response:
    server = await start_metrics_server(exporter.registry, host="127.0.0.1", port=0)
    async with server, httpx.AsyncClient() as client:
        return await client.get(server.url, headers={"Accept": accept} if accept else {})


def test_scrape_serves_the_latest_sweep_and_sweep_metrics() -> None:
    async def main() -> str:
        exporter = PrometheusExporter(Sweeps(fleet(3)), interval_s=30)
        assert await exporter.sweep_once()
        response = await _scrape(exporter)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    text = asyncio.run(main())
    assert _one(text, "flow_gpu_temperature_celsius", node="gpu-node-2", gpu="1") == 62.0
    assert _one(text, "flow_node_health_score", node="gpu-node-0") == 100.0
    assert _one(text, "flow_node_status", node="gpu-node-0", status="healthy") == 1.0
    assert _one(text, "flow_node_scrape_success", node="gpu-node-1") == 1.0
    assert _one(text, "flow_sweep_success") == 1.0
    assert _one(text, "flow_sweep_nodes") == 3.0
    assert _one(text, "flow_sweeps_total", result="ok") == 1.0
    assert _one(text, "flow_sweep_duration_seconds") >= 0.0
    assert _one(text, "flow_sweep_last_success_timestamp_seconds") > 0


def test_a_failed_sweep_keeps_serving_the_last_good_one() -> None:
    async def main() -> tuple[str, PrometheusExporter]:
        exporter = PrometheusExporter(Sweeps(fleet(2), RuntimeError("ssh exploded")), interval_s=30)
        assert await exporter.sweep_once()
        assert not await exporter.sweep_once()
        return (await _scrape(exporter)).text, exporter

    text, exporter = asyncio.run(main())
    assert str(exporter.last_error) == "ssh exploded"
    assert _one(text, "flow_sweep_success") == 0.0
    assert _one(text, "flow_sweeps_total", result="error") == 1.0
    assert _one(text, "flow_sweeps_total", result="ok") == 1.0
    assert _one(text, "flow_gpu_temperature_celsius", node="gpu-node-1", gpu="0") == 61.0


def test_a_hung_sweep_is_abandoned_at_its_timeout() -> None:
    async def hang() -> Sequence[Snapshot]:
        await asyncio.sleep(3600)
        return []

    async def main() -> bool:
        exporter = PrometheusExporter(hang, interval_s=30, sweep_timeout_s=0.2)
        return await exporter.sweep_once()

    start = time.monotonic()
    assert asyncio.run(main()) is False
    assert time.monotonic() - start < 10  # the deadline plus generous slack, not hours


def test_before_the_first_sweep_only_the_counter_is_served() -> None:
    text = asyncio.run(_scrape(PrometheusExporter(Sweeps([]), interval_s=30))).text
    assert _values(text, "flow_sweep_success") == {}
    assert _one(text, "flow_sweeps_total", result="ok") == 0.0


def test_run_sweeps_every_interval_until_stopped() -> None:
    sweeps = Sweeps(fleet(1))

    async def main() -> None:
        exporter = PrometheusExporter(sweeps, interval_s=0.01)
        await exporter.run(sweeps=3)
        stop = asyncio.Event()
        task = asyncio.create_task(exporter.run(stop))
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert sweeps.calls >= 4


def test_only_the_newest_snapshot_of_a_node_is_served() -> None:
    old = snapshot(node="n", temp_c=50.0)
    new = snapshot(node="n", temp_c=70.0, when=old.timestamp + timedelta(minutes=1))

    async def main() -> str:
        exporter = PrometheusExporter(Sweeps([new, old]), interval_s=30)
        await exporter.sweep_once()
        return (await _scrape(exporter)).text

    text = asyncio.run(main())
    assert _one(text, "flow_gpu_temperature_celsius", node="n", gpu="0") == 70.0


def test_openmetrics_is_served_when_asked_and_is_valid() -> None:
    async def main() -> httpx.Response:
        exporter = PrometheusExporter(Sweeps(fleet(1)), interval_s=30)
        await exporter.sweep_once()
        return await _scrape(exporter, accept="application/openmetrics-text; version=1.0.0")

    response = asyncio.run(main())
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(response.text)}  # raises on invalid exposition
    assert families["flow_gpu_temperature_celsius"].unit == "celsius"
    assert families["flow_gpu_ecc_errors"].type == "counter"


def test_collector_serves_its_own_node_from_a_provider() -> None:
    current = [snapshot(node="self", temp_c=55.0)]

    async def main() -> tuple[str, str]:
        server = await serve_prometheus(lambda: current, host="127.0.0.1", port=0)
        try:
            async with httpx.AsyncClient() as client:
                first = (await client.get(server.url)).text
                current[0] = snapshot(node="self", temp_c=77.0)
                second = (await client.get(server.url)).text
        finally:
            await server.aclose()
        return first, second

    first, second = asyncio.run(main())
    assert _one(first, "flow_gpu_temperature_celsius", node="self", gpu="0") == 55.0
    assert _one(second, "flow_gpu_temperature_celsius", node="self", gpu="0") == 77.0
    assert _values(second, "flow_sweep_success") == {}  # the collector has no sweeps


def test_a_busy_port_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        async def main() -> None:
            exporter = PrometheusExporter(Sweeps([]), interval_s=30)
            await start_metrics_server(exporter.registry, host="127.0.0.1", port=port)

        with pytest.raises(ConfigError, match=rf"--listen=127.0.0.1:{port}: cannot listen there"):
            asyncio.run(main())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:0", ("::1", 0)),
        (":9464", ("0.0.0.0", 9464)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text", ["9464", "host:", "host:http", "1.2.3.4:70000", "::1:9464", "[::1:9464", "a b:1"]
)
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match=r"allowed: HOST:PORT"):
        parse_listen(text)


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s=0"):
        PrometheusExporter(Sweeps([]), interval_s=0)


def test_bodies_are_rendered_once_per_sweep_and_gzipped_on_request() -> None:
    renders = []

    class Counting(PrometheusExporter):
        def render(self, *, openmetrics: bool = False) -> bytes:
            renders.append(openmetrics)
            return super().render(openmetrics=openmetrics)

    async def main() -> list[httpx.Response]:
        exporter = Counting(Sweeps(fleet(2), fleet(3)), interval_s=30)
        await exporter.sweep_once()
        server = await exporter.serve(host="127.0.0.1", port=0)
        async with server, httpx.AsyncClient() as client:
            first = await client.get(server.url, headers={"Accept-Encoding": "gzip"})
            second = await client.get(server.url, headers={"Accept-Encoding": "gzip"})
            assert renders == [False]
            await exporter.sweep_once()
            third = await client.get(server.url, headers={"Accept-Encoding": "identity"})
            assert renders == [False, False]
        return [first, second, third]

    first, second, third = asyncio.run(main())
    assert first.headers["content-encoding"] == "gzip" and "content-encoding" not in third.headers
    assert first.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert first.text == second.text
    assert _one(first.text, "flow_sweep_nodes") == 2.0 and _one(third.text, "flow_sweep_nodes") == 3.0


def _parsed(
    text: str, parser: Callable[[str], Iterable[Any]]
) -> tuple[set[tuple[str, str, str, str]], set[Any]]:
    families = {(f.name, f.type, f.unit, f.documentation) for f in parser(text)}
    samples = {(s.name, tuple(sorted(s.labels.items())), s.value) for f in parser(text) for s in f.samples}
    return families, samples


@pytest.mark.parametrize("openmetrics", [False, True])
def test_fast_writer_says_exactly_what_prometheus_client_says(openmetrics: bool) -> None:
    hot = snapshot(
        node='odd "name"\\x',
        temp_c=90.0,
        xids=(XidError(code=79, gpu_index=0, xid_class="fatal"),),
        gpu_changes={"throttle_reasons": ("hw_slowdown", "gpu_idle")},
    )

    async def main() -> tuple[bytes, bytes]:
        exporter = PrometheusExporter(
            Sweeps([*fleet(2), hot, snapshot(node="down", reachable=False)]), interval_s=30
        )
        await exporter.sweep_once()
        reference = (generate_openmetrics if openmetrics else generate_latest)(exporter.registry)
        return exporter.render(openmetrics=openmetrics), reference

    fast, reference = asyncio.run(main())
    parser = parse_openmetrics if openmetrics else text_string_to_metric_families
    fast_families, fast_samples = _parsed(fast.decode(), parser)
    ref_families, ref_samples = _parsed(reference.decode(), parser)
    assert fast_samples == ref_samples and len(fast_samples) > 200
    assert fast_families == ref_families
