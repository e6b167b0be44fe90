"""What every sink shares: the `Sink` protocol, `SinkError`, the registry and request records.

A sink turns a batch of snapshots into one or more requests to a time-series system and
sends them. The collector drives sinks with a durable cursor and retries (streaming.py); a
sink's job is to batch correctly within its API's limits and to say, through
`SinkError.retryable`, whether sending the same batch again can succeed.

Sinks that can show their requests without sending them (`flow health export --dry-run`)
also implement `encode(batch) -> list[EncodedRequest]`; secrets are added only at send time,
so an encoded request is always safe to print.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Protocol, runtime_checkable

import httpx

from flow.errors import FlowError
from flow.health.snapshot import Snapshot
from flow.secrets import redact_url, scrub

__all__ = [
    "EncodedRequest",
    "EncodingSink",
    "Sink",
    "SinkError",
    "SinkRegistry",
    "error_from_response",
    "error_from_transport",
    "is_retryable_status",
    "parse_retry_after",
]

#: Statuses worth retrying: timeouts, rate limits and server-side failures.
_RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_BODY_EXCERPT = 200


class SinkError(FlowError):
    """A sink could not deliver a batch.

    `retryable` says whether the same batch may succeed later (network down, 429, 5xx);
    False means it never will (bad request, auth refused, payload unsplittable) and the
    caller should drop or park it. `status` is the HTTP status when there was one.
    `delivered` counts the leading snapshots of the batch that were delivered before the
    failure (requests are sent in batch order), so a caller may advance its cursor by it.
    `retry_after_s` is the server's Retry-After, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        sink: str | None = None,
        delivered: int = 0,
        retry_after_s: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.retryable = retryable
        self.status = status
        self.sink = sink
        self.delivered = delivered
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return (
            f"SinkError({self.message!r}, retryable={self.retryable}, status={self.status}, "
            f"sink={self.sink!r}, delivered={self.delivered})"
        )


@runtime_checkable
class Sink(Protocol):
    """Anything that can deliver batches of snapshots somewhere."""

    name: str
    #: Where batches go, without credentials (logged, and kept in the streaming cursor).
    destination: str

    async def send(self, batch: Sequence[Snapshot]) -> None:
        """Deliver the batch, or raise `SinkError` (with `retryable`) and deliver what it can."""
        ...

    async def aclose(self) -> None:
        """Release connections; the sink is not used afterwards."""
        ...


@dataclass(frozen=True, kw_only=True)
class EncodedRequest:
    """One request exactly as a sink would send it, minus secret headers.

    `body` is the payload before compression; `wire_body` is what goes on the wire (the
    gzipped body when `Content-Encoding: gzip` is among the headers, else `body` itself).
    `delivered` is how many leading snapshots of the batch are complete once this request
    and all before it have succeeded (what `SinkError.delivered` reports after a failure).
    `secret_headers` names the headers added at send time (shown as <redacted>).
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    wire_body: bytes | None = None
    delivered: int = 0
    secret_headers: tuple[str, ...] = ()

    @property
    def payload(self) -> bytes:
        return self.body if self.wire_body is None else self.wire_body

    def describe(self) -> str:
        """A printable header block for --dry-run (secret headers shown as <redacted>)."""
        lines = [f"{self.method} {redact_url(self.url)}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        lines += [f"{k}: <redacted>" for k in self.secret_headers]
        size = f"{len(self.body)} bytes"
        if self.wire_body is not None and self.wire_body is not self.body:
            size += f", {len(self.wire_body)} bytes compressed on the wire; shown uncompressed"
        lines.append(f"# body: {size}")
        return "\n".join(lines)


@runtime_checkable
class EncodingSink(Sink, Protocol):
    """A sink that can show, without sending, the requests a batch becomes."""

    def encode(self, batch: Sequence[Snapshot]) -> list[EncodedRequest]: ...


def is_retryable_status(status: int) -> bool:
    return status in _RETRYABLE_STATUSES or status >= 500


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    # isdigit() alone accepts "²" and other Unicode digits, which float() refuses.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def error_from_response(
    response: httpx.Response, *, sink: str, delivered: int = 0, what: str = "request"
) -> SinkError:
    """Map a non-2xx answer to a SinkError; the message quotes a short, single-line body excerpt.

    The URL is shown without its query string (some APIs accept keys there) and redacted.
    """
    excerpt = " ".join(response.text[:_BODY_EXCERPT].split())
    url = redact_url(str(response.request.url.copy_with(query=None)))
    return SinkError(
        f"{sink}: {what} to {url} answered {response.status_code} {response.reason_phrase}"
        + (f": {excerpt}" if excerpt else ""),
        retryable=is_retryable_status(response.status_code),
        status=response.status_code,
        sink=sink,
        delivered=delivered,
        retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
    )


def error_from_transport(
    exc: httpx.HTTPError, *, sink: str, url: str, delivered: int = 0, secrets: Iterable[str] = ()
) -> SinkError:
    """Map an httpx transport failure (refused, timeout, reset) to a retryable SinkError.

    The URL is redacted and the exception text scrubbed of `secrets` (the request's secret
    header values): h11's "Illegal header value b'...'" quotes the value it refused.
    """
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    detail = scrub(str(exc) or type(exc).__name__, secrets)
    return SinkError(
        f"{sink}: request to {redact_url(url)} {kind}: {detail}", retryable=True, sink=sink,
        delivered=delivered,
    )


class SinkRegistry:
    """The configured sinks, by unique name (compare prometheus_client's CollectorRegistry).

    `register` refuses a name already present; iteration yields a copy taken under the lock,
    so a sink may be registered or removed while the collector is sending.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: dict[str, Sink] = {}

    def register(self, sink: Sink) -> None:
        """Raises ValueError naming the duplicate when a sink of that name is registered."""
        with self._lock:
            if sink.name in self._sinks:
                raise ValueError(
                    f"Duplicated sink name: {sink.name!r}; registered: " + ", ".join(sorted(self._sinks))
                )
            self._sinks[sink.name] = sink

    def unregister(self, name: str) -> Sink:
        """Remove and return the sink; KeyError when none has that name."""
        with self._lock:
            return self._sinks.pop(name)

    def get(self, name: str) -> Sink | None:
        with self._lock:
            return self._sinks.get(name)

    def sinks(self) -> list[Sink]:
        with self._lock:
            return list(self._sinks.values())

    def names(self) -> list[str]:
        with self._lock:
            return list(self._sinks)

    def __iter__(self) -> Iterator[Sink]:
        return iter(self.sinks())

    def __len__(self) -> int:
        with self._lock:
            return len(self._sinks)

    async def aclose(self) -> None:
        """Close every sink (each once, even when one fails; the first error is re-raised)."""
        first: BaseException | None = None
        for sink in self.sinks():
            try:
                await sink.aclose()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first
