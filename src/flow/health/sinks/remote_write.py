"""Prometheus remote write 1.0: the collector's snapshots straight into Prometheus (or Thanos,
Mimir, VictoriaMetrics), no scrape in between.

One POST per batch: a `WriteRequest` protobuf, snappy block-compressed, with the metric
vocabulary of `flow health serve` (docs/metrics.md) and each sample stamped with its
snapshot's time. The message has three nested types (`TimeSeries`, `Label`, `Sample`), so it is
encoded here in a few lines instead of through generated protobuf code; a test decodes it with
the real Prometheus, which must then answer PromQL with the snapshot's values.

What a receiver refuses for good is not retried forever: Prometheus answers 400 to a sample
older than what it holds for that series (a clock stepped back, a batch resent after a crash).
Such a batch is acknowledged with a warning that counts the samples refused, and delivery goes
on; every other 4xx keeps the batch, as for any endpoint.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence

import httpx

from flow.errors import ConfigError
from flow.health.sinks.base import EncodedRequest, SinkError
from flow.health.sinks.http import HttpSender
from flow.health.sinks.settings import RemoteWriteSettings
from flow.health.sinks.vocabulary import MetricFamily, metric_families
from flow.health.snapshot import Snapshot
from flow.secrets import redact_url

__all__ = [
    "CONTENT_TYPE",
    "PROTOCOL_VERSION",
    "RemoteWriteSink",
    "compress",
    "encode_write_request",
    "write_request_series",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-protobuf"
PROTOCOL_VERSION = "0.1.0"
# What Prometheus' receiver says when a sample is older than the series' newest (400).
_REFUSED_FOR_GOOD = ("out of order", "out of bounds", "too old", "duplicate sample")

Series = tuple[tuple[tuple[str, str], ...], list[tuple[float, int]]]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _label(name: str, value: str) -> bytes:
    return _field(1, _field(1, name.encode()) + _field(2, value.encode()))


def _sample(value: float, timestamp_ms: int) -> bytes:
    # Sample { double value = 1; int64 timestamp = 2; }: fixed64 then varint (two's complement).
    body = b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(timestamp_ms & 0xFFFFFFFFFFFFFFFF)
    return _field(2, body)


def write_request_series(
    families: Sequence[MetricFamily], extra_labels: Sequence[tuple[str, str]] = ()
) -> list[Series]:
    """The time series of some metric families: labels sorted by name (`__name__` included,
    empty values left out as Prometheus treats them as absent), samples in time order."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, int]]] = {}
    for family in families:
        name = family.spec.name
        for sample in family.samples:
            labels = {k: v for k, v in (*extra_labels, *sample.labels) if v != ""}
            labels["__name__"] = name
            key = tuple(sorted(labels.items()))
            series.setdefault(key, []).append(
                (sample.value, round(sample.timestamp.timestamp() * 1000)))
    return [(labels, sorted(points, key=lambda p: p[1])) for labels, points in series.items()]


def encode_write_request(series: Sequence[Series]) -> bytes:
    """`WriteRequest { repeated TimeSeries timeseries = 1; }` with
    `TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; }`."""
    out = bytearray()
    for labels, points in series:
        body = b"".join(_label(k, v) for k, v in labels) + b"".join(_sample(v, t) for v, t in points)
        out += _field(1, body)
    return bytes(out)


def compress(data: bytes) -> bytes:
    """Snappy's block format, as remote write requires (not the framed stream format).

    Raises:
        ConfigError: the `remote-write` extra (cramjam) is not installed.
    """
    try:
        import cramjam
    except ImportError:
        raise ConfigError("the remote_write sink needs cramjam; allowed: "
                          "pip install 'flow-health[remote-write]'") from None
    return bytes(cramjam.snappy.compress_raw(data))


class RemoteWriteSink:
    """Sends each batch as one remote-write request. `bearer` returns the token to send as
    `Authorization: Bearer` (None: none); it is called before each batch."""

    def __init__(
        self,
        settings: RemoteWriteSettings,
        *,
        bearer: Callable[[], str | None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self._bearer = bearer
        self.destination = f"remote write {redact_url(settings.url)}"
        auth = (httpx.BasicAuth(settings.username, settings.password)
                if settings.username and settings.password is not None else None)
        self._http = HttpSender(sink=self.name, timeout_s=settings.timeout_s, auth=auth, transport=transport)
        self.refused_samples = 0

    def encode(self, batch: Sequence[Snapshot]) -> list[EncodedRequest]:
        series = write_request_series(metric_families(batch), self.settings.labels)
        body = encode_write_request(series)
        headers = {"Content-Type": CONTENT_TYPE, "Content-Encoding": "snappy",
                   "X-Prometheus-Remote-Write-Version": PROTOCOL_VERSION}
        secret = ("Authorization",) if self.settings.password is not None or self._bearer is not None else ()
        return [EncodedRequest(method="POST", url=self.settings.url, headers=headers, body=body,
                               wire_body=compress(body), delivered=len(batch), secret_headers=secret)]

    async def send(self, batch: Sequence[Snapshot]) -> None:
        token = self._bearer() if self._bearer is not None else None
        secrets = {"Authorization": f"Bearer {token}"} if token else None
        requests = self.encode(batch)
        try:
            await self._http.send_all(requests, secrets)
        except SinkError as exc:
            if exc.status != 400 or not any(word in str(exc).lower() for word in _REFUSED_FOR_GOOD):
                raise
            samples = sum(len(points) for _, points in write_request_series(metric_families(batch)))
            self.refused_samples += samples
            # Retrying would be refused forever and hold back everything after it.
            log.warning("%s refused a batch of %d snapshot(s) (%d samples) as older than what it "
                        "holds (a clock stepped back, or a batch sent twice); it never accepts "
                        "them, so delivery goes on past them: %s", self.destination, len(batch),
                        samples, exc.message)

    async def aclose(self) -> None:
        await self._http.aclose()
