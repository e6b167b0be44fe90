"""OTLP/HTTP metrics: `POST <endpoint>/v1/metrics`, protobuf (default) or JSON encoding.

One builder produces the ExportMetricsServiceRequest in OTLP's JSON shape (lowerCamelCase
keys, int64 as decimal strings, enums as integers, as the OTLP spec requires of JSON). The
JSON encoding sends it as is; the protobuf encoding parses that same document into
opentelemetry-proto's message (the optional extra `flow-health[otlp]`) and serialises it,
so the two encodings cannot drift apart and every JSON body is checked against the schema.

Mapping: one ResourceMetrics per snapshot (resource attributes `service.name`, `host.name`
= node, `flow.task_id`), one ScopeMetrics (`flow.health`), gauges as Gauge, counters as a
monotonic cumulative Sum. Every label, node labels included, is also a data-point attribute,
so a collector exporting to Prometheus produces the same series as `flow health serve`.
Units are UCUM (`Cel`, `W`, `By`, `Hz`, `s`, `%`, `By/s`, `1`).

Retries follow the OTLP spec: only 429, 502, 503, 504 and transport failures are retryable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from flow import __version__
from flow.errors import ConfigError
from flow.health.sinks.base import EncodedRequest
from flow.health.sinks.batching import pack_requests
from flow.health.sinks.http import HttpSender, gzip_body
from flow.health.sinks.settings import OtlpSettings
from flow.health.sinks.vocabulary import MetricType, snapshot_families
from flow.health.snapshot import Snapshot
from flow.secrets import redact_url

__all__ = [
    "OTLP_RETRYABLE_STATUSES",
    "OtlpSink",
    "otlp_request_document",
    "otlp_resource_metrics",
    "require_otlp_proto",
]

log = logging.getLogger("flow.sinks.otlp")

OTLP_RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
AGGREGATION_TEMPORALITY_CUMULATIVE = 2
EXTRA_HINT = "pip install 'flow-health[otlp]'"
_SCOPE = {"name": "flow.health", "version": __version__}
_UCUM = {
    "celsius": "Cel",
    "watts": "W",
    "bytes": "By",
    "hertz": "Hz",
    "seconds": "s",
    "percent": "%",
    "bytes_per_second": "By/s",
}


def require_otlp_proto() -> Any:
    """The ExportMetricsServiceRequest class, or ConfigError naming the extra to install."""
    try:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )
    except ImportError:
        raise ConfigError(
            "the OTLP sink's protobuf encoding needs opentelemetry-proto, which is not "
            "installed (or set encoding: json)",
            hint=EXTRA_HINT,
        ) from None
    return ExportMetricsServiceRequest


def _attr(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def otlp_resource_metrics(snapshot: Snapshot, *, service_name: str = "flow-health") -> dict[str, Any]:
    """One snapshot as an OTLP ResourceMetrics (JSON shape)."""
    resource = [_attr("service.name", service_name), _attr("flow.task_id", snapshot.task_id)]
    if snapshot.node:
        resource.append(_attr("host.name", snapshot.node))
    metrics: list[dict[str, Any]] = []
    for family in snapshot_families(snapshot):
        metric = family.spec
        points = [
            {
                "attributes": [_attr(k, v) for k, v in sample.labels],
                "timeUnixNano": str(int(sample.timestamp.timestamp() * 1_000_000_000)),
                "asDouble": sample.value,
            }
            for sample in family.samples
        ]
        entry: dict[str, Any] = {
            "name": metric.name,
            "description": metric.help,
            "unit": _UCUM.get(metric.unit, "1"),
        }
        if metric.type is MetricType.COUNTER:
            entry["sum"] = {
                "dataPoints": points,
                "aggregationTemporality": AGGREGATION_TEMPORALITY_CUMULATIVE,
                "isMonotonic": True,
            }
        else:
            entry["gauge"] = {"dataPoints": points}
        metrics.append(entry)
    return {"resource": {"attributes": resource}, "scopeMetrics": [{"scope": _SCOPE, "metrics": metrics}]}


def otlp_request_document(resource_metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """An ExportMetricsServiceRequest in OTLP's JSON shape."""
    return {"resourceMetrics": list(resource_metrics)}


class OtlpSink:
    """Sends batches to an OTLP/HTTP metrics endpoint; `encode()` shows the exact bodies."""

    def __init__(self, settings: OtlpSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = settings.name
        self.settings = settings
        self.destination = f"otlp {redact_url(settings.endpoint)}"
        self._proto = require_otlp_proto() if settings.encoding == "protobuf" else None
        self._http = HttpSender(
            sink=self.name,
            timeout_s=settings.timeout_s,
            transport=transport,
            retryable=lambda status: status in OTLP_RETRYABLE_STATUSES,
        )

    def _body(self, resource_metrics: list[dict[str, Any]]) -> bytes:
        document = otlp_request_document(resource_metrics)
        if self._proto is None:
            return orjson.dumps(document)
        from google.protobuf import json_format

        return bytes(json_format.ParseDict(document, self._proto()).SerializeToString())

    def _request(self, resource_metrics: list[dict[str, Any]], delivered: int) -> EncodedRequest:
        body = self._body(resource_metrics)
        content_type = "application/x-protobuf" if self._proto is not None else "application/json"
        headers = {"Content-Type": content_type}
        wire = None
        if self.settings.gzip:
            headers["Content-Encoding"] = "gzip"
            wire = gzip_body(body)
        return EncodedRequest(
            method="POST",
            url=self.settings.endpoint,
            headers=headers,
            body=body,
            wire_body=wire,
            delivered=delivered,
            secret_headers=tuple(self.settings.headers),
        )

    def encode(self, batch: Sequence[Snapshot]) -> list[EncodedRequest]:
        """One ResourceMetrics per snapshot, packed into requests under `max_request_bytes`."""
        items = [
            (i, otlp_resource_metrics(s, service_name=self.settings.service_name))
            for i, s in enumerate(batch)
        ]
        limit = self.settings.max_request_bytes
        return pack_requests(
            items,
            total=len(batch),
            size_of=lambda rm: len(orjson.dumps(rm)),
            budget=limit,
            build=self._request,
            fits=lambda r: len(r.payload) <= limit,
            sink=self.name,
        )

    def json_view(self, request: EncodedRequest) -> bytes:
        """A protobuf body shown as OTLP JSON (for --dry-run on a terminal); JSON bodies as they are."""
        if self._proto is None:
            return request.body
        from google.protobuf import json_format

        message = self._proto()
        message.ParseFromString(request.body)
        text: str = json_format.MessageToJson(message, indent=2)
        return text.encode()

    async def send(self, batch: Sequence[Snapshot]) -> None:
        responses = await self._http.send_all(self.encode(batch), dict(self.settings.headers))
        for response in responses:
            self._log_partial_success(response)

    def _log_partial_success(self, response: httpx.Response) -> None:
        # A 200 may still reject some points; the spec says not to retry those.
        rejected, message = 0, ""
        try:
            if response.headers.get("content-type", "").startswith("application/json"):
                partial = orjson.loads(response.content or b"{}").get("partialSuccess") or {}
                rejected, message = (
                    int(partial.get("rejectedDataPoints") or 0),
                    partial.get("errorMessage", ""),
                )
            elif response.content and self._proto is not None:
                from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
                    ExportMetricsServiceResponse,
                )

                parsed = ExportMetricsServiceResponse()
                parsed.ParseFromString(response.content)
                rejected = parsed.partial_success.rejected_data_points
                message = parsed.partial_success.error_message
        except Exception:
            return
        if rejected:
            log.warning("%s: the endpoint rejected %d data point(s): %s", self.name, rejected, message)

    async def aclose(self) -> None:
        await self._http.aclose()
