"""The streaming payload: the documented envelope around one record per snapshot.

```
{"source": "flow-compute", "version": "1.0",
 "metrics": [{"id", "timestamp", "task_id", "task_name", "instance_type",
              "gpud_metrics": {"gpud", "gpus", "components", "events", "xids", "verdict"},
              "system_metrics": {<host metrics>, "node"}}]}
```
`id` is our one addition to the documented record: a stable hash of (task id, node, timestamp),
the same on every resend, so that a receiver can drop the duplicates at-least-once delivery
may produce.

A backlog replay turns stored lines into records without decoding them: a stored line is
`Snapshot.to_json()`, whose top-level keys orjson writes in a fixed order with no spaces, and
whose nested objects never use those key names, so each top-level value can be cut out by its
`,"key":` marker (a `"` inside a string is always escaped, so a marker cannot hide in one) and
spliced into the record. Any line that does not have exactly that layout (another schema, a
hand-written line, a key added by a newer writer) takes the slow path, decode and re-encode,
which gives the same record. tests/collector/test_payload.py checks that the two agree on
every snapshot the model can produce, so a field added to `Snapshot.to_dict()` fails the test
until the markers here follow it.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from flow.health.snapshot import SCHEMA_VERSION, HostMetrics, Snapshot

__all__ = [
    "GPUD_METRICS_KEYS",
    "PAYLOAD_SOURCE",
    "PAYLOAD_VERSION",
    "RECORD_KEYS",
    "encode_lines",
    "encode_payload",
    "line_identity",
    "record_from_dict",
    "record_from_line",
    "record_id",
    "to_record",
]

PAYLOAD_SOURCE = "flow-compute"
PAYLOAD_VERSION = "1.0"
RECORD_KEYS = ("id", "timestamp", "task_id", "task_name", "instance_type", "gpud_metrics", "system_metrics")
GPUD_METRICS_KEYS = ("gpud", "gpus", "components", "events", "xids", "verdict")
# A snapshot without host readings still sends every host key (null), never a missing key.
_EMPTY_HOST = HostMetrics().to_dict()
_EMPTY_HOST_JSON = orjson.dumps(_EMPTY_HOST)
# zlib levels 1-3 use deflate's fast strategy: on snapshot JSON, level 3 costs half the CPU of
# level 5 for output about a third larger; a backlog replay is CPU-bound on the node.
GZIP_LEVEL = 3

log = logging.getLogger("flow.collector.stream")

_HEAD = b'{"schema":%d,' % SCHEMA_VERSION
# The top-level keys after the identity, in Snapshot.to_dict() order.
_MARKERS = (b',"gpud":', b',"gpus":', b',"host":', b',"components":', b',"events":', b',"xids":',
            b',"read_errors":', b',"verdict":')
# The identity keys a stored line starts with: before and since `expected_gpus` (not streamed).
_IDENTITY = ["schema", "timestamp", "task_id", "task_name", "node", "instance_type"]
_IDENTITIES = (_IDENTITY, [*_IDENTITY, "expected_gpus"])
_ENVELOPE_HEAD = orjson.dumps({"source": PAYLOAD_SOURCE, "version": PAYLOAD_VERSION})[:-1] + b',"metrics":['


def record_id(task_id: str, node: str, timestamp: str) -> str:
    """Stable id of one snapshot: sha256 hex of task id, node and timestamp (as stored)."""
    return hashlib.sha256(f"{task_id}\x1f{node}\x1f{timestamp}".encode()).hexdigest()


def record_from_dict(snap: Mapping[str, Any]) -> dict[str, Any]:
    """One payload record from a stored snapshot object (`Snapshot.to_dict()` shape)."""
    task_id = str(snap.get("task_id") or "")
    node = str(snap.get("node") or "")
    timestamp = str(snap.get("timestamp") or "")
    host = snap.get("host")
    system = dict(host) if isinstance(host, Mapping) else dict(_EMPTY_HOST)
    system["node"] = node
    return {
        "id": record_id(task_id, node, timestamp),
        "timestamp": timestamp,
        "task_id": task_id,
        "task_name": snap.get("task_name") or "",
        "instance_type": snap.get("instance_type"),
        "gpud_metrics": {
            "gpud": snap.get("gpud"),
            "gpus": snap.get("gpus") or [],
            "components": snap.get("components") or [],
            "events": snap.get("events") or [],
            "xids": snap.get("xids") or [],
            "verdict": snap.get("verdict"),
        },
        "system_metrics": system,
    }


def to_record(snapshot: Snapshot) -> dict[str, Any]:
    return record_from_dict(snapshot.to_dict())


def _split(line: bytes) -> tuple[dict[str, Any], list[bytes]] | None:
    """The identity (decoded) and the raw top-level values of a stored line, or None."""
    if not line.startswith(_HEAD) or not line.endswith(b"}"):
        return None
    cuts = []
    at = 0
    for marker in _MARKERS:
        at = line.find(marker, at)
        if at < 0:
            return None
        cuts.append(at)
        at += len(marker)
    try:
        ident = orjson.loads(line[: cuts[0]] + b"}")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(ident, dict) or list(ident) not in _IDENTITIES:
        return None
    ends = [*cuts[1:], len(line) - 1]
    values = [line[c + len(m): e] for c, m, e in zip(cuts, _MARKERS, ends, strict=True)]
    # A key this code does not know (a newer writer's, read after a downgrade) would end up
    # inside the value before it. New keys go after the identity (checked above) or at the
    # end, after "verdict"; decoding the three small objects (well under 2 kB together) proves
    # that each is one JSON value, at a fraction of the cost of decoding the whole line.
    try:
        for small in (values[0], values[2], values[7]):  # gpud, host, verdict
            orjson.loads(small)
    except orjson.JSONDecodeError:
        return None
    return ident, values


def line_identity(line: bytes) -> tuple[str, str, str]:
    """(task id, node, timestamp) of a stored line, as `record_id` takes them."""
    parts = _split(line)
    obj: Mapping[str, Any] = parts[0] if parts is not None else orjson.loads(line)
    return str(obj.get("task_id") or ""), str(obj.get("node") or ""), str(obj.get("timestamp") or "")


def record_from_line(line: bytes) -> bytes:
    """One payload record, as JSON, from one stored line (`Snapshot.to_json()`).

    Raises:
        ValueError: the line is not a JSON object (orjson.JSONDecodeError is one).
    """
    parts = _split(line)
    if parts is None:
        obj = orjson.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("stored line is not a JSON object")
        return orjson.dumps(record_from_dict(obj))
    ident, (gpud, gpus, host, components, events, xids, _read_errors, verdict) = parts
    task_id = str(ident["task_id"] or "")
    node = str(ident["node"] or "")
    timestamp = str(ident["timestamp"] or "")
    node_json = orjson.dumps(node)
    if host == b"null" or host == b"{}":
        host = _EMPTY_HOST_JSON
    system = host[:-1] + b',"node":' + node_json + b"}"
    return b"".join((
        b'{"id":"', record_id(task_id, node, timestamp).encode(), b'","timestamp":', orjson.dumps(timestamp),
        b',"task_id":', orjson.dumps(task_id), b',"task_name":', orjson.dumps(ident["task_name"] or ""),
        b',"instance_type":', orjson.dumps(ident["instance_type"]),
        b',"gpud_metrics":{"gpud":', gpud, b',"gpus":', _or_empty(gpus), b',"components":',
        _or_empty(components), b',"events":', _or_empty(events), b',"xids":', _or_empty(xids),
        b',"verdict":', verdict, b'},"system_metrics":', system, b"}",
    ))


def _or_empty(value: bytes) -> bytes:
    return b"[]" if value == b"null" else value


def _compress(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


def _records(lines: Sequence[bytes]) -> Iterator[bytes]:
    for line in lines:
        try:
            yield record_from_line(line)
        except ValueError:
            # The store's reader let it through as whole, but it is not a snapshot: skipping it
            # beats a batch that can never be delivered.
            log.warning("skipped a stored line that is not a snapshot (%d bytes)", len(line))


def encode_lines(lines: Sequence[bytes], *, compress: bool) -> bytes:
    """The POST body for stored lines: the envelope, gzip-compressed when `compress` is set.

    Compressed record by record, so a batch's uncompressed body (about 12 kB per 8-GPU
    record) never exists in memory at once. A line that is not a snapshot is skipped (logged).
    """
    if not compress:
        return b"".join((_ENVELOPE_HEAD, b",".join(_records(lines)), b"]}"))
    gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip member, mtime 0
    out = [gz.compress(_ENVELOPE_HEAD)]
    for i, record in enumerate(_records(lines)):
        if i:
            out.append(gz.compress(b","))
        out.append(gz.compress(record))
    out.append(gz.compress(b"]}"))
    out.append(gz.flush())
    return b"".join(out)


def encode_payload(records: Iterable[Mapping[str, Any]], *, compress: bool) -> bytes:
    """The POST body for records already built as objects (`to_record`)."""
    body = orjson.dumps({"source": PAYLOAD_SOURCE, "version": PAYLOAD_VERSION, "metrics": list(records)})
    return _compress(body) if compress else body
