"""Streaming: deliver the local store to a remote endpoint, losing nothing while it is down.

- `payload`: the documented envelope and one record per snapshot (with a stable `id`).
- `endpoint`: POST to FLOW_METRICS_ENDPOINT (bearer token, gzip).
- `backoff`: exponential backoff with full jitter; Retry-After.
- `cursor`: the durable cursor of what the destination acknowledged.
- `sender`: the loop that ties them together (`Streamer`).

See docs/streaming.md.
"""

from __future__ import annotations

from flow.health.streaming.backoff import Backoff, parse_retry_after
from flow.health.streaming.cursor import CursorFile, CursorState
from flow.health.streaming.endpoint import EndpointSink, TokenSource, redact_url
from flow.health.streaming.payload import encode_payload, record_from_dict, record_id, to_record
from flow.health.streaming.sender import BacklogSource, Streamer, StreamerStats
from flow.health.streaming.sink import BatchSink, DeliveryError

__all__ = [
    "BacklogSource",
    "Backoff",
    "BatchSink",
    "CursorFile",
    "CursorState",
    "DeliveryError",
    "EndpointSink",
    "Streamer",
    "StreamerStats",
    "TokenSource",
    "encode_payload",
    "parse_retry_after",
    "record_from_dict",
    "record_id",
    "redact_url",
    "to_record",
]
