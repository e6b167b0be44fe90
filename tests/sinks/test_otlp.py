"""OTLP/HTTP sink against a loopback receiver that decodes with opentelemetry-proto and checks shapes."""

from __future__ import annotations

import asyncio
import gzip
import logging
from typing import Any

import pytest
from aiohttp import web

pytest.importorskip("opentelemetry.proto", reason="the otlp extra (opentelemetry-proto) is not installed")

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from flow.health.sinks.base import SinkError
from flow.health.sinks.otlp import OtlpSink
from flow.health.sinks.settings import OtlpSettings, parse_sink_settings
from flow.health.sinks.vocabulary import snapshot_families, spec
from flow.health.snapshot import Snapshot

from .servers import receiver
from .snapshots import fleet, snapshot


class OtlpReceiver:
    """Accepts POST /v1/metrics in either encoding and checks every metric against the vocabulary."""

    def __init__(self, *, status: int = 200, body: bytes = b"", content_type: str = "") -> None:
        self.messages: list[ExportMetricsServiceRequest] = []
        self.sizes: list[int] = []
        self.headers: list[dict[str, str]] = []
        self.errors: list[str] = []
        self.status, self.body, self.content_type = status, body, content_type

    async def __call__(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.sizes.append(len(raw))
        self.headers.append(dict(request.headers))
        body = gzip.decompress(raw) if request.headers.get("Content-Encoding") == "gzip" else raw
        message = ExportMetricsServiceRequest()
        try:
            assert request.method == "POST" and request.path == "/v1/metrics"
            if request.headers["Content-Type"] == "application/json":
                # Strict: unknown fields or wrong value types fail, as a collector would refuse them.
                json_format.Parse(body, message)
            else:
                assert request.headers["Content-Type"] == "application/x-protobuf"
                message.ParseFromString(body)
            _check(message)
        except (AssertionError, KeyError, json_format.ParseError) as exc:
            self.errors.append(repr(exc))
            return web.Response(status=400, text=str(exc))
        self.messages.append(message)
        if self.status != 200 or self.body:
            return web.Response(status=self.status, body=self.body, content_type=self.content_type or None)
        return web.Response(
            body=ExportMetricsServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )


def _check(message: ExportMetricsServiceRequest) -> None:
    assert message.resource_metrics
    for rm in message.resource_metrics:
        resource = {a.key: a.value.string_value for a in rm.resource.attributes}
        assert resource["service.name"] == "flow-health" and resource["host.name"]
        (scope,) = rm.scope_metrics
        assert scope.scope.name == "flow.health"
        for metric in scope.metrics:
            metric_spec = spec(metric.name)
            kind = metric.WhichOneof("data")
            if metric_spec.type.value == "counter":
                assert kind == "sum" and metric.sum.is_monotonic
                assert (
                    metric.sum.aggregation_temporality
                    == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                )
                points = metric.sum.data_points
            else:
                assert kind == "gauge"
                points = metric.gauge.data_points
            assert metric.unit and metric.description
            for point in points:
                assert point.time_unix_nano > 1_600_000_000 * 10**9
                assert point.WhichOneof("value") == "as_double"
                assert tuple(a.key for a in point.attributes) == metric_spec.label_names


def _points(
    messages: list[ExportMetricsServiceRequest],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for message in messages:
        for rm in message.resource_metrics:
            for metric in rm.scope_metrics[0].metrics:
                data = metric.sum if metric.WhichOneof("data") == "sum" else metric.gauge
                for p in data.data_points:
                    labels = tuple((a.key, a.value.string_value) for a in p.attributes)
                    out[(metric.name, labels)] = p.as_double
    return out


def _expected(batch: list[Snapshot]) -> int:
    return sum(len(f.samples) for s in batch for f in snapshot_families(s))


def _settings(url: str, env: dict[str, str] | None = None, **raw: Any) -> OtlpSettings:
    settings = parse_sink_settings("otlp", {"endpoint": url + "/v1/metrics", **raw}, env or {})
    assert isinstance(settings, OtlpSettings)
    return settings


async def _send(
    rx: OtlpReceiver, batch: list[Snapshot], env: dict[str, str] | None = None, **raw: Any
) -> None:
    async with receiver(rx) as url:
        sink = OtlpSink(_settings(url, env, **raw))
        try:
            await sink.send(batch)
        finally:
            await sink.aclose()


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
@pytest.mark.parametrize("gzip_on", [True, False])
def test_both_encodings_deliver_every_point_in_otlp_shape(encoding: str, gzip_on: bool) -> None:
    rx = OtlpReceiver()
    batch = fleet(3)
    asyncio.run(_send(rx, batch, encoding=encoding, gzip=gzip_on))
    assert rx.errors == [] and len(rx.messages) == 1
    assert rx.headers[0].get("Content-Encoding") == ("gzip" if gzip_on else None)
    points = _points(rx.messages)
    assert len(points) == _expected(batch)
    key = (
        "flow_gpu_temperature_celsius",
        (
            ("task_id", "task-abc123"),
            ("task_name", "task-abc123-name"),
            ("node", "gpu-node-2"),
            ("instance_type", "8xH100"),
            ("gpu", "1"),
            ("uuid", "GPU-00000001-aaaa-bbbb-cccc-000000000000"),
            ("model", "NVIDIA H100 80GB HBM3"),
        ),
    )
    assert points[key] == 62.0
    units = {m.name: m.unit for m in rx.messages[0].resource_metrics[0].scope_metrics[0].metrics}
    assert units["flow_gpu_temperature_celsius"] == "Cel" and units["flow_gpu_memory_used_bytes"] == "By"


def test_json_body_uses_otlp_json_conventions() -> None:
    sink = OtlpSink(_settings("http://127.0.0.1:4318", encoding="json"))
    (request,) = sink.encode([snapshot()])
    text = request.body.decode()
    assert '"resourceMetrics"' in text and '"timeUnixNano":"' in text  # int64 as a decimal string
    assert '"aggregationTemporality":2' in text  # enums as integers


def test_batches_are_split_under_max_request_bytes() -> None:
    rx = OtlpReceiver()
    batch = fleet(8, gpus=8)
    asyncio.run(_send(rx, batch, gzip=False, max_request_bytes=60_000))
    assert rx.errors == [] and len(rx.messages) > 2
    assert all(size <= 60_000 for size in rx.sizes)
    assert len(_points(rx.messages)) == _expected(batch)
    nodes = [rm.resource.attributes[2].value.string_value for m in rx.messages for rm in m.resource_metrics]
    assert nodes == [s.node for s in batch]  # batch order, each snapshot once


def test_a_snapshot_larger_than_the_limit_is_not_retryable() -> None:
    sink = OtlpSink(_settings("http://127.0.0.1:4318", gzip=False, max_request_bytes=1024))
    with pytest.raises(SinkError) as info:
        sink.encode([snapshot()])
    assert not info.value.retryable and "over the request size limit" in info.value.message


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (500, False), (429, True), (502, True), (503, True), (504, True)]
)
def test_retryable_statuses_follow_the_otlp_spec(status: int, retryable: bool) -> None:
    with pytest.raises(SinkError) as info:
        asyncio.run(_send(OtlpReceiver(status=status), [snapshot()]))
    assert (info.value.status, info.value.retryable) == (status, retryable)


def test_headers_from_env_are_sent_but_never_shown() -> None:
    rx = OtlpReceiver()
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=t0ps3cret"}
    asyncio.run(_send(rx, [snapshot()], env))
    assert rx.headers[0]["api-key"] == "t0ps3cret"
    (request,) = OtlpSink(_settings("http://127.0.0.1:4318", env)).encode([snapshot()])
    assert "api-key: <redacted>" in request.describe() and "t0ps3cret" not in request.describe()


def test_partial_success_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flow.sinks.otlp")
    body = b'{"partialSuccess": {"rejectedDataPoints": "3", "errorMessage": "too old"}}'
    asyncio.run(
        _send(OtlpReceiver(body=body, content_type="application/json"), [snapshot()], encoding="json")
    )
    assert "rejected 3 data point(s): too old" in caplog.text


def test_dry_run_shows_protobuf_as_json_of_the_same_message() -> None:
    sink = OtlpSink(_settings("http://127.0.0.1:4318"))
    (request,) = sink.encode([snapshot()])
    shown = ExportMetricsServiceRequest()
    json_format.Parse(sink.json_view(request), shown)
    assert shown.SerializeToString() == request.body
