"""Datadog sink against a loopback receiver that checks the v2 series payload and its limits."""

from __future__ import annotations

import asyncio
import gzip
import logging
from typing import Any

import orjson
import pytest
from aiohttp import web

from flow.health.sinks.base import SinkError
from flow.health.sinks.datadog import MAX_PAYLOAD_BYTES, MAX_UNCOMPRESSED_BYTES, DatadogSink
from flow.health.sinks.settings import DatadogSettings, parse_sink_settings
from flow.health.sinks.vocabulary import ALL_METRICS, snapshot_families
from flow.health.snapshot import Snapshot

from .servers import free_port, receiver
from .snapshots import fleet, snapshot

KEY = "0123456789abcdef-secret-key"
NAMES = {m.name for m in ALL_METRICS}


class DatadogReceiver:
    """Accepts /api/v2/series like Datadog, asserting the documented shape and limits."""

    def __init__(self, *, fail: dict[int, tuple[int, dict[str, str]]] | None = None) -> None:
        self.series: list[dict[str, Any]] = []
        self.requests: list[tuple[int, int]] = []  # (wire bytes, uncompressed bytes)
        self.fail = fail or {}
        self.errors: list[str] = []

    async def __call__(self, request: web.Request) -> web.Response:
        number = len(self.requests) + 1
        try:
            raw = await request.read()
            assert request.method == "POST" and request.path == "/api/v2/series"
            assert request.headers["DD-API-KEY"] == KEY
            assert request.headers["Content-Type"] == "application/json"
            body = gzip.decompress(raw) if request.headers.get("Content-Encoding") == "gzip" else raw
            assert len(raw) <= MAX_PAYLOAD_BYTES, f"payload {len(raw)} > {MAX_PAYLOAD_BYTES}"
            assert len(body) < MAX_UNCOMPRESSED_BYTES, f"decompressed {len(body)} >= {MAX_UNCOMPRESSED_BYTES}"
            doc = orjson.loads(body)
            assert set(doc) == {"series"} and doc["series"]
            for entry in doc["series"]:
                assert entry["metric"] in NAMES
                assert entry["type"] == 3
                assert all(isinstance(t, str) and ":" in t for t in entry["tags"])
                (point,) = entry["points"]
                assert isinstance(point["timestamp"], int) and isinstance(point["value"], float)
                assert entry["resources"][0]["type"] == "host"
        except (AssertionError, KeyError, ValueError) as exc:
            self.errors.append(f"request {number}: {exc!r}")
            return web.json_response({"errors": [str(exc)]}, status=400)
        self.requests.append((len(raw), len(body)))
        if number in self.fail:
            status, headers = self.fail[number]
            return web.json_response({"errors": ["nope"]}, status=status, headers=headers)
        self.series.extend(doc["series"])
        return web.json_response({"errors": []}, status=202)


def _settings(url: str, **changes: Any) -> DatadogSettings:
    raw = {"endpoint": url, **changes}
    settings = parse_sink_settings("datadog", raw, {"DD_API_KEY": KEY})
    assert isinstance(settings, DatadogSettings)
    return settings


async def _send(rx: DatadogReceiver, batch: list[Snapshot], **kwargs: Any) -> DatadogSink:
    async with receiver(rx) as url:
        sink = DatadogSink(_settings(url, **kwargs.pop("settings", {})), **kwargs)
        try:
            await sink.send(batch)
        finally:
            await sink.aclose()
    return sink


def _expected_points(batch: list[Snapshot]) -> int:
    return sum(len(f.samples) for s in batch for f in snapshot_families(s))


def test_series_carry_name_tags_host_and_configured_tags() -> None:
    rx = DatadogReceiver()
    batch = fleet(2)
    asyncio.run(_send(rx, batch, settings={"tags": ["env:prod"]}))
    assert rx.errors == [] and len(rx.requests) == 1
    assert len(rx.series) == _expected_points(batch)
    temp = next(
        s
        for s in rx.series
        if s["metric"] == "flow_gpu_temperature_celsius"
        and "node:gpu-node-1" in s["tags"]
        and "gpu:1" in s["tags"]
    )
    assert temp["points"][0]["value"] == 61.0
    assert temp["points"][0]["timestamp"] == int(batch[1].timestamp.timestamp())
    assert temp["resources"] == [{"name": "gpu-node-1", "type": "host"}]
    assert {"task_id:task-abc123", "instance_type:8xH100", "model:NVIDIA H100 80GB HBM3", "env:prod"} <= set(
        temp["tags"]
    )


@pytest.mark.slow
def test_a_batch_over_5_mb_is_split_within_the_real_limits_in_order() -> None:
    rx = DatadogReceiver()
    batch = fleet(75, gpus=8)  # about 6 MB of series
    asyncio.run(_send(rx, batch))
    assert rx.errors == []
    assert len(rx.requests) >= 2
    assert max(body for _, body in rx.requests) > MAX_UNCOMPRESSED_BYTES * 0.8  # the limit was what split it
    assert len(rx.series) == _expected_points(batch)
    keys = [(s["metric"], tuple(s["tags"])) for s in rx.series]
    assert len(keys) == len(set(keys))  # nothing sent twice


def test_the_compressed_limit_splits_too() -> None:
    rx = DatadogReceiver()
    batch = fleet(6, gpus=8)
    asyncio.run(_send(rx, batch, max_payload_bytes=4_000))
    assert rx.errors == [] and len(rx.requests) > 1
    assert all(wire <= 4_000 for wire, _ in rx.requests)
    assert len(rx.series) == _expected_points(batch)


def test_without_gzip_each_body_stays_under_512_kb() -> None:
    rx = DatadogReceiver()
    batch = fleet(12, gpus=8)
    asyncio.run(_send(rx, batch, settings={"gzip": False}))
    assert rx.errors == [] and len(rx.requests) > 1
    assert all(wire == body <= MAX_PAYLOAD_BYTES for wire, body in rx.requests)
    assert len(rx.series) == _expected_points(batch)


def test_dry_run_bodies_are_the_bytes_sent() -> None:
    bodies: list[bytes] = []

    async def capture(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response({}, status=202)

    async def main() -> list[bytes]:
        async with receiver(capture) as url:
            sink = DatadogSink(_settings(url))
            batch = fleet(2)
            expected = [r.payload for r in sink.encode(batch)]
            await sink.send(batch)
            await sink.aclose()
        return expected

    assert asyncio.run(main()) == bodies


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after"),
    [
        (400, {}, False, None),
        (403, {}, False, None),
        (413, {}, False, None),
        (429, {"Retry-After": "3"}, True, 3.0),
        (500, {}, True, None),
        (503, {}, True, None),
    ],
)
def test_errors_are_classified(
    status: int,
    headers: dict[str, str],
    retryable: bool,
    retry_after: float | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rx = DatadogReceiver(fail={1: (status, headers)})
    with pytest.raises(SinkError) as info:
        asyncio.run(_send(rx, [snapshot()]))
    err = info.value
    assert (err.status, err.retryable, err.retry_after_s, err.delivered) == (
        status,
        retryable,
        retry_after,
        0,
    )
    assert f"answered {status}" in err.message and err.sink == "datadog"
    assert KEY not in err.message and KEY not in repr(err)
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_a_failure_midway_reports_the_snapshots_already_delivered() -> None:
    rx = DatadogReceiver(fail={2: (503, {})})
    batch = fleet(6, gpus=8)
    requests = DatadogSink(_settings("https://api.datadoghq.com"), max_payload_bytes=4_000).encode(batch)
    assert len(requests) > 2
    assert [r.delivered for r in requests] == sorted(r.delivered for r in requests)
    assert requests[-1].delivered == len(batch)
    with pytest.raises(SinkError) as info:
        asyncio.run(_send(rx, batch, max_payload_bytes=4_000))
    assert info.value.retryable and 0 < info.value.delivered == requests[0].delivered < len(batch)


def test_unreachable_endpoint_is_retryable() -> None:
    port = free_port()  # nothing listens there

    async def main() -> None:
        sink = DatadogSink(_settings(f"http://127.0.0.1:{port}", timeout=2))
        try:
            await sink.send([snapshot()])
        finally:
            await sink.aclose()

    with pytest.raises(SinkError) as info:
        asyncio.run(main())
    assert info.value.retryable and info.value.status is None
    assert f"127.0.0.1:{port}" in info.value.message


def test_no_key_is_not_retryable_and_says_how_to_set_it() -> None:
    settings = parse_sink_settings("datadog", {}, {})
    assert isinstance(settings, DatadogSettings)
    with pytest.raises(SinkError) as info:
        asyncio.run(DatadogSink(settings).send([snapshot()]))
    assert not info.value.retryable
    assert info.value.hint is not None and "DD_API_KEY" in info.value.hint


def test_site_decides_the_url() -> None:
    eu = parse_sink_settings("datadog", {"site": "datadoghq.eu"}, {})
    assert isinstance(eu, DatadogSettings)
    assert DatadogSink(eu).url == "https://api.datadoghq.eu/api/v2/series"
