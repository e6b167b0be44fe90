"""The snapshot: one node's health at one moment, as one JSON object (one JSONL line).

Records are frozen dataclasses with explicit `to_dict()` / `from_dict()`. An unavailable
reading is `None` (JSON `null`): never 0 and never a missing key. Units are in the names
(`temp_c`, `power_w`, `mem_used_bytes`). `from_dict` ignores unknown keys, so a reader of
schema 1 can read records written by a later writer that only added fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import orjson

__all__ = [
    "SCHEMA_VERSION",
    "ComponentState",
    "DiskUsage",
    "Event",
    "GpuReading",
    "GpudStatus",
    "HealthStatus",
    "HostMetrics",
    "ReadError",
    "Reason",
    "Severity",
    "Snapshot",
    "Verdict",
    "XidError",
    "coerce_float",
    "coerce_int",
    "format_time",
    "parse_time",
    "utcnow",
]

SCHEMA_VERSION = 1


class HealthStatus(str, Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


class Severity(str, Enum):
    """How bad one reason is. `unknown` is the reason behind an Unknown verdict (GPUd not
    reached, no GPU data): it says the node could not be judged, so it never reads as critical."""

    INFO = "info"
    WARNING = "warning"
    UNKNOWN = "unknown"
    CRITICAL = "critical"

    def __str__(self) -> str:
        return self.value

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.UNKNOWN: 2, Severity.CRITICAL: 3}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a `Z`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    # isoformat is a fifth of strftime's cost (a fleet document formats 10,000 of these);
    # in UTC its offset is always "+00:00".
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    """Parse ISO 8601 (`Z` or an offset) into an aware UTC datetime."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _opt_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return parse_time(str(value))
    except ValueError:
        return None


def coerce_float(value: Any) -> float | None:
    """A JSON value as a reading: a number, or None (also for bools and junk). Never raises."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def coerce_int(value: Any) -> int | None:
    """A JSON value as a count: an int, or None (also for bools and junk). Never raises."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        return None


_opt_float = coerce_float
_opt_int = coerce_int


def _opt_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _strs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(str(v) for v in value)


def _records(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


@dataclass(frozen=True, kw_only=True)
class Reason:
    """One penalty behind a verdict: what, how bad, which GPU, and what to do about it."""

    code: str
    severity: Severity
    message: str
    gpu: int | None = None
    action: str | None = None
    component: str | None = None
    penalty: int = 0
    value: float | None = None  # the reading that fired the rule (°C, %, count), for ranking
    # GPUd's repair-action enums (REBOOT_SYSTEM, ...) behind `action`, which says them in words.
    repair_actions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "gpu": self.gpu,
            "message": self.message,
            "action": self.action,
            "component": self.component,
            "penalty": self.penalty,
            "value": self.value,
            "repair_actions": list(self.repair_actions),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reason:
        try:
            severity = Severity(d.get("severity", "info"))
        except ValueError:
            severity = Severity.INFO
        return cls(
            code=str(d.get("code", "")),
            severity=severity,
            message=str(d.get("message", "")),
            gpu=_opt_int(d.get("gpu")),
            action=_opt_str(d.get("action")),
            component=_opt_str(d.get("component")),
            penalty=_opt_int(d.get("penalty")) or 0,
            value=_opt_float(d.get("value")),
            repair_actions=_strs(d.get("repair_actions")),
        )


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """`score` is 0-100, or None when the status is unknown."""

    score: int | None
    status: HealthStatus
    reasons: tuple[Reason, ...] = ()

    @property
    def main_reason(self) -> Reason | None:
        """The most severe, most costly reason: what a one-line view shows."""
        if not self.reasons:
            return None
        return max(self.reasons, key=lambda r: (r.severity.rank, r.penalty))

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "status": self.status.value,
            "reasons": [r.to_dict() for r in self.reasons],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        try:
            status = HealthStatus(d.get("status", "unknown"))
        except ValueError:
            status = HealthStatus.UNKNOWN
        return cls(
            score=_opt_int(d.get("score")),
            status=status,
            reasons=tuple(Reason.from_dict(r) for r in _records(d.get("reasons"))),
        )


@dataclass(frozen=True, kw_only=True)
class GpuReading:
    """One GPU's metrics. Every reading may be None (unsupported or not reported)."""

    index: int
    uuid: str | None = None
    bus_id: str | None = None
    model: str | None = None
    temp_c: float | None = None
    temp_hbm_c: float | None = None
    slowdown_temp_c: float | None = None  # the device's own HW slowdown threshold
    mem_max_temp_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    util_gpu_pct: float | None = None
    util_mem_pct: float | None = None
    clock_graphics_mhz: float | None = None
    clock_mem_mhz: float | None = None
    # Active clock-event reasons, by NVML's names: hw_slowdown, hw_thermal_slowdown,
    # hw_power_brake_slowdown, sw_power_cap, sw_thermal_slowdown, gpu_idle, ...
    throttle_reasons: tuple[str, ...] = ()
    ecc_volatile_corrected: int | None = None
    ecc_volatile_uncorrected: int | None = None
    ecc_aggregate_corrected: int | None = None
    ecc_aggregate_uncorrected: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remap_pending: bool | None = None
    remap_failed: bool | None = None
    nvlink_replay_errors: int | None = None
    nvlink_recovery_errors: int | None = None
    nvlink_crc_errors: int | None = None
    processes: int | None = None
    # GPUd lists the GPU (machine-info: NVML enumerated it when GPUd started) but no metric or
    # component reported a reading for it: usually a GPU lost since (fallen off the bus).
    silent: bool = False

    @property
    def mem_used_pct(self) -> float | None:
        if self.mem_used_bytes is None or not self.mem_total_bytes:
            return None
        return 100.0 * self.mem_used_bytes / self.mem_total_bytes

    @property
    def nvlink_errors(self) -> int | None:
        counts = [
            c
            for c in (self.nvlink_replay_errors, self.nvlink_recovery_errors, self.nvlink_crc_errors)
            if c is not None
        ]
        return sum(counts) if counts else None

    @classmethod
    def with_readings(cls, index: int, readings: Mapping[str, Any]) -> GpuReading:
        """`GpuReading(index=index, **readings)`, the other fields at their defaults, without
        the frozen dataclass's `object.__setattr__` per field: reading a fleet back from
        Prometheus builds 80,000 of them, and that constructor costs 4 µs apiece.

        Raises:
            TypeError: a name in `readings` is not a field.
        """
        unknown = readings.keys() - _GPU_FIELD_DEFAULTS.keys()
        if unknown:
            raise TypeError(f"GpuReading has no field {sorted(unknown)[0]!r}")
        values = dict(_GPU_FIELD_DEFAULTS)
        values.update(readings)
        values["index"] = index
        reading = object.__new__(cls)
        object.__setattr__(reading, "__dict__", values)
        return reading

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["throttle_reasons"] = list(self.throttle_reasons)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GpuReading:
        return cls(
            index=_opt_int(d.get("index")) or 0,
            uuid=_opt_str(d.get("uuid")),
            bus_id=_opt_str(d.get("bus_id")),
            model=_opt_str(d.get("model")),
            temp_c=_opt_float(d.get("temp_c")),
            temp_hbm_c=_opt_float(d.get("temp_hbm_c")),
            slowdown_temp_c=_opt_float(d.get("slowdown_temp_c")),
            mem_max_temp_c=_opt_float(d.get("mem_max_temp_c")),
            power_w=_opt_float(d.get("power_w")),
            power_limit_w=_opt_float(d.get("power_limit_w")),
            mem_used_bytes=_opt_int(d.get("mem_used_bytes")),
            mem_total_bytes=_opt_int(d.get("mem_total_bytes")),
            util_gpu_pct=_opt_float(d.get("util_gpu_pct")),
            util_mem_pct=_opt_float(d.get("util_mem_pct")),
            clock_graphics_mhz=_opt_float(d.get("clock_graphics_mhz")),
            clock_mem_mhz=_opt_float(d.get("clock_mem_mhz")),
            throttle_reasons=_strs(d.get("throttle_reasons")),
            ecc_volatile_corrected=_opt_int(d.get("ecc_volatile_corrected")),
            ecc_volatile_uncorrected=_opt_int(d.get("ecc_volatile_uncorrected")),
            ecc_aggregate_corrected=_opt_int(d.get("ecc_aggregate_corrected")),
            ecc_aggregate_uncorrected=_opt_int(d.get("ecc_aggregate_uncorrected")),
            remapped_rows_uncorrectable=_opt_int(d.get("remapped_rows_uncorrectable")),
            remap_pending=_opt_bool(d.get("remap_pending")),
            remap_failed=_opt_bool(d.get("remap_failed")),
            nvlink_replay_errors=_opt_int(d.get("nvlink_replay_errors")),
            nvlink_recovery_errors=_opt_int(d.get("nvlink_recovery_errors")),
            nvlink_crc_errors=_opt_int(d.get("nvlink_crc_errors")),
            processes=_opt_int(d.get("processes")),
            silent=d.get("silent") is True,
        )


_GPU_FIELD_DEFAULTS: dict[str, Any] = dict(GpuReading(index=0).__dict__)


@dataclass(frozen=True, kw_only=True)
class XidError:
    """One XID reported by GPUd (from a state's reason or from an event)."""

    code: int
    gpu: str | None = None  # PCI bus id or UUID, as GPUd named it
    gpu_index: int | None = None
    message: str = ""
    time: datetime | None = None
    source: str = "state"  # "state" or "event"
    xid_class: str = "unknown"  # see flow.health.xid: fatal, warning, application, ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "gpu": self.gpu,
            "gpu_index": self.gpu_index,
            "message": self.message,
            "time": format_time(self.time) if self.time else None,
            "source": self.source,
            "xid_class": self.xid_class,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> XidError:
        return cls(
            code=_opt_int(d.get("code")) or 0,
            gpu=_opt_str(d.get("gpu")),
            gpu_index=_opt_int(d.get("gpu_index")),
            message=str(d.get("message") or ""),
            time=_opt_time(d.get("time")),
            source=str(d.get("source") or "state"),
            xid_class=str(d.get("xid_class") or "unknown"),
        )


@dataclass(frozen=True, kw_only=True)
class ComponentState:
    """One GPUd HealthState, reduced to what a person acts on."""

    component: str
    name: str
    health: str  # Healthy | Unhealthy | Degraded | Initializing (GPUd's words)
    reason: str = ""
    error: str = ""
    repair_actions: tuple[str, ...] = ()
    time: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "name": self.name,
            "health": self.health,
            "reason": self.reason,
            "error": self.error,
            "repair_actions": list(self.repair_actions),
            "time": format_time(self.time) if self.time else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComponentState:
        return cls(
            component=str(d.get("component") or ""),
            name=str(d.get("name") or ""),
            health=str(d.get("health") or ""),
            reason=str(d.get("reason") or ""),
            error=str(d.get("error") or ""),
            repair_actions=_strs(d.get("repair_actions")),
            time=_opt_time(d.get("time")),
        )


@dataclass(frozen=True, kw_only=True)
class Event:
    """One GPUd event."""

    component: str
    time: datetime | None
    name: str
    type: str  # Unknown | Info | Warning | Critical | Fatal (GPUd's words)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "time": format_time(self.time) if self.time else None,
            "name": self.name,
            "type": self.type,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        return cls(
            component=str(d.get("component") or ""),
            time=_opt_time(d.get("time")),
            name=str(d.get("name") or ""),
            type=str(d.get("type") or "Unknown"),
            message=str(d.get("message") or ""),
        )


@dataclass(frozen=True, kw_only=True)
class ReadError:
    """A part of GPUd's answer that could not be read; costs that component only."""

    component: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"component": self.component, "message": self.message}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReadError:
        return cls(component=str(d.get("component") or ""), message=str(d.get("message") or ""))


@dataclass(frozen=True, kw_only=True)
class GpudStatus:
    """Whether GPUd answered, and if not, why.

    `state` is "ok" or one failure class: ssh_dns, ssh_refused, ssh_timeout, ssh_auth,
    ssh_host_key_changed, ssh_error, not_listening (connection refused at GPUd's port),
    tls_error, timeout, bad_response (not GPUd's JSON), error_response (a JSON error
    body or a non-2xx status), not_installed, nvml (no GPUd; read from NVML), absent.
    """

    reachable: bool
    state: str = "ok"
    error: str | None = None
    version: str | None = None  # GPUd version from /machine-info (None on v0.4)
    api_schema: str | None = None  # "v0.4" or "v0.5+"
    driver_version: str | None = None
    cuda_version: str | None = None
    hostname: str | None = None
    boot_id: str | None = None
    gpu_product: str | None = None
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GpudStatus:
        return cls(
            reachable=bool(d.get("reachable", False)),
            state=str(d.get("state") or "ok"),
            error=_opt_str(d.get("error")),
            version=_opt_str(d.get("version")),
            api_schema=_opt_str(d.get("api_schema")),
            driver_version=_opt_str(d.get("driver_version")),
            cuda_version=_opt_str(d.get("cuda_version")),
            hostname=_opt_str(d.get("hostname")),
            boot_id=_opt_str(d.get("boot_id")),
            gpu_product=_opt_str(d.get("gpu_product")),
            latency_ms=_opt_float(d.get("latency_ms")),
        )


@dataclass(frozen=True, kw_only=True)
class DiskUsage:
    mount: str
    total_bytes: int | None = None
    used_bytes: int | None = None
    used_pct: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiskUsage:
        return cls(
            mount=str(d.get("mount") or ""),
            total_bytes=_opt_int(d.get("total_bytes")),
            used_bytes=_opt_int(d.get("used_bytes")),
            used_pct=_opt_float(d.get("used_pct")),
        )


@dataclass(frozen=True, kw_only=True)
class HostMetrics:
    """Host readings (psutil on the node, or GPUd's cpu/memory/disk components)."""

    cpu_pct: float | None = None
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    mem_total_bytes: int | None = None
    mem_used_bytes: int | None = None
    mem_used_pct: float | None = None
    disks: tuple[DiskUsage, ...] = ()
    net_rx_bytes_per_s: float | None = None
    net_tx_bytes_per_s: float | None = None
    processes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["disks"] = [disk.to_dict() for disk in self.disks]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HostMetrics:
        return cls(
            cpu_pct=_opt_float(d.get("cpu_pct")),
            load1=_opt_float(d.get("load1")),
            load5=_opt_float(d.get("load5")),
            load15=_opt_float(d.get("load15")),
            mem_total_bytes=_opt_int(d.get("mem_total_bytes")),
            mem_used_bytes=_opt_int(d.get("mem_used_bytes")),
            mem_used_pct=_opt_float(d.get("mem_used_pct")),
            disks=tuple(DiskUsage.from_dict(x) for x in _records(d.get("disks"))),
            net_rx_bytes_per_s=_opt_float(d.get("net_rx_bytes_per_s")),
            net_tx_bytes_per_s=_opt_float(d.get("net_tx_bytes_per_s")),
            processes=_opt_int(d.get("processes")),
        )


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """One node's health at one moment."""

    timestamp: datetime
    task_id: str
    task_name: str = ""
    node: str = ""
    instance_type: str | None = None
    # GPUs the node should have: the task's `gpus:`, else its instance type's count; None unknown.
    expected_gpus: int | None = None
    gpud: GpudStatus = field(default_factory=lambda: GpudStatus(reachable=False, state="absent"))
    gpus: tuple[GpuReading, ...] = ()
    host: HostMetrics | None = None
    components: tuple[ComponentState, ...] = ()
    events: tuple[Event, ...] = ()
    xids: tuple[XidError, ...] = ()
    read_errors: tuple[ReadError, ...] = ()
    verdict: Verdict | None = None
    schema: int = SCHEMA_VERSION

    def with_verdict(self, verdict: Verdict) -> Snapshot:
        return replace(self, verdict=verdict)

    @property
    def status(self) -> HealthStatus:
        return self.verdict.status if self.verdict else HealthStatus.UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "timestamp": format_time(self.timestamp),
            "task_id": self.task_id,
            "task_name": self.task_name,
            "node": self.node,
            "instance_type": self.instance_type,
            "expected_gpus": self.expected_gpus,
            "gpud": self.gpud.to_dict(),
            "gpus": [g.to_dict() for g in self.gpus],
            "host": self.host.to_dict() if self.host else None,
            "components": [c.to_dict() for c in self.components],
            "events": [e.to_dict() for e in self.events],
            "xids": [x.to_dict() for x in self.xids],
            "read_errors": [r.to_dict() for r in self.read_errors],
            "verdict": self.verdict.to_dict() if self.verdict else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Snapshot:
        """Build from a decoded JSON object; unknown keys are ignored.

        Raises:
            ValueError: the timestamp is missing or unparseable.
        """
        timestamp = d.get("timestamp")
        if not isinstance(timestamp, str):
            raise ValueError("snapshot has no timestamp")
        gpud = d.get("gpud")
        host = d.get("host")
        verdict = d.get("verdict")
        return cls(
            schema=_opt_int(d.get("schema")) or SCHEMA_VERSION,
            timestamp=parse_time(timestamp),
            task_id=str(d.get("task_id") or ""),
            task_name=str(d.get("task_name") or ""),
            node=str(d.get("node") or ""),
            instance_type=_opt_str(d.get("instance_type")),
            expected_gpus=_opt_int(d.get("expected_gpus")),
            gpud=GpudStatus.from_dict(gpud) if isinstance(gpud, Mapping) else GpudStatus(
                reachable=False, state="absent"
            ),
            gpus=tuple(GpuReading.from_dict(g) for g in _records(d.get("gpus"))),
            host=HostMetrics.from_dict(host) if isinstance(host, Mapping) else None,
            components=tuple(ComponentState.from_dict(c) for c in _records(d.get("components"))),
            events=tuple(Event.from_dict(e) for e in _records(d.get("events"))),
            xids=tuple(XidError.from_dict(x) for x in _records(d.get("xids"))),
            read_errors=tuple(ReadError.from_dict(r) for r in _records(d.get("read_errors"))),
            verdict=Verdict.from_dict(verdict) if isinstance(verdict, Mapping) else None,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Snapshot:
        """Raises ValueError (orjson.JSONDecodeError is one) on a line that is not a snapshot."""
        obj = orjson.loads(data)
        if not isinstance(obj, Mapping):
            raise ValueError("snapshot line is not a JSON object")
        return cls.from_dict(obj)


def hottest(gpus: Iterable[GpuReading]) -> GpuReading | None:
    """The GPU with the highest temperature, or None when no GPU reports one."""
    known = [g for g in gpus if g.temp_c is not None]
    return max(known, key=lambda g: g.temp_c or 0.0) if known else None
