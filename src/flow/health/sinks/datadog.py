"""Datadog metrics API v2: `POST https://api.<site>/api/v2/series` with a `DD-API-KEY` header.

Each sample becomes one series with one point: the vocabulary name as `metric`, type gauge
(counters too: Datadog's `count` type means "delta over the interval", while ours are
cumulative totals), the node as the `host` resource and every non-empty label as a
`key:value` tag, plus the configured tags.

Limits (Datadog's documentation): a payload is at most 512000 bytes on the wire, and a
compressed payload at most 5242880 bytes once decompressed. A batch is split into as many
requests as needed, at snapshot boundaries where possible, in batch order, so that a
failure can report how many leading snapshots were delivered.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import orjson

from flow.health.sinks.base import EncodedRequest, SinkError
from flow.health.sinks.batching import pack_requests
from flow.health.sinks.http import HttpSender, gzip_body
from flow.health.sinks.settings import DatadogSettings
from flow.health.sinks.vocabulary import snapshot_families
from flow.health.snapshot import Snapshot
from flow.secrets import redact_url

__all__ = ["MAX_PAYLOAD_BYTES", "MAX_UNCOMPRESSED_BYTES", "SERIES_PATH", "DatadogSink", "datadog_series"]

SERIES_PATH = "/api/v2/series"
MAX_PAYLOAD_BYTES = 512_000
MAX_UNCOMPRESSED_BYTES = 5_242_880
_GAUGE = 3  # MetricIntakeType: 0 unspecified, 1 count, 2 rate, 3 gauge
_HEAD = b'{"series":['
_TAIL = b"]}"


def datadog_series(snapshot: Snapshot, extra_tags: Sequence[str] = ()) -> list[dict[str, object]]:
    """The v2 series objects of one snapshot (one per sample)."""
    series: list[dict[str, object]] = []
    for family in snapshot_families(snapshot):
        for sample in family.samples:
            tags = [f"{k}:{v}" for k, v in sample.labels if v != ""]
            entry: dict[str, object] = {
                "metric": family.spec.name,
                "type": _GAUGE,
                "points": [{"timestamp": int(sample.timestamp.timestamp()), "value": sample.value}],
                "tags": [*tags, *extra_tags],
            }
            if snapshot.node:
                entry["resources"] = [{"name": snapshot.node, "type": "host"}]
            series.append(entry)
    return series


class DatadogSink:
    """Sends batches to Datadog; `encode()` shows the exact request bodies without sending."""

    def __init__(
        self,
        settings: DatadogSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.url = settings.base_url + SERIES_PATH
        self.destination = f"datadog {redact_url(self.url)}"
        self.max_payload_bytes = max_payload_bytes
        # Uncompressed, the wire limit is the body limit.
        self.max_body_bytes = (max_uncompressed_bytes - 1) if settings.gzip else max_payload_bytes
        self._http = HttpSender(sink=self.name, timeout_s=settings.timeout_s, transport=transport)

    def _request(self, items: list[bytes], delivered: int) -> EncodedRequest:
        body = _HEAD + b",".join(items) + _TAIL
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        wire = None
        if self.settings.gzip:
            headers["Content-Encoding"] = "gzip"
            wire = gzip_body(body)
        return EncodedRequest(
            method="POST",
            url=self.url,
            headers=headers,
            body=body,
            wire_body=wire,
            delivered=delivered,
            secret_headers=("DD-API-KEY",),
        )

    def _fits(self, request: EncodedRequest) -> bool:
        return len(request.payload) <= self.max_payload_bytes and len(request.body) <= self.max_body_bytes

    def encode(self, batch: Sequence[Snapshot]) -> list[EncodedRequest]:
        """Split the batch into requests within both size limits, in batch order.

        Raises:
            SinkError: (not retryable) one series alone exceeds the limits.
        """
        items = [
            (i, orjson.dumps(entry))
            for i, snapshot in enumerate(batch)
            for entry in datadog_series(snapshot, self.settings.tags)
        ]
        return pack_requests(
            items,
            total=len(batch),
            size_of=lambda item: len(item) + 1,
            budget=self.max_body_bytes - len(_HEAD) - len(_TAIL),
            build=self._request,
            fits=self._fits,
            sink=self.name,
        )

    async def send(self, batch: Sequence[Snapshot]) -> None:
        if not self.settings.api_key:
            raise SinkError(
                f"{self.name}: no Datadog API key",
                retryable=False,
                sink=self.name,
                hint=f"export DD_API_KEY=..., or name a 0600 file in health.sinks.{self.name}.api_key_file",
            )
        await self._http.send_all(self.encode(batch), {"DD-API-KEY": self.settings.api_key})

    async def aclose(self) -> None:
        await self._http.aclose()
