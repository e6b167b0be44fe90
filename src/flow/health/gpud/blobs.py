"""Adapters for the JSON blob each component puts in a state's `extra_info["data"]`.

Shapes per component and version are in shared/gpud/EXTRA_INFO.md. Each adapter is pure: it takes
the decoded blob and returns `BlobFacts`, or raises `BlobError` when the blob's structure is not
what GPUd writes (so the caller can drop that component alone). Individual values of the wrong
type are not structural: they become None (see values.py).

Rules that apply to every per-GPU record:
- a reading whose `*_supported` flag is false is None; an absent flag (older GPUd) counts as true;
- thresholds and limits of 0 are None (GPUd writes 0 when it could not read them);
- v0.4 put the same NVML records under other keys (`usages_nvml`, `remapped_rows_nvml`,
  `clock_events_nvml`) and named the clock-event component `accelerator-nvidia-clock`; those are
  read as fallbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from flow.health.gpud.gpus import GpuFacts
from flow.health.gpud.values import (
    as_records,
    is_supported,
    opt_bool,
    opt_float,
    opt_int,
    opt_positive,
    opt_text,
)
from flow.health.snapshot import DiskUsage

__all__ = [
    "BLOB_ADAPTERS",
    "THROTTLE_BITS",
    "BlobError",
    "BlobFacts",
    "decode_blob",
    "disk_usage",
    "throttle_reasons_from_bitmask",
]

#: NVML clock-event reason bits (nvmlClocksEventReason*), by the names GpuReading uses.
THROTTLE_BITS: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)


class BlobError(ValueError):
    """A blob whose structure is not what GPUd writes; costs its component only."""


@dataclass
class BlobFacts:
    gpus: list[GpuFacts] = field(default_factory=list)
    host: dict[str, Any] = field(default_factory=dict)  # HostMetrics field -> value
    disks: list[DiskUsage] = field(default_factory=list)
    model: str | None = None


def decode_blob(extra_info: Any) -> Mapping[str, Any] | None:
    """The decoded `extra_info["data"]`, or None when the state carries no blob.

    Raises:
        BlobError: `extra_info` or `data` is there but is not a JSON object in a string.
    """
    if extra_info is None:
        return None
    if not isinstance(extra_info, Mapping):
        raise BlobError(f"extra_info is a {type(extra_info).__name__}, not an object")
    if "data" not in extra_info:
        return None
    data = extra_info["data"]
    if not isinstance(data, str):
        raise BlobError(f'extra_info["data"] is a {type(data).__name__}, not a JSON string')
    try:
        blob = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BlobError(f'extra_info["data"] is not JSON: {exc}') from None
    if not isinstance(blob, Mapping):
        raise BlobError(f'extra_info["data"] is a JSON {type(blob).__name__}, not an object')
    return blob


def _records(blob: Mapping[str, Any], *keys: str) -> list[Mapping[str, Any]]:
    """The per-GPU array under the first key present; [] when none is (GPUd omits empty lists)."""
    for key in keys:
        if key in blob:
            records = as_records(blob[key])
            if records is None:
                raise BlobError(f"{key!r} is not an array of objects")
            return records
    return []


def _object(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = record.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BlobError(f"{key!r} is not an object")
    return value


def _facts(record: Mapping[str, Any], **values: Any) -> GpuFacts:
    return GpuFacts(uuid=opt_text(record.get("uuid")), bus_id=opt_text(record.get("bus_id")),
                    values=values)


def _if(flag: bool, value: Any) -> Any:
    return value if flag else None


def _temperature(blob: Mapping[str, Any]) -> BlobFacts:
    gpus = [
        _facts(
            r,
            temp_c=opt_float(r.get("current_celsius_gpu_core")),
            temp_hbm_c=_if(is_supported(r, "hbm_temperature_supported"),
                           opt_float(r.get("current_celsius_hbm"))),
            slowdown_temp_c=opt_positive(r.get("threshold_celsius_slowdown")),
            mem_max_temp_c=opt_positive(r.get("threshold_celsius_mem_max")),
        )
        for r in _records(blob, "temperatures", "usages_nvml")
    ]
    return BlobFacts(gpus=gpus)


def _memory(blob: Mapping[str, Any]) -> BlobFacts:
    gpus = []
    for r in _records(blob, "memories", "usages_nvml"):
        ok = is_supported(r, "supported")
        gpus.append(_facts(r, mem_total_bytes=_if(ok, opt_int(r.get("total_bytes"))),
                           mem_used_bytes=_if(ok, opt_int(r.get("used_bytes")))))
    return BlobFacts(gpus=gpus)


def _utilization(blob: Mapping[str, Any]) -> BlobFacts:
    gpus = []
    for r in _records(blob, "utilizations", "usages_nvml"):
        # Unsupported entries are emitted with zeros: a zero there is not "idle".
        ok = is_supported(r, "supported")
        gpus.append(_facts(r, util_gpu_pct=_if(ok, opt_float(r.get("gpu_used_percent"))),
                           util_mem_pct=_if(ok, opt_float(r.get("memory_used_percent")))))
    return BlobFacts(gpus=gpus)


def _milliwatts(value: Any) -> float | None:
    number = opt_float(value)
    return None if number is None else number / 1000.0


def _power(blob: Mapping[str, Any]) -> BlobFacts:
    gpus = []
    for r in _records(blob, "powers", "usages_nvml"):
        limit_mw = _if(is_supported(r, "get_power_limit_supported"),
                       opt_positive(r.get("enforced_limit_milli_watts")))
        if limit_mw is None:  # GPUd's own used_percent falls back to the management limit too
            limit_mw = _if(is_supported(r, "get_power_management_limit_supported"),
                           opt_positive(r.get("management_limit_milli_watts")))
        gpus.append(_facts(
            r,
            power_w=_if(is_supported(r, "get_power_usage_supported"),
                        _milliwatts(r.get("usage_milli_watts"))),
            power_limit_w=_milliwatts(limit_mw),
        ))
    return BlobFacts(gpus=gpus)


def _clock_speed(blob: Mapping[str, Any]) -> BlobFacts:
    gpus = [
        _facts(
            r,
            clock_graphics_mhz=_if(is_supported(r, "clock_graphics_supported"),
                                   opt_float(r.get("graphics_mhz"))),
            clock_mem_mhz=_if(is_supported(r, "clock_memory_supported"),
                              opt_float(r.get("memory_mhz"))),
        )
        for r in _records(blob, "clock_speeds", "usages_nvml")
    ]
    return BlobFacts(gpus=gpus)


def _ecc(blob: Mapping[str, Any]) -> BlobFacts:
    disabled = {
        uuid
        for m in _records(blob, "ecc_modes")
        if (uuid := opt_text(m.get("uuid"))) is not None
        and (m.get("enabled_current") is False or m.get("supported") is False)
    }
    gpus = []
    for r in _records(blob, "ecc_errors"):
        volatile = _object(_object(r, "volatile"), "total")
        aggregate = _object(_object(r, "aggregate"), "total")
        counts = {
            "ecc_volatile_corrected": opt_int(volatile.get("corrected")),
            "ecc_volatile_uncorrected": opt_int(volatile.get("uncorrected")),
            "ecc_aggregate_corrected": opt_int(aggregate.get("corrected")),
            "ecc_aggregate_uncorrected": opt_int(aggregate.get("uncorrected")),
        }
        # GPUd stops at the first NOT_SUPPORTED counter and keeps what it read; totals come
        # first, so non-zero totals under supported:false are real. All zeros there, or ECC
        # off, tell us nothing.
        unknown = opt_text(r.get("uuid")) in disabled or (
            r.get("supported") is False and not any(counts.values())
        )
        gpus.append(_facts(r, **({} if unknown else counts)))
    return BlobFacts(gpus=gpus)


def _remapped_rows(blob: Mapping[str, Any]) -> BlobFacts:
    gpus = []
    for r in _records(blob, "remapped_rows", "remapped_rows_nvml"):
        ok = is_supported(r, "supported")
        gpus.append(_facts(
            r,
            remapped_rows_uncorrectable=_if(ok, opt_int(r.get("remapped_due_to_uncorrectable_errors"))),
            remap_pending=_if(ok, opt_bool(r.get("remapping_pending"))),
            remap_failed=_if(ok, opt_bool(r.get("remapping_failed"))),
        ))
    return BlobFacts(gpus=gpus, model=opt_text(blob.get("product_name")))


def throttle_reasons_from_bitmask(mask: int) -> tuple[str, ...]:
    return tuple(name for bit, name in THROTTLE_BITS if mask & bit)


def _hw_slowdown(blob: Mapping[str, Any]) -> BlobFacts:
    gpus = []
    for r in _records(blob, "clock_events", "clock_events_nvml"):
        if not is_supported(r, "supported"):
            continue
        mask = opt_int(r.get("reasons_bitmask"))
        reasons = list(throttle_reasons_from_bitmask(mask)) if mask is not None and mask >= 0 else []
        # The booleans repeat bits of the mask; they count even if the mask is missing.
        for key, name in (("hw_slowdown", "hw_slowdown"), ("hw_thermal_slowdown", "hw_thermal_slowdown"),
                          ("hw_slowdown_thermal", "hw_thermal_slowdown"),  # the v0.4 spelling
                          ("hw_slowdown_power_brake", "hw_power_brake_slowdown")):
            if r.get(key) is True and name not in reasons:
                reasons.append(name)
        gpus.append(_facts(r, throttle_reasons=tuple(reasons)))
    return BlobFacts(gpus=gpus)


def _nvlink(blob: Mapping[str, Any]) -> BlobFacts:
    gpus = []
    for r in _records(blob, "nvlinks"):
        links = as_records(r.get("states"))
        if links is None:
            raise BlobError("'states' is not an array of objects")
        if not is_supported(r, "supported") or not links:
            gpus.append(_facts(r))  # known GPU, no NVLink counters
            continue
        sums: dict[str, int | None] = {}
        for key in ("replay_errors", "recovery_errors", "crc_errors"):
            counts = [c for c in (opt_int(link.get(key)) for link in links) if c is not None]
            sums[f"nvlink_{key}"] = sum(counts) if counts else None
        gpus.append(_facts(r, **sums))
    return BlobFacts(gpus=gpus)


def _processes(blob: Mapping[str, Any]) -> BlobFacts:
    gpus = []
    for r in _records(blob, "processes"):
        running = as_records(r.get("running_processes"))  # null on an idle GPU
        if running is None:
            raise BlobError("'running_processes' is not an array of objects")
        ok = is_supported(r, "get_compute_running_processes_supported")
        gpus.append(_facts(r, processes=_if(ok, len(running))))
    return BlobFacts(gpus=gpus)


def _cpu(blob: Mapping[str, Any]) -> BlobFacts:
    usage = _object(blob, "usage")
    return BlobFacts(host={
        "cpu_pct": opt_float(usage.get("used_percent")),
        "load1": opt_float(usage.get("load_avg_1min")),
        "load5": opt_float(usage.get("load_avg_5min")),
        "load15": opt_float(usage.get("load_avg_15min")),
    })


def _host_memory(blob: Mapping[str, Any]) -> BlobFacts:
    return BlobFacts(host={
        "mem_total_bytes": opt_int(blob.get("total_bytes")),
        "mem_used_bytes": opt_int(blob.get("used_bytes")),
        "mem_used_pct": opt_float(blob.get("used_percent")),
    })


def disk_usage(mount: str, total: int | None, used: int | None, free: int | None) -> DiskUsage:
    """df's Use%: used / (used + available), since `free` excludes root-reserved blocks."""
    pct = None
    if used is not None and free is not None and used + free > 0:
        pct = 100.0 * used / (used + free)
    elif used is not None and total:
        pct = 100.0 * used / total
    return DiskUsage(mount=mount, total_bytes=total, used_bytes=used, used_pct=pct)


def _disk(blob: Mapping[str, Any]) -> BlobFacts:
    disks: dict[str, DiskUsage] = {}
    for partition in _records(blob, "ext_partitions") + _records(blob, "nfs_partitions"):
        mount = opt_text(partition.get("mount_point"))
        usage = _object(partition, "usage")
        if mount is None or not usage or mount in disks:
            continue
        disks[mount] = disk_usage(mount, opt_int(usage.get("total_bytes")),
                                  opt_int(usage.get("used_bytes")), opt_int(usage.get("free_bytes")))
    return BlobFacts(disks=list(disks.values()))


#: Component name -> adapter. Components not listed carry no readings we use.
BLOB_ADAPTERS: Mapping[str, Callable[[Mapping[str, Any]], BlobFacts]] = {
    "accelerator-nvidia-temperature": _temperature,
    "accelerator-nvidia-memory": _memory,
    "accelerator-nvidia-utilization": _utilization,
    "accelerator-nvidia-power": _power,
    "accelerator-nvidia-clock-speed": _clock_speed,
    "accelerator-nvidia-ecc": _ecc,
    "accelerator-nvidia-remapped-rows": _remapped_rows,
    "accelerator-nvidia-hw-slowdown": _hw_slowdown,
    "accelerator-nvidia-clock": _hw_slowdown,  # v0.4's name
    "accelerator-nvidia-nvlink": _nvlink,
    "accelerator-nvidia-processes": _processes,
    "cpu": _cpu,
    "memory": _host_memory,
    "disk": _disk,
}
