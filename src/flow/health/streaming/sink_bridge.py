"""Drive a `flow.health.sinks` sink (Pushgateway, Datadog, CloudWatch, OTLP) from the Streamer.

The Streamer hands over the store's lines; a sink takes `Snapshot`s and raises `SinkError`.
This bridge decodes the lines and maps `SinkError` (retryable, status, Retry-After) onto
`DeliveryError`, so a sink gets the same durable cursor, backoff and at-least-once delivery
as FLOW_METRICS_ENDPOINT. A retried batch is sent whole again (see docs/integrations.md on
what each sink does with a repeated point).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flow.health.sinks.base import Sink, SinkError
from flow.health.snapshot import Snapshot
from flow.health.streaming.sink import DeliveryError

__all__ = ["SinkBridge"]

log = logging.getLogger("flow.collector.stream")


class SinkBridge:
    """A `BatchSink` over a `flow.health.sinks.Sink`."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    @property
    def destination(self) -> str:
        return str(getattr(self.sink, "destination", "") or f"sink {self.sink.name}")

    async def send(self, lines: Sequence[bytes]) -> None:
        batch: list[Snapshot] = []
        for line in lines:
            try:
                batch.append(Snapshot.from_json(line))
            except (ValueError, TypeError, AttributeError, KeyError):
                # A stored line that is not a snapshot can never be delivered: it must not
                # hold back the rest of the log.
                log.warning("%s: skipped a stored line that is not a snapshot", self.destination)
        if not batch:
            return
        try:
            await self.sink.send(batch)
        except SinkError as exc:
            raise DeliveryError(exc.message, retryable=exc.retryable, status=exc.status,
                                retry_after_s=getattr(exc, "retry_after_s", None)) from None

    async def aclose(self) -> None:
        await self.sink.aclose()
