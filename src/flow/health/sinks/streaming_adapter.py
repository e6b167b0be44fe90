"""Let the stream sender (`flow.health.streaming.Streamer`) drive any sink of this package.

The Streamer speaks `BatchSink`: stored snapshot objects in, `DeliveryError` out. This
adapter rebuilds `Snapshot`s and maps `SinkError` (retryable, status, Retry-After) onto
`DeliveryError`, so the Streamer's durable cursor and backoff apply to Pushgateway,
Datadog, CloudWatch and OTLP alike. A batch the Streamer retries is sent whole again;
requests a sink had already delivered are repeated (see docs/integrations.md on duplicates).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from flow.health.sinks.base import Sink, SinkError
from flow.health.snapshot import Snapshot
from flow.health.streaming.sink import DeliveryError

__all__ = ["BatchSinkAdapter"]

log = logging.getLogger("flow.sinks")


class BatchSinkAdapter:
    """A `BatchSink` over a `Sink`."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    @property
    def destination(self) -> str:
        return self.sink.destination

    async def send(self, snapshots: Sequence[Mapping[str, Any]]) -> None:
        batch: list[Snapshot] = []
        for obj in snapshots:
            try:
                batch.append(Snapshot.from_dict(obj))
            except (ValueError, TypeError, AttributeError, KeyError):
                # A record that is not a snapshot can never be delivered; it must not block the rest.
                log.warning("%s: skipped a stored record that is not a snapshot", self.sink.name)
        if not batch:
            return
        try:
            await self.sink.send(batch)
        except SinkError as exc:
            raise DeliveryError(
                exc.message, retryable=exc.retryable, status=exc.status, retry_after_s=exc.retry_after_s
            ) from None

    async def aclose(self) -> None:
        await self.sink.aclose()
