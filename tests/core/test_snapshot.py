"""The snapshot record: a full JSON round trip, tolerance on read, None stays None."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from flow.health.scoring import score_snapshot
from flow.health.snapshot import (
    SCHEMA_VERSION,
    ComponentState,
    DiskUsage,
    Event,
    GpudStatus,
    GpuReading,
    HostMetrics,
    ReadError,
    Snapshot,
    XidError,
    format_time,
    parse_time,
)

T = datetime(2026, 11, 28, 12, 34, 56, 789000, tzinfo=timezone.utc)


def full_snapshot() -> Snapshot:
    gpu = GpuReading(
        index=2, uuid="GPU-2f6c", bus_id="00000000:18:00.0", model="NVIDIA H100 80GB HBM3",
        temp_c=71.0, temp_hbm_c=64.5, slowdown_temp_c=89.0, mem_max_temp_c=95.0, power_w=412.3,
        power_limit_w=700.0, mem_used_bytes=70_000_000_000, mem_total_bytes=85_520_809_984,
        util_gpu_pct=97.0, util_mem_pct=41.0, clock_graphics_mhz=1980.0, clock_mem_mhz=2619.0,
        throttle_reasons=("hw_slowdown", "sw_power_cap"), ecc_volatile_corrected=3,
        ecc_volatile_uncorrected=1, ecc_aggregate_corrected=10, ecc_aggregate_uncorrected=2,
        remapped_rows_uncorrectable=1, remap_pending=True, remap_failed=False,
        nvlink_replay_errors=4, nvlink_recovery_errors=0, nvlink_crc_errors=7, processes=2,
        silent=True,
    )
    # Every field set to something other than its default, so the test notices a forgotten one.
    assert all(getattr(gpu, f.name) != f.default for f in fields(GpuReading))
    s = Snapshot(
        timestamp=T, task_id="task-abc123", task_name="train-llm", node="10.0.0.5",
        instance_type="h100.8xlarge", expected_gpus=8,
        gpud=GpudStatus(reachable=True, state="ok", error=None, version="v0.5.1", api_schema="v0.5+",
                        driver_version="550.54.15", cuda_version="12.4", hostname="gpu-5",
                        boot_id="b-1", gpu_product="H100", latency_ms=12.5),
        gpus=(gpu,),
        host=HostMetrics(cpu_pct=12.5, load1=1.0, load5=0.5, load15=0.25, mem_total_bytes=10**12,
                         mem_used_bytes=10**11, mem_used_pct=10.0,
                         disks=(DiskUsage(mount="/", total_bytes=10**12, used_bytes=10**11, used_pct=10.0),),
                         net_rx_bytes_per_s=1000.0, net_tx_bytes_per_s=2000.0, processes=321),
        components=(ComponentState(component="accelerator-nvidia-error-xid", name="error_xid",
                                   health="Unhealthy", reason="XID 79 ...", error="e",
                                   repair_actions=("REBOOT_SYSTEM", "HARDWARE_INSPECTION"), time=T),),
        events=(Event(component="accelerator-nvidia-error-xid", time=T, name="error_xid", type="Fatal",
                      message="XID 79"),),
        xids=(XidError(code=79, gpu="00000000:18:00.0", gpu_index=2, message="fell off", time=T,
                       source="event", xid_class="fatal"),),
        read_errors=(ReadError(component="accelerator-nvidia-nvlink", message="bad blob"),),
    )
    return s.with_verdict(score_snapshot(s))


def test_full_snapshot_survives_json_round_trip_unchanged() -> None:
    s = full_snapshot()
    assert s.verdict is not None and s.verdict.reasons
    line = s.to_json()
    assert b"\n" not in line
    back = Snapshot.from_json(line)
    assert back == s
    assert back.to_json() == line


def test_schema_and_timestamp_lead_the_record() -> None:
    line = full_snapshot().to_json()
    assert line.startswith(b'{"schema":1,"timestamp":"2026-11-28T12:34:56.789Z"')
    assert SCHEMA_VERSION == 1


def test_unavailable_readings_are_null_not_zero_or_missing() -> None:
    s = Snapshot(timestamp=T, task_id="t", gpus=(GpuReading(index=0),))
    d = orjson.loads(s.to_json())
    assert d["gpus"][0]["temp_c"] is None and "power_w" in d["gpus"][0]
    assert Snapshot.from_json(s.to_json()).gpus[0].temp_c is None


def test_unknown_fields_are_tolerated_on_read() -> None:
    d = full_snapshot().to_dict()
    d["future_field"] = {"x": 1}
    d["gpus"][0]["fan_pct"] = 40
    d["verdict"]["confidence"] = 0.9
    back = Snapshot.from_dict(d)
    assert back == full_snapshot()


def test_garbage_is_a_value_error() -> None:
    for line in (b"not json", b"[1,2]", b'{"task_id":"x"}'):
        with pytest.raises(ValueError):
            Snapshot.from_json(line)


def test_time_format_is_utc_z() -> None:
    assert format_time(T) == "2026-11-28T12:34:56.789Z"
    assert parse_time("2026-11-28T13:34:56.789+01:00") == T
    assert format_time(datetime(2026, 1, 1)) == "2026-01-01T00:00:00.000Z"
    # Another offset is converted; sub-millisecond digits are cut, not rounded up a second.
    east = timezone(timedelta(hours=2))
    assert format_time(datetime(2026, 1, 1, 1, 59, 59, 999_999, tzinfo=east)) == "2025-12-31T23:59:59.999Z"


def test_gpu_reading_with_readings_is_the_constructor() -> None:
    full = full_snapshot().gpus[0]
    readings = {f.name: getattr(full, f.name) for f in fields(GpuReading) if f.name != "index"}
    built = GpuReading.with_readings(full.index, readings)
    assert built == full and hash(built) == hash(full) and built.to_dict() == full.to_dict()
    assert GpuReading.with_readings(3, {"temp_c": 50.0}) == GpuReading(index=3, temp_c=50.0)
    with pytest.raises(FrozenInstanceError):
        built.temp_c = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError, match="'temperature'"):
        GpuReading.with_readings(0, {"temperature": 50.0})
