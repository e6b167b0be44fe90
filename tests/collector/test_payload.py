"""The streaming payload is exactly the documented shape, with a stable id per record."""

from __future__ import annotations

import gzip
import hashlib
from datetime import datetime, timezone

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from flow.health.scoring import score_snapshot
from flow.health.snapshot import (
    ComponentState,
    DiskUsage,
    Event,
    GpudStatus,
    GpuReading,
    HostMetrics,
    ReadError,
    Snapshot,
    XidError,
)
from flow.health.streaming import payload
from flow.health.streaming.payload import (
    encode_lines,
    encode_payload,
    line_identity,
    record_from_dict,
    record_from_line,
    record_id,
    to_record,
)

T = datetime(2025, 3, 1, 12, 0, 5, 250000, tzinfo=timezone.utc)


def _snapshot() -> Snapshot:
    snap = Snapshot(
        timestamp=T,
        task_id="task-abc123",
        task_name="train-7b",
        node="gpu-node-1",
        instance_type="8xh100",
        gpud=GpudStatus(reachable=True, version="v0.5.1", api_schema="v0.5+"),
        gpus=(GpuReading(index=0, uuid="GPU-0", temp_c=71.0, util_gpu_pct=88.0, power_w=512.5,
                         throttle_reasons=("sw_power_cap",)),),
        host=HostMetrics(cpu_pct=12.5, load1=1.0, mem_total_bytes=1024, mem_used_bytes=512,
                         disks=(DiskUsage(mount="/", total_bytes=10, used_bytes=5, used_pct=50.0),),
                         net_rx_bytes_per_s=None, processes=99),
        components=(ComponentState(component="accelerator-nvidia-temperature", name="temp",
                                   health="Healthy"),),
        events=(Event(component="accelerator-nvidia-error-xid", time=T, name="xid", type="Warning"),),
        xids=(XidError(code=13, gpu="0000:01:00.0", gpu_index=0),),
    )
    return snap.with_verdict(score_snapshot(snap))


def test_envelope_and_record_fields_are_exactly_the_documented_ones() -> None:
    snap = _snapshot()
    body = orjson.loads(encode_lines([snap.to_json()], compress=False))  # the bytes sent on the wire

    assert list(body) == ["source", "version", "metrics"]
    assert body["source"] == "flow-compute"
    assert body["version"] == "1.0"
    [record] = body["metrics"]
    assert list(record) == ["id", "timestamp", "task_id", "task_name", "instance_type",
                            "gpud_metrics", "system_metrics"]
    assert record["timestamp"] == "2025-03-01T12:00:05.250Z"
    assert record["task_id"] == "task-abc123"
    assert record["task_name"] == "train-7b"
    assert record["instance_type"] == "8xh100"

    gpud = record["gpud_metrics"]
    assert list(gpud) == ["gpud", "gpus", "components", "events", "xids", "verdict"]
    assert gpud["gpud"]["reachable"] is True and gpud["gpud"]["version"] == "v0.5.1"
    assert gpud["gpus"][0]["temp_c"] == 71.0
    assert gpud["gpus"][0]["power_w"] == 512.5
    assert gpud["gpus"][0]["throttle_reasons"] == ["sw_power_cap"]
    assert gpud["gpus"][0]["ecc_volatile_uncorrected"] is None  # unavailable is null, not absent
    assert gpud["components"][0]["component"] == "accelerator-nvidia-temperature"
    assert gpud["events"][0]["type"] == "Warning"
    assert gpud["xids"][0]["code"] == 13
    assert gpud["verdict"]["status"] in {"healthy", "degraded", "critical"}
    assert isinstance(gpud["verdict"]["score"], int)

    system = record["system_metrics"]
    assert system["cpu_pct"] == 12.5
    assert system["disks"] == [{"mount": "/", "total_bytes": 10, "used_bytes": 5, "used_pct": 50.0}]
    assert system["net_rx_bytes_per_s"] is None
    assert system["processes"] == 99
    assert system["node"] == "gpu-node-1"


def test_record_id_is_sha256_of_task_node_timestamp_and_stable() -> None:
    snap = _snapshot()
    first = to_record(snap)["id"]
    again = orjson.loads(record_from_line(snap.to_json()))["id"]  # as replayed from the store
    assert first == again == record_id("task-abc123", "gpu-node-1", "2025-03-01T12:00:05.250Z")
    assert first == hashlib.sha256(b"task-abc123\x1fgpu-node-1\x1f2025-03-01T12:00:05.250Z").hexdigest()
    assert line_identity(snap.to_json()) == ("task-abc123", "gpu-node-1", "2025-03-01T12:00:05.250Z")
    other_node = record_from_dict({**snap.to_dict(), "node": "gpu-node-2"})["id"]
    assert other_node != first


def test_snapshot_without_host_still_sends_every_host_key_as_null() -> None:
    snap = Snapshot(timestamp=T, task_id="t", node="n")
    record = orjson.loads(record_from_line(snap.to_json()))
    assert record == to_record(snap)
    assert record["system_metrics"]["cpu_pct"] is None
    assert record["system_metrics"]["disks"] == []
    assert record["system_metrics"]["node"] == "n"
    assert record["gpud_metrics"]["verdict"] is None
    assert record["instance_type"] is None


def test_gzip_body_decompresses_to_the_same_payload() -> None:
    line = _snapshot().to_json()
    assert gzip.decompress(encode_lines([line], compress=True)) == encode_lines([line], compress=False)
    records = [to_record(_snapshot())]
    assert orjson.loads(gzip.decompress(encode_payload(records, compress=True))) == orjson.loads(
        encode_payload(records, compress=False))


def test_a_line_in_another_layout_takes_the_slow_path_with_the_same_result() -> None:
    snap = _snapshot()
    d = snap.to_dict()
    reordered = orjson.dumps(dict(reversed(list(d.items()))))  # e.g. written by another tool
    assert orjson.loads(record_from_line(reordered)) == to_record(snap)
    assert line_identity(reordered) == line_identity(snap.to_json())


# Text that tries to look like the markers the fast path cuts at.
_NASTY = st.sampled_from(['","gpus":[', ',"host":null', '"}', "\\", '","verdict":{"x":1}', "ü\u2028\n",
                          ',"read_errors":'])
_TEXT = st.one_of(st.text(max_size=12), _NASTY)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    gpus = tuple(GpuReading(index=i, uuid=draw(_TEXT), model=draw(st.one_of(st.none(), _TEXT)),
                            temp_c=draw(st.one_of(st.none(), st.floats(0, 120))),
                            throttle_reasons=tuple(draw(st.lists(_TEXT, max_size=2))))
                 for i in range(draw(st.integers(0, 3))))
    host = draw(st.one_of(st.none(), st.builds(HostMetrics, cpu_pct=st.floats(0, 100),
                                               disks=st.lists(st.builds(DiskUsage, mount=_TEXT), max_size=2)
                                               .map(tuple))))
    snap = Snapshot(
        timestamp=T, task_id=draw(_TEXT.filter(bool)), task_name=draw(_TEXT), node=draw(_TEXT),
        instance_type=draw(st.one_of(st.none(), _TEXT)),
        gpud=GpudStatus(reachable=draw(st.booleans()), error=draw(st.one_of(st.none(), _TEXT))),
        gpus=gpus, host=host,
        components=tuple(ComponentState(component=draw(_TEXT), name=draw(_TEXT), health=draw(_TEXT),
                                        reason=draw(_TEXT)) for _ in range(draw(st.integers(0, 2)))),
        events=tuple(Event(component=draw(_TEXT), time=None, name=draw(_TEXT), type="Info",
                           message=draw(_TEXT)) for _ in range(draw(st.integers(0, 2)))),
        xids=tuple(XidError(code=draw(st.integers(0, 200)), message=draw(_TEXT))
                   for _ in range(draw(st.integers(0, 2)))),
        read_errors=tuple(ReadError(component=draw(_TEXT), message=draw(_TEXT))
                          for _ in range(draw(st.integers(0, 1)))),
    )
    return snap.with_verdict(score_snapshot(snap)) if draw(st.booleans()) else snap


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_fast_path_equals_decode_and_reencode(snap: Snapshot) -> None:
    line = snap.to_json()
    assert payload._split(line) is not None  # every line the store writes takes the fast path
    fast = record_from_line(line)
    assert orjson.loads(fast) == record_from_dict(orjson.loads(line))
    assert line_identity(line) == (snap.task_id, snap.node, orjson.loads(line)["timestamp"])


def test_a_key_from_a_newer_writer_takes_the_slow_path() -> None:
    snap = _snapshot()
    for extra in (b',"labels":{"team":"ml"}}', b',"verdict2":null}'):
        line = snap.to_json()[:-1] + extra  # appended after "verdict"
        assert payload._split(line) is None
        assert orjson.loads(record_from_line(line)) == to_record(snap)
    host_at = snap.to_json().index(b',"components":')
    inserted = snap.to_json()[:host_at] + b',"rack":"r1"' + snap.to_json()[host_at:]  # after "host"
    assert payload._split(inserted) is None
    assert orjson.loads(record_from_line(inserted)) == to_record(snap)


def test_a_stored_line_that_is_not_a_snapshot_is_skipped_not_fatal() -> None:
    import gzip as _gzip

    import orjson as _orjson

    from flow.health.streaming.payload import encode_lines as _encode

    torn = b'{"schema":1,"timestamp":"2026-11-28T00:00:00.000Z","task_id":"t","message":"x]}}'
    for compress in (False, True):
        body = _encode([torn], compress=compress)
        doc = _orjson.loads(_gzip.decompress(body) if compress else body)
        assert doc["metrics"] == []
