"""The metric points GPUd records each minute, shared by `/v1/metrics` (both schemas) and `/metrics`.

A node's series (component, name, labels) are fixed; each sample only supplies the values, in
the same order. Keeping the two apart lets the server pre-encode everything static once per
node and stay cheap when a fleet of hundreds is asked for half an hour of history.
"""

from __future__ import annotations

from dataclasses import dataclass

from flow.health.sim.physics import (
    CLOCK_HW_POWER_BRAKE,
    CLOCK_HW_SLOWDOWN,
    GpuSample,
    NodeProfile,
    NodeSample,
)

__all__ = ["MetricPoint", "Series", "metric_points", "series", "values"]

CLOCK_HW_THERMAL = 0x40

# Per-GPU metrics (label {uuid}), in the order `_gpu_values` returns them.
_GPU_SERIES: tuple[tuple[str, str], ...] = (
    ("accelerator-nvidia-temperature", "accelerator_nvidia_temperature_current_celsius"),
    ("accelerator-nvidia-temperature", "accelerator_nvidia_temperature_slowdown_threshold_celsius"),
    ("accelerator-nvidia-temperature", "accelerator_nvidia_temperature_mem_max_threshold_celsius"),
    ("accelerator-nvidia-temperature", "accelerator_nvidia_temperature_slowdown_used_percent"),
    ("accelerator-nvidia-temperature", "accelerator_nvidia_temperature_mem_max_used_percent"),
    ("accelerator-nvidia-power", "accelerator_nvidia_power_current_usage_milli_watts"),
    ("accelerator-nvidia-power", "accelerator_nvidia_power_enforced_limit_milli_watts"),
    ("accelerator-nvidia-power", "accelerator_nvidia_power_used_percent"),
    ("accelerator-nvidia-memory", "accelerator_nvidia_memory_total_bytes"),
    ("accelerator-nvidia-memory", "accelerator_nvidia_memory_reserved_bytes"),
    ("accelerator-nvidia-memory", "accelerator_nvidia_memory_used_bytes"),
    ("accelerator-nvidia-memory", "accelerator_nvidia_memory_free_bytes"),
    ("accelerator-nvidia-memory", "accelerator_nvidia_memory_used_percent"),
    ("accelerator-nvidia-utilization", "accelerator_nvidia_utilization_gpu_util_percent"),
    ("accelerator-nvidia-utilization", "accelerator_nvidia_utilization_memory_util_percent"),
    ("accelerator-nvidia-clock-speed", "accelerator_nvidia_clock_speed_graphics_mhz"),
    ("accelerator-nvidia-clock-speed", "accelerator_nvidia_clock_speed_memory_mhz"),
    ("accelerator-nvidia-ecc", "accelerator_nvidia_ecc_aggregate_total_corrected"),
    ("accelerator-nvidia-ecc", "accelerator_nvidia_ecc_aggregate_total_uncorrected"),
    ("accelerator-nvidia-ecc", "accelerator_nvidia_ecc_volatile_total_corrected"),
    ("accelerator-nvidia-ecc", "accelerator_nvidia_ecc_volatile_total_uncorrected"),
    ("accelerator-nvidia-hw-slowdown", "accelerator_nvidia_clock_hw_slowdown"),
    ("accelerator-nvidia-hw-slowdown", "accelerator_nvidia_clock_hw_slowdown_thermal"),
    ("accelerator-nvidia-hw-slowdown", "accelerator_nvidia_clock_hw_slowdown_power_brake"),
    ("accelerator-nvidia-nvlink", "accelerator_nvidia_nvlink_supported"),
    ("accelerator-nvidia-nvlink", "accelerator_nvidia_nvlink_feature_enabled"),
    ("accelerator-nvidia-nvlink", "accelerator_nvidia_nvlink_replay_errors"),
    ("accelerator-nvidia-nvlink", "accelerator_nvidia_nvlink_recovery_errors"),
    ("accelerator-nvidia-nvlink", "accelerator_nvidia_nvlink_crc_errors"),
    ("accelerator-nvidia-processes", "accelerator_nvidia_processes_running_total"),
)
# Only on products with row remapping (GPUd's capability table).
_REMAP_SERIES: tuple[tuple[str, str], ...] = (
    ("accelerator-nvidia-remapped-rows", "accelerator_nvidia_remapped_rows_due_to_uncorrectable_errors"),
    ("accelerator-nvidia-remapped-rows", "accelerator_nvidia_remapped_rows_remapping_pending"),
    ("accelerator-nvidia-remapped-rows", "accelerator_nvidia_remapped_rows_remapping_failed"),
)


@dataclass(frozen=True)
class Series:
    component: str
    name: str
    labels: tuple[tuple[str, str], ...]   # (key, value) pairs; the GPU id first where there is one
    counter: bool = False


@dataclass(frozen=True)
class MetricPoint:
    component: str
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    counter: bool = False


def _pct(part: float, whole: float) -> float:
    return round(part / whole * 100, 2) if whole else 0.0


def series(p: NodeProfile) -> tuple[Series, ...]:
    """Every series the node has, in the order `values` fills them."""
    out: list[Series] = []
    for ident in p.gpus:
        lab = (("uuid", ident.uuid),)
        out.extend(Series(c, n, lab) for c, n in _GPU_SERIES)
        if p.model.row_remapping:
            out.extend(Series(c, n, lab) for c, n in _REMAP_SERIES)
    if p.xid is not None:
        out.append(Series("accelerator-nvidia-error-xid", "accelerator_nvidia_xid_errors_total",
                          (("uuid", p.gpus[p.xid.gpu_index].uuid), ("xid", str(p.xid.xid))), counter=True))
    out.extend(Series("cpu", "cpu_load_average", (("load_duration", d),)) for d in ("1m0s", "5m0s", "15m0s"))
    out.append(Series("cpu", "cpu_used_percent", ()))
    out.extend(Series("memory", f"memory_{k}", ()) for k in
               ("total_bytes", "available_bytes", "used_bytes", "used_percent", "free_bytes"))
    out.extend(Series("disk", f"disk_{k}", (("mount_point", "/"),)) for k in
               ("total_bytes", "free_bytes", "used_bytes"))
    return tuple(out)


def _gpu_values(p: NodeProfile, g: GpuSample) -> list[float]:
    m = p.model
    free = m.memory_total_bytes - m.memory_reserved_bytes - g.mem_used_bytes
    links = 1 if m.nvlink_links else 0
    bits = g.clock_reasons
    vals: list[float] = [
        g.temp_c, m.threshold_slowdown_c, m.threshold_mem_max_c,
        _pct(g.temp_c, m.threshold_slowdown_c), _pct(g.temp_c, m.threshold_mem_max_c),
        g.power_mw, m.power_limit_mw, _pct(g.power_mw, m.power_limit_mw),
        m.memory_total_bytes, m.memory_reserved_bytes, g.mem_used_bytes, free,
        _pct(g.mem_used_bytes, m.memory_total_bytes),
        g.util_pct, g.mem_util_pct,
        g.graphics_mhz, g.memory_mhz,
        g.ecc_aggregate_corrected, g.ecc_aggregate_uncorrected,
        g.ecc_volatile_corrected, g.ecc_volatile_uncorrected,
        1 if bits & CLOCK_HW_SLOWDOWN else 0, 1 if bits & CLOCK_HW_THERMAL else 0,
        1 if bits & CLOCK_HW_POWER_BRAKE else 0,
        links, links, sum(g.nvlink_replay), sum(g.nvlink_recovery), sum(g.nvlink_crc),
        1 if g.process_mem_bytes > 0 else 0,
    ]
    if m.row_remapping:
        vals += [g.remapped_uncorrectable, 1 if g.remap_pending else 0, 1 if g.remap_failed else 0]
    return vals


def values(p: NodeProfile, s: NodeSample) -> list[float | None]:
    """The value of each of `series(p)` at sample `s`; None where the series has no point yet
    (GPUd's XID counter exists only once an XID has been seen)."""
    out: list[float | None] = []
    for g in s.gpus:
        out.extend(_gpu_values(p, g))
    if p.xid is not None:
        out.append(1 if s.ts >= p.xid.ts else None)
    h = s.host
    out += [h.load_1m, h.load_5m, h.load_15m, h.cpu_used_pct,
            h.mem_total_bytes, h.mem_available_bytes, h.mem_used_bytes,
            _pct(h.mem_used_bytes, h.mem_total_bytes), h.mem_free_bytes,
            h.disk_total_bytes, h.disk_free_bytes, h.disk_used_bytes]
    # Go writes an integral float64 as "34": hand such values over as ints.
    return [int(v) if isinstance(v, float) and v.is_integer() else v for v in out]


def metric_points(p: NodeProfile, s: NodeSample, all_series: tuple[Series, ...] | None = None
                  ) -> list[MetricPoint]:
    """The points GPUd stores for sample `s` (names as in shared/gpud/API.md)."""
    sers = all_series if all_series is not None else series(p)
    return [MetricPoint(se.component, se.name, se.labels, float(v), se.counter)
            for se, v in zip(sers, values(p, s), strict=True) if v is not None]
