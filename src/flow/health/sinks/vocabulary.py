"""The metric vocabulary: one pure function from snapshots to metric families.

Every sink (the Prometheus exporter, Pushgateway, Datadog, CloudWatch, OTLP) and the Grafana
dashboard take their names from here, so a metric is called the same everywhere. The table
in docs/metrics.md is this module's `METRICS` and `SWEEP_METRICS`, written out.

Conventions (Prometheus naming): a `flow_` prefix, the unit at the end of the name (`_celsius`,
`_watts`, `_bytes`, `_hertz`, `_seconds`, `_percent`), `_total` on counters. Percentages stay
0-100 (not Prometheus' 0-1 `_ratio`) because the scoring thresholds in config.yaml are
percentages, so an alert rule reads like the threshold it mirrors.

A reading that is None produces no sample: "not reported" is never exported as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from flow.health.snapshot import GpuReading, HealthStatus, Snapshot

__all__ = [
    "ALL_METRICS",
    "GPU_LABELS",
    "KNOWN_THROTTLE_REASONS",
    "METRICS",
    "NODE_LABELS",
    "SWEEP_METRICS",
    "MetricFamily",
    "MetricSpec",
    "MetricType",
    "Sample",
    "latest_per_node",
    "metric_families",
    "snapshot_families",
    "spec",
]

#: Labels on every per-node sample, in this order.
NODE_LABELS: tuple[str, ...] = ("task_id", "task_name", "node", "instance_type")
#: Labels on every per-GPU sample, in this order.
GPU_LABELS: tuple[str, ...] = (*NODE_LABELS, "gpu", "uuid", "model")

#: Clock-event reasons always exported per GPU (0 or 1), so a dashboard sees a flat 0 rather
#: than no data; any other active reason GPUd reports is exported with value 1 as well.
KNOWN_THROTTLE_REASONS: tuple[str, ...] = (
    "hw_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
    "sw_thermal_slowdown",
    "sw_power_cap",
)


class MetricType(str, Enum):
    GAUGE = "gauge"
    COUNTER = "counter"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    """One metric of the vocabulary.

    `name` is the sample name (counters end in `_total`); `scope` is "node", "gpu" or
    "sweep" and decides the base labels; `labels` are the metric's own extra labels;
    `source` names the snapshot field it comes from (for docs/metrics.md).
    """

    name: str
    type: MetricType
    help: str
    unit: str
    scope: str
    source: str
    labels: tuple[str, ...] = ()

    @property
    def family_name(self) -> str:
        """The name without `_total`: what prometheus_client and OpenMetrics call the family."""
        if self.type is MetricType.COUNTER and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        return self.name

    @property
    def label_names(self) -> tuple[str, ...]:
        base = {"node": NODE_LABELS, "gpu": GPU_LABELS}.get(self.scope, ())
        return (*base, *self.labels)


@dataclass(frozen=True)
class Sample:
    """One value of one series. `labels` pairs follow the spec's `label_names` order."""

    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp: datetime

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class MetricFamily:
    spec: MetricSpec
    samples: tuple[Sample, ...]


def _g(name: str, unit: str, scope: str, source: str, help: str, labels: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(
        name=name, type=MetricType.GAUGE, unit=unit, scope=scope, source=source, help=help, labels=labels
    )


def _c(name: str, unit: str, scope: str, source: str, help: str, labels: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(
        name=name, type=MetricType.COUNTER, unit=unit, scope=scope, source=source, help=help, labels=labels
    )


# Per node.
NODE_SCORE = _g(
    "flow_node_health_score",
    "",
    "node",
    "verdict.score",
    "Health score 0-100 (absent while the status is unknown)",
)
NODE_STATUS = _g(
    "flow_node_status",
    "",
    "node",
    "verdict.status",
    "1 for the node's current health status, 0 for the others",
    ("status",),
)
NODE_REASONS = _g(
    "flow_node_health_reasons",
    "",
    "node",
    "verdict.reasons[].code/severity",
    "Reasons behind the verdict, counted by code and severity",
    ("code", "severity"),
)
NODE_SCRAPE_SUCCESS = _g(
    "flow_node_scrape_success", "", "node", "gpud.reachable", "1 when GPUd answered for this node, else 0"
)
NODE_SCRAPE_STATE = _g(
    "flow_node_scrape_state",
    "",
    "node",
    "gpud.state",
    "1 for the outcome of the last read of GPUd (ok or the failure class)",
    ("state",),
)
NODE_SCRAPE_DURATION = _g(
    "flow_node_scrape_duration_seconds", "seconds", "node", "gpud.latency_ms", "Time GPUd took to answer"
)
NODE_TIMESTAMP = _g(
    "flow_node_snapshot_timestamp_seconds",
    "seconds",
    "node",
    "timestamp",
    "When the snapshot was taken (Unix time)",
)
NODE_GPUS = _g("flow_node_gpus", "", "node", "len(gpus)", "GPUs reported on the node")
NODE_INFO = _g(
    "flow_node_info",
    "",
    "node",
    "gpud.version/driver_version/cuda_version/api_schema",
    "Constant 1, labelled with GPUd and driver versions",
    ("gpud_version", "driver_version", "cuda_version", "gpud_api"),
)
HOST_CPU = _g(
    "flow_host_cpu_utilization_percent", "percent", "node", "host.cpu_pct", "Host CPU utilization, 0-100"
)
HOST_LOAD1 = _g("flow_host_load1", "", "node", "host.load1", "Host 1-minute load average")
HOST_LOAD5 = _g("flow_host_load5", "", "node", "host.load5", "Host 5-minute load average")
HOST_LOAD15 = _g("flow_host_load15", "", "node", "host.load15", "Host 15-minute load average")
HOST_MEM_USED = _g(
    "flow_host_memory_used_bytes", "bytes", "node", "host.mem_used_bytes", "Host memory in use"
)
HOST_MEM_TOTAL = _g(
    "flow_host_memory_total_bytes", "bytes", "node", "host.mem_total_bytes", "Host memory installed"
)
HOST_DISK_USED = _g(
    "flow_host_disk_used_bytes",
    "bytes",
    "node",
    "host.disks[].used_bytes",
    "Disk space in use, per mount",
    ("mount",),
)
HOST_DISK_TOTAL = _g(
    "flow_host_disk_total_bytes",
    "bytes",
    "node",
    "host.disks[].total_bytes",
    "Disk size, per mount",
    ("mount",),
)
HOST_NET_RX = _g(
    "flow_host_network_receive_bytes_per_second",
    "bytes_per_second",
    "node",
    "host.net_rx_bytes_per_s",
    "Host network receive rate",
)
HOST_NET_TX = _g(
    "flow_host_network_transmit_bytes_per_second",
    "bytes_per_second",
    "node",
    "host.net_tx_bytes_per_s",
    "Host network transmit rate",
)
HOST_PROCESSES = _g("flow_host_processes", "", "node", "host.processes", "Processes on the host")

# Per GPU.
GPU_TEMP = _g("flow_gpu_temperature_celsius", "celsius", "gpu", "gpus[].temp_c", "GPU core temperature")
GPU_MEM_TEMP = _g(
    "flow_gpu_memory_temperature_celsius",
    "celsius",
    "gpu",
    "gpus[].temp_hbm_c",
    "GPU memory (HBM) temperature",
)
GPU_SLOWDOWN_TEMP = _g(
    "flow_gpu_slowdown_temperature_celsius",
    "celsius",
    "gpu",
    "gpus[].slowdown_temp_c",
    "Temperature at which the GPU slows itself down",
)
GPU_MEM_MAX_TEMP = _g(
    "flow_gpu_memory_max_temperature_celsius",
    "celsius",
    "gpu",
    "gpus[].mem_max_temp_c",
    "Maximum operating temperature of the GPU memory",
)
GPU_POWER = _g("flow_gpu_power_watts", "watts", "gpu", "gpus[].power_w", "GPU power draw")
GPU_POWER_LIMIT = _g(
    "flow_gpu_power_limit_watts", "watts", "gpu", "gpus[].power_limit_w", "GPU enforced power limit"
)
GPU_MEM_USED = _g("flow_gpu_memory_used_bytes", "bytes", "gpu", "gpus[].mem_used_bytes", "GPU memory in use")
GPU_MEM_TOTAL = _g(
    "flow_gpu_memory_total_bytes", "bytes", "gpu", "gpus[].mem_total_bytes", "GPU memory installed"
)
GPU_UTIL = _g(
    "flow_gpu_utilization_percent", "percent", "gpu", "gpus[].util_gpu_pct", "GPU compute utilization, 0-100"
)
GPU_MEM_UTIL = _g(
    "flow_gpu_memory_utilization_percent",
    "percent",
    "gpu",
    "gpus[].util_mem_pct",
    "GPU memory-bandwidth utilization, 0-100",
)
GPU_CLOCK_GRAPHICS = _g(
    "flow_gpu_graphics_clock_hertz", "hertz", "gpu", "gpus[].clock_graphics_mhz", "GPU graphics (SM) clock"
)
GPU_CLOCK_MEM = _g("flow_gpu_memory_clock_hertz", "hertz", "gpu", "gpus[].clock_mem_mhz", "GPU memory clock")
GPU_THROTTLE = _g(
    "flow_gpu_throttle_active",
    "",
    "gpu",
    "gpus[].throttle_reasons",
    "1 while the clock-event (throttle) reason is active, else 0",
    ("reason",),
)
GPU_ECC = _c(
    "flow_gpu_ecc_errors_total",
    "",
    "gpu",
    "gpus[].ecc_{volatile,aggregate}_{corrected,uncorrected}",
    "ECC errors; scope volatile counts since the driver loaded, aggregate over the GPU's life",
    ("type", "scope"),
)
GPU_REMAPPED_ROWS = _c(
    "flow_gpu_remapped_rows_uncorrectable_total",
    "",
    "gpu",
    "gpus[].remapped_rows_uncorrectable",
    "Memory rows remapped because of uncorrectable errors",
)
GPU_REMAP_PENDING = _g(
    "flow_gpu_row_remap_pending",
    "",
    "gpu",
    "gpus[].remap_pending",
    "1 while a row remapping waits for a GPU reset",
)
GPU_REMAP_FAILED = _g(
    "flow_gpu_row_remap_failed",
    "",
    "gpu",
    "gpus[].remap_failed",
    "1 when row remapping has failed (the GPU needs replacing)",
)
GPU_NVLINK = _c(
    "flow_gpu_nvlink_errors_total",
    "",
    "gpu",
    "gpus[].nvlink_{replay,recovery,crc}_errors",
    "NVLink errors, by type",
    ("type",),
)
GPU_PROCESSES = _g("flow_gpu_processes", "", "gpu", "gpus[].processes", "Processes using the GPU")
GPU_XID = _g(
    "flow_gpu_xid_errors",
    "",
    "gpu",
    "xids[].code/xid_class/gpu_index",
    "XID errors GPUd currently reports (its event window), by code",
    ("code", "xid_class"),
)

#: The metrics computed from snapshots, in exposition order.
METRICS: tuple[MetricSpec, ...] = (
    NODE_SCORE,
    NODE_STATUS,
    NODE_REASONS,
    NODE_SCRAPE_SUCCESS,
    NODE_SCRAPE_STATE,
    NODE_SCRAPE_DURATION,
    NODE_TIMESTAMP,
    NODE_GPUS,
    NODE_INFO,
    HOST_CPU,
    HOST_LOAD1,
    HOST_LOAD5,
    HOST_LOAD15,
    HOST_MEM_USED,
    HOST_MEM_TOTAL,
    HOST_DISK_USED,
    HOST_DISK_TOTAL,
    HOST_NET_RX,
    HOST_NET_TX,
    HOST_PROCESSES,
    GPU_TEMP,
    GPU_MEM_TEMP,
    GPU_SLOWDOWN_TEMP,
    GPU_MEM_MAX_TEMP,
    GPU_POWER,
    GPU_POWER_LIMIT,
    GPU_MEM_USED,
    GPU_MEM_TOTAL,
    GPU_UTIL,
    GPU_MEM_UTIL,
    GPU_CLOCK_GRAPHICS,
    GPU_CLOCK_MEM,
    GPU_THROTTLE,
    GPU_ECC,
    GPU_REMAPPED_ROWS,
    GPU_REMAP_PENDING,
    GPU_REMAP_FAILED,
    GPU_NVLINK,
    GPU_PROCESSES,
    GPU_XID,
)

#: The exporter's own metrics about its sweeps (`flow health serve`); no snapshot behind them.
SWEEP_METRICS: tuple[MetricSpec, ...] = (
    _g("flow_sweep_duration_seconds", "seconds", "sweep", "exporter", "Duration of the last fleet sweep"),
    _g("flow_sweep_success", "", "sweep", "exporter", "1 when the last fleet sweep completed, else 0"),
    _g(
        "flow_sweep_last_success_timestamp_seconds",
        "seconds",
        "sweep",
        "exporter",
        "When the last successful sweep finished (Unix time)",
    ),
    _g("flow_sweep_nodes", "", "sweep", "exporter", "Nodes in the last successful sweep"),
    _c("flow_sweeps_total", "", "sweep", "exporter", "Fleet sweeps, by result (ok or error)", ("result",)),
)

ALL_METRICS: tuple[MetricSpec, ...] = METRICS + SWEEP_METRICS
_BY_NAME = {s.name: s for s in ALL_METRICS}


def spec(name: str) -> MetricSpec:
    """The spec of a metric by its sample name. Raises KeyError for a name not in the vocabulary."""
    return _BY_NAME[name]


def _num(value: float | int | bool | None, scale: float = 1.0) -> float | None:
    if value is None:
        return None
    number = float(value) * scale
    # NaN/Inf never reach a sink: CloudWatch refuses them and Prometheus would store garbage.
    return number if math.isfinite(number) else None


_NodeGetter = Callable[[Snapshot], "float | int | bool | None"]
_GpuGetter = Callable[[GpuReading], "float | int | bool | None"]

_HOST_SIMPLE: tuple[tuple[MetricSpec, _NodeGetter, float], ...] = (
    (HOST_CPU, lambda s: s.host.cpu_pct if s.host else None, 1.0),
    (HOST_LOAD1, lambda s: s.host.load1 if s.host else None, 1.0),
    (HOST_LOAD5, lambda s: s.host.load5 if s.host else None, 1.0),
    (HOST_LOAD15, lambda s: s.host.load15 if s.host else None, 1.0),
    (HOST_MEM_USED, lambda s: s.host.mem_used_bytes if s.host else None, 1.0),
    (HOST_MEM_TOTAL, lambda s: s.host.mem_total_bytes if s.host else None, 1.0),
    (HOST_NET_RX, lambda s: s.host.net_rx_bytes_per_s if s.host else None, 1.0),
    (HOST_NET_TX, lambda s: s.host.net_tx_bytes_per_s if s.host else None, 1.0),
    (HOST_PROCESSES, lambda s: s.host.processes if s.host else None, 1.0),
)

_GPU_SIMPLE: tuple[tuple[MetricSpec, _GpuGetter, float], ...] = (
    (GPU_TEMP, lambda g: g.temp_c, 1.0),
    (GPU_MEM_TEMP, lambda g: g.temp_hbm_c, 1.0),
    (GPU_SLOWDOWN_TEMP, lambda g: g.slowdown_temp_c, 1.0),
    (GPU_MEM_MAX_TEMP, lambda g: g.mem_max_temp_c, 1.0),
    (GPU_POWER, lambda g: g.power_w, 1.0),
    (GPU_POWER_LIMIT, lambda g: g.power_limit_w, 1.0),
    (GPU_MEM_USED, lambda g: g.mem_used_bytes, 1.0),
    (GPU_MEM_TOTAL, lambda g: g.mem_total_bytes, 1.0),
    (GPU_UTIL, lambda g: g.util_gpu_pct, 1.0),
    (GPU_MEM_UTIL, lambda g: g.util_mem_pct, 1.0),
    (GPU_CLOCK_GRAPHICS, lambda g: g.clock_graphics_mhz, 1e6),
    (GPU_CLOCK_MEM, lambda g: g.clock_mem_mhz, 1e6),
    (GPU_REMAPPED_ROWS, lambda g: g.remapped_rows_uncorrectable, 1.0),
    (GPU_REMAP_PENDING, lambda g: g.remap_pending, 1.0),
    (GPU_REMAP_FAILED, lambda g: g.remap_failed, 1.0),
    (GPU_PROCESSES, lambda g: g.processes, 1.0),
)

_ECC_FIELDS = (
    ("corrected", "volatile", "ecc_volatile_corrected"),
    ("uncorrected", "volatile", "ecc_volatile_uncorrected"),
    ("corrected", "aggregate", "ecc_aggregate_corrected"),
    ("uncorrected", "aggregate", "ecc_aggregate_uncorrected"),
)
_NVLINK_FIELDS = (
    ("replay", "nvlink_replay_errors"),
    ("recovery", "nvlink_recovery_errors"),
    ("crc", "nvlink_crc_errors"),
)


class _Builder:
    """Collects samples per spec for one or more snapshots."""

    def __init__(self) -> None:
        self.samples: dict[str, list[Sample]] = {}

    def add(
        self, metric: MetricSpec, labels: tuple[tuple[str, str], ...], value: float | None, when: datetime
    ) -> None:
        if value is None:
            return
        self.samples.setdefault(metric.name, []).append(Sample(labels, value, when))

    def families(self) -> list[MetricFamily]:
        return [MetricFamily(m, tuple(self.samples[m.name])) for m in METRICS if m.name in self.samples]


def _node_labels(s: Snapshot) -> tuple[tuple[str, str], ...]:
    return (
        ("task_id", s.task_id),
        ("task_name", s.task_name),
        ("node", s.node),
        ("instance_type", s.instance_type or ""),
    )


def _gpu_labels(s: Snapshot, index: int | None, gpu: GpuReading | None) -> tuple[tuple[str, str], ...]:
    return (
        *_node_labels(s),
        ("gpu", "" if index is None else str(index)),
        ("uuid", (gpu.uuid if gpu else None) or ""),
        ("model", (gpu.model if gpu else None) or ""),
    )


def _gpu_reported(g: GpuReading) -> bool:
    # Throttle zeros only where NVML evidently answered for this GPU; otherwise "no reasons"
    # could mean "not reported", which must not read as "not throttled".
    return any(v is not None for v in (g.temp_c, g.power_w, g.util_gpu_pct, g.clock_graphics_mhz))


def _add_snapshot(b: _Builder, s: Snapshot) -> None:
    when = s.timestamp
    node = _node_labels(s)
    verdict = s.verdict
    if verdict is not None and verdict.score is not None:
        b.add(NODE_SCORE, node, float(verdict.score), when)
    for status in HealthStatus:
        b.add(NODE_STATUS, (*node, ("status", status.value)), 1.0 if s.status is status else 0.0, when)
    counts: dict[tuple[str, str], int] = {}
    for reason in verdict.reasons if verdict else ():
        key = (reason.code, reason.severity.value)
        counts[key] = counts.get(key, 0) + 1
    for (code, severity), count in sorted(counts.items()):
        b.add(NODE_REASONS, (*node, ("code", code), ("severity", severity)), float(count), when)
    b.add(NODE_SCRAPE_SUCCESS, node, 1.0 if s.gpud.reachable else 0.0, when)
    b.add(NODE_SCRAPE_STATE, (*node, ("state", s.gpud.state)), 1.0, when)
    b.add(NODE_SCRAPE_DURATION, node, _num(s.gpud.latency_ms, 1e-3), when)
    b.add(NODE_TIMESTAMP, node, when.timestamp(), when)
    b.add(NODE_GPUS, node, float(len(s.gpus)), when)
    b.add(
        NODE_INFO,
        (
            *node,
            ("gpud_version", s.gpud.version or ""),
            ("driver_version", s.gpud.driver_version or ""),
            ("cuda_version", s.gpud.cuda_version or ""),
            ("gpud_api", s.gpud.api_schema or ""),
        ),
        1.0,
        when,
    )
    for metric, get_node, scale in _HOST_SIMPLE:
        b.add(metric, node, _num(get_node(s), scale), when)
    for disk in s.host.disks if s.host else ():
        labels = (*node, ("mount", disk.mount))
        b.add(HOST_DISK_USED, labels, _num(disk.used_bytes), when)
        b.add(HOST_DISK_TOTAL, labels, _num(disk.total_bytes), when)

    for gpu in s.gpus:
        labels = _gpu_labels(s, gpu.index, gpu)
        for metric, get_gpu, scale in _GPU_SIMPLE:
            b.add(metric, labels, _num(get_gpu(gpu), scale), when)
        if _gpu_reported(gpu):
            for reason_name in KNOWN_THROTTLE_REASONS:
                active = 1.0 if reason_name in gpu.throttle_reasons else 0.0
                b.add(GPU_THROTTLE, (*labels, ("reason", reason_name)), active, when)
        for reason_name in sorted(set(gpu.throttle_reasons) - set(KNOWN_THROTTLE_REASONS)):
            b.add(GPU_THROTTLE, (*labels, ("reason", reason_name)), 1.0, when)
        for error_type, scope, attr in _ECC_FIELDS:
            b.add(GPU_ECC, (*labels, ("type", error_type), ("scope", scope)), _num(getattr(gpu, attr)), when)
        for link_type, attr in _NVLINK_FIELDS:
            b.add(GPU_NVLINK, (*labels, ("type", link_type)), _num(getattr(gpu, attr)), when)

    by_index = {g.index: g for g in s.gpus}
    by_id = {key: g for g in s.gpus for key in (g.uuid, g.bus_id) if key}
    xid_counts: dict[tuple[int | None, int, str], int] = {}
    for xid in s.xids:
        gpu_reading = by_index.get(xid.gpu_index) if xid.gpu_index is not None else by_id.get(xid.gpu or "")
        index = gpu_reading.index if gpu_reading is not None else xid.gpu_index
        xid_key = (index, xid.code, xid.xid_class)
        xid_counts[xid_key] = xid_counts.get(xid_key, 0) + 1
    ordered = sorted(xid_counts.items(), key=lambda kv: (-1 if kv[0][0] is None else kv[0][0], kv[0][1]))
    for (index, xid_code, xid_class), count in ordered:
        labels = _gpu_labels(s, index, by_index.get(index) if index is not None else None)
        b.add(GPU_XID, (*labels, ("code", str(xid_code)), ("xid_class", xid_class)), float(count), when)


def snapshot_families(snapshot: Snapshot) -> list[MetricFamily]:
    """The metric families of one snapshot, in `METRICS` order; empty families are left out."""
    builder = _Builder()
    _add_snapshot(builder, snapshot)
    return builder.families()


def metric_families(snapshots: Iterable[Snapshot]) -> list[MetricFamily]:
    """The metric families of many snapshots (samples of all of them, in input order)."""
    builder = _Builder()
    for snapshot in snapshots:
        _add_snapshot(builder, snapshot)
    return builder.families()


def latest_per_node(snapshots: Sequence[Snapshot]) -> list[Snapshot]:
    """The newest snapshot of each (task_id, node), in first-seen order.

    A scrape or a Pushgateway group holds one value per series; older snapshots in a batch
    would be duplicates of the same series.
    """
    latest: dict[tuple[str, str], Snapshot] = {}
    for s in snapshots:
        key = (s.task_id, s.node)
        if key not in latest or s.timestamp >= latest[key].timestamp:
            latest[key] = s
    return list(latest.values())
