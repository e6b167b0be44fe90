"""Adapter for `/v1/metrics`: the latest sample per (metric, labels), mapped to readings.

Two row shapes exist (shared/gpud/API.md):
- v0.5+: `{"unix_seconds": <milliseconds>, "name", "labels": {"uuid": ...}, "value"}`;
- v0.4:  `{"unix_seconds": <seconds>, "metric_name", "metric_secondary_name": <GPU id>, "value"}`.
Some releases in between sent both names; `name`/`labels` win. The time unit is told by magnitude
(anything past 1e11 is milliseconds), which holds for both shapes for centuries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flow.health.gpud.blobs import disk_usage
from flow.health.gpud.gpus import GpuFacts
from flow.health.gpud.values import component_entries, opt_float, opt_int, opt_text
from flow.health.snapshot import DiskUsage, ReadError
from flow.text import clean_text

__all__ = ["MetricFacts", "Sample", "facts_from_samples", "latest_samples", "samples_from_response"]

_MS_THRESHOLD = 1e11


@dataclass(frozen=True)
class Sample:
    component: str
    name: str
    labels: tuple[tuple[str, str], ...]  # sorted (key, value) pairs
    time_s: float | None
    value: float

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


@dataclass
class MetricFacts:
    gpus: list[GpuFacts] = field(default_factory=list)
    host: dict[str, Any] = field(default_factory=dict)
    disks: list[DiskUsage] = field(default_factory=list)


def _v04_labels(name: str, secondary: str) -> dict[str, str]:
    """v0.4 had one free-form secondary name; give it the label its v0.5 successor uses."""
    if name.startswith("accelerator_nvidia_"):
        return {"uuid": secondary}
    if name.startswith("disk_"):
        return {"mount_point": secondary}
    if name == "cpu_load_average":
        return {"load_duration": secondary}
    return {"id": secondary}


def _sample(component: str, row: Any) -> tuple[Sample | None, str | None]:
    """One row -> (sample or None, schema seen: "v0.4", "v0.5+" or None)."""
    if not isinstance(row, Mapping):
        return None, None
    name, schema = opt_text(row.get("name")), "v0.5+"
    labels: dict[str, str] = {}
    raw_labels = row.get("labels")
    if isinstance(raw_labels, Mapping):
        labels = {clean_text(str(k)): clean_text(str(v))
                  for k, v in raw_labels.items() if isinstance(v, (str, int, float))}
    if name is None:
        name, schema = opt_text(row.get("metric_name")), "v0.4"
        secondary = opt_text(row.get("metric_secondary_name"))
        if name is not None and secondary is not None and not labels:
            labels = _v04_labels(name, secondary)
    value = opt_float(row.get("value"))
    if name is None or value is None:
        return None, None
    time_s = opt_float(row.get("unix_seconds"))
    if time_s is not None and time_s > _MS_THRESHOLD:
        time_s /= 1000.0
    return Sample(component, name, tuple(sorted(labels.items())), time_s, value), schema


def samples_from_response(body: Any) -> tuple[list[Sample], list[ReadError], set[str]]:
    """All samples of a `/v1/metrics` answer, the entries that could not be read, and the row
    schemas seen. Never raises."""
    samples: list[Sample] = []
    errors: list[ReadError] = []
    schemas: set[str] = set()
    for component, rows in component_entries(body, "metrics", "metrics", errors):
        for row in rows:
            sample, schema = _sample(component, row)
            if sample is not None:
                samples.append(sample)
            if schema is not None:
                schemas.add(schema)
    return samples, errors, schemas


def latest_samples(samples: list[Sample]) -> list[Sample]:
    """The newest sample of each series (name + labels); a sample without a time is oldest."""
    newest: dict[tuple[str, tuple[tuple[str, str], ...]], Sample] = {}
    for sample in samples:
        key = (sample.name, sample.labels)
        held = newest.get(key)
        if held is None or (sample.time_s or float("-inf")) >= (held.time_s or float("-inf")):
            newest[key] = sample
    return list(newest.values())


def _ident(v: float) -> float:
    return v


def _count(v: float) -> int | None:
    return opt_int(v)


def _watts(v: float) -> float:
    return v / 1000.0


def _flag(v: float) -> bool:
    return v > 0


#: metric name -> (GpuReading field, conversion). Names from shared/gpud/API.md.
_GPU_METRICS: Mapping[str, tuple[str, Callable[[float], Any]]] = {
    "accelerator_nvidia_temperature_current_celsius": ("temp_c", _ident),
    "accelerator_nvidia_temperature_current_hbm_celsius": ("temp_hbm_c", _ident),
    "accelerator_nvidia_temperature_slowdown_threshold_celsius": ("slowdown_temp_c", _ident),
    "accelerator_nvidia_temperature_mem_max_threshold_celsius": ("mem_max_temp_c", _ident),
    "accelerator_nvidia_power_current_usage_milli_watts": ("power_w", _watts),
    "accelerator_nvidia_power_enforced_limit_milli_watts": ("power_limit_w", _watts),
    "accelerator_nvidia_memory_total_bytes": ("mem_total_bytes", _count),
    "accelerator_nvidia_memory_used_bytes": ("mem_used_bytes", _count),
    "accelerator_nvidia_utilization_gpu_util_percent": ("util_gpu_pct", _ident),
    "accelerator_nvidia_utilization_memory_util_percent": ("util_mem_pct", _ident),
    "accelerator_nvidia_clock_speed_graphics_mhz": ("clock_graphics_mhz", _ident),
    "accelerator_nvidia_clock_speed_memory_mhz": ("clock_mem_mhz", _ident),
    "accelerator_nvidia_ecc_volatile_total_corrected": ("ecc_volatile_corrected", _count),
    "accelerator_nvidia_ecc_volatile_total_uncorrected": ("ecc_volatile_uncorrected", _count),
    "accelerator_nvidia_ecc_aggregate_total_corrected": ("ecc_aggregate_corrected", _count),
    "accelerator_nvidia_ecc_aggregate_total_uncorrected": ("ecc_aggregate_uncorrected", _count),
    "accelerator_nvidia_remapped_rows_due_to_uncorrectable_errors": ("remapped_rows_uncorrectable", _count),
    "accelerator_nvidia_remapped_rows_remapping_pending": ("remap_pending", _flag),
    "accelerator_nvidia_remapped_rows_remapping_failed": ("remap_failed", _flag),
    "accelerator_nvidia_nvlink_replay_errors": ("nvlink_replay_errors", _count),
    "accelerator_nvidia_nvlink_recovery_errors": ("nvlink_recovery_errors", _count),
    "accelerator_nvidia_nvlink_crc_errors": ("nvlink_crc_errors", _count),
    "accelerator_nvidia_processes_running_total": ("processes", _count),
}
# Counters that may come as several series per GPU (e.g. one per link) and add up.
_SUMMED = frozenset({"nvlink_replay_errors", "nvlink_recovery_errors", "nvlink_crc_errors"})
_THROTTLE_METRICS: Mapping[str, str] = {
    "accelerator_nvidia_clock_hw_slowdown": "hw_slowdown",
    "accelerator_nvidia_clock_hw_slowdown_thermal": "hw_thermal_slowdown",
    "accelerator_nvidia_clock_hw_slowdown_power_brake": "hw_power_brake_slowdown",
}
_HOST_METRICS: Mapping[str, str] = {
    "cpu_used_percent": "cpu_pct",
    "memory_total_bytes": "mem_total_bytes",
    "memory_used_bytes": "mem_used_bytes",
    "memory_used_percent": "mem_used_pct",
}
_LOADS: Mapping[str, str] = {"1m0s": "load1", "5m0s": "load5", "15m0s": "load15"}
_INT_HOST = frozenset({"mem_total_bytes", "mem_used_bytes"})


def facts_from_samples(samples: list[Sample]) -> MetricFacts:
    """Readings from the latest samples (pass `latest_samples(...)`)."""
    per_gpu: dict[str, dict[str, Any]] = {}
    throttles: dict[str, list[str]] = {}
    host: dict[str, Any] = {}
    disks: dict[str, dict[str, int | None]] = {}
    for s in samples:
        uuid = s.label("uuid")
        if s.name in _GPU_METRICS and uuid:
            name, convert = _GPU_METRICS[s.name]
            values = per_gpu.setdefault(uuid, {})
            value = convert(s.value)
            if value is None:
                continue
            if name in _SUMMED and name in values:
                values[name] = opt_int(values[name] + value)
            else:
                values.setdefault(name, value)
        elif s.name in _THROTTLE_METRICS and uuid:
            active = throttles.setdefault(uuid, [])
            if s.value > 0 and _THROTTLE_METRICS[s.name] not in active:
                active.append(_THROTTLE_METRICS[s.name])
        elif s.name in _HOST_METRICS:
            key = _HOST_METRICS[s.name]
            host.setdefault(key, opt_int(s.value) if key in _INT_HOST else s.value)
        elif s.name == "cpu_load_average" and s.label("load_duration") in _LOADS:
            host.setdefault(_LOADS[s.label("load_duration") or ""], s.value)
        elif s.name in ("disk_total_bytes", "disk_used_bytes", "disk_free_bytes") and s.label("mount_point"):
            disks.setdefault(s.label("mount_point") or "", {}).setdefault(s.name[5:-6], opt_int(s.value))
    for uuid, active in throttles.items():
        per_gpu.setdefault(uuid, {})["throttle_reasons"] = tuple(active)
    return MetricFacts(
        gpus=[GpuFacts(uuid=uuid, bus_id=None, values=values) for uuid, values in per_gpu.items()],
        host=host,
        disks=[disk_usage(mount, d.get("total"), d.get("used"), d.get("free")) for mount, d in disks.items()],
    )
