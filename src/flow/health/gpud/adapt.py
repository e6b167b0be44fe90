"""GPUd's answers (already decoded JSON) -> one unscored `Snapshot`. Pure: no I/O.

`snapshot_from_responses` reads both schemas (v0.4.x and v0.5+) and never raises: whatever
part of an answer cannot be read becomes a `ReadError` naming that part, and the rest is kept.
See docs/gpud-client.md for the mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from flow.health.gpud.blobs import BLOB_ADAPTERS, BlobFacts, decode_blob
from flow.health.gpud.gpus import GpuTable
from flow.health.gpud.metrics import (
    MetricFacts,
    Sample,
    facts_from_samples,
    latest_samples,
    samples_from_response,
)
from flow.health.gpud.values import as_records, component_entries, opt_text, parse_rfc3339
from flow.health.gpud.xids import ParsedXid, is_xid_source, parse_xid_payload, parse_xid_text
from flow.health.snapshot import (
    ComponentState,
    DiskUsage,
    Event,
    GpudStatus,
    HostMetrics,
    ReadError,
    Snapshot,
    XidError,
    utcnow,
)
from flow.health.xid import classify_xid
from flow.text import clean_text

__all__ = ["MAX_EVENTS", "SCHEMA_V04", "SCHEMA_V05", "detect_schema", "snapshot_from_responses"]

SCHEMA_V04 = "v0.4"
SCHEMA_V05 = "v0.5+"
#: The newest events kept in a snapshot; a node that logs thousands must not bloat every record.
MAX_EVENTS = 200
_XID_EVENT_TYPES = frozenset({"Fatal", "Critical", "Warning"})
# Component names that exist only before v0.5 (shared/gpud/API.md, "Version differences").
_V04_COMPONENTS = frozenset({"accelerator-nvidia-error", "dmesg", "file-descriptor", "info"})


def detect_schema(states: Any, metrics: Any, machine_info: Any) -> str | None:
    """"v0.4" or "v0.5+" from the evidence in the answers, or None when there is none.

    /machine-info exists only since v0.5. Otherwise: metric rows with `name` vs `metric_name`;
    states with `time` (v0.5 always writes it, as null if zero) vs the v0.4 `healthy` bool;
    component names that only v0.4 had.
    """
    return _detect(states, samples_from_response(metrics)[2], machine_info)


def _detect(states: Any, row_schemas: set[str], machine_info: Any) -> str | None:
    if isinstance(machine_info, Mapping) and machine_info:
        return SCHEMA_V05
    if SCHEMA_V05 in row_schemas:
        return SCHEMA_V05
    if SCHEMA_V04 in row_schemas:
        return SCHEMA_V04
    states_list = as_records(states) or []
    for entry in states_list:
        if opt_text(entry.get("component")) in _V04_COMPONENTS:
            return SCHEMA_V04
        for state in as_records(entry.get("states")) or []:
            if "time" in state or "component" in state:
                return SCHEMA_V05
            if "healthy" in state:
                return SCHEMA_V04
    return None


@dataclass
class _Parts:
    """What the adapters found, before it becomes a Snapshot."""

    gpus: GpuTable = field(default_factory=GpuTable)
    components: list[ComponentState] = field(default_factory=list)
    xids: list[tuple[ParsedXid, str, datetime | None]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    host: dict[str, Any] = field(default_factory=dict)
    disks: dict[str, DiskUsage] = field(default_factory=dict)
    model: str | None = None
    errors: list[ReadError] = field(default_factory=list)

    def absorb(self, facts: BlobFacts | MetricFacts) -> None:
        for gpu in facts.gpus:
            self.gpus.merge(gpu)
        for key, value in facts.host.items():
            if value is not None:
                self.host.setdefault(key, value)
        for disk in facts.disks:
            self.disks.setdefault(disk.mount, disk)
        if isinstance(facts, BlobFacts) and self.model is None:
            self.model = facts.model


def _health(state: Mapping[str, Any], schema: str | None) -> str:
    health = opt_text(state.get("health"))
    if health is not None:
        return health
    healthy = state.get("healthy")
    if healthy is True:
        return "Healthy"
    # v0.4's `healthy` is omitempty: a v0.4 state without it said false.
    if healthy is False or schema == SCHEMA_V04:
        return "Unhealthy"
    return "Unknown"


def _repair_actions(state: Mapping[str, Any]) -> tuple[str, ...]:
    actions = state.get("suggested_actions")
    if not isinstance(actions, Mapping) or not isinstance(actions.get("repair_actions"), list):
        return ()
    return tuple(clean_text(a) for a in actions["repair_actions"] if isinstance(a, str) and a)


def _read_state(component: str, state: Mapping[str, Any], schema: str | None, parts: _Parts) -> None:
    """One HealthState: its ComponentState, the XIDs its reason names, its blob's readings.

    A blob that cannot be read costs its readings only; GPUd's verdict on the component stays.
    """
    name = opt_text(state.get("name")) or component
    reason = opt_text(state.get("reason")) or ""
    component_state = ComponentState(
        component=component, name=name, health=_health(state, schema), reason=reason,
        error=opt_text(state.get("error")) or "", repair_actions=_repair_actions(state),
        time=parse_rfc3339(state.get("time")),
    )
    parts.components.append(component_state)
    if is_xid_source(component, name):
        parts.xids.extend((xid, "state", component_state.time) for xid in parse_xid_text(reason))
    adapter = BLOB_ADAPTERS.get(component)
    if adapter is None:
        return
    try:
        blob = decode_blob(state.get("extra_info"))
        facts = adapter(blob) if blob is not None else None
    except Exception as exc:  # any surprise in one blob costs that component's readings only
        parts.errors.append(ReadError(component=component, message=f'unreadable extra_info["data"]: {exc}'))
        return
    if facts is not None:
        parts.absorb(facts)


def _read_states(body: Any, schema: str | None, parts: _Parts) -> None:
    for component, states in component_entries(body, "states", "states", parts.errors):
        for state in states:
            if isinstance(state, Mapping):
                _read_state(component, state, schema, parts)
            else:
                parts.errors.append(ReadError(
                    component=component, message=f"state is a JSON {type(state).__name__}, not an object"))


def _read_events(body: Any, parts: _Parts) -> None:
    for component, events in component_entries(body, "events", "events", parts.errors):
        for raw in events:
            if not isinstance(raw, Mapping):
                parts.errors.append(ReadError(component=component, message="event is not a JSON object"))
                continue
            event = Event(
                component=opt_text(raw.get("component")) or component,
                time=parse_rfc3339(raw.get("time")),
                name=opt_text(raw.get("name")) or "",
                type=opt_text(raw.get("type")) or "Unknown",
                message=opt_text(raw.get("message")) or "",
            )
            parts.events.append(event)
            if event.type in _XID_EVENT_TYPES and is_xid_source(component, event.name):
                found = parse_xid_text(event.message)
                if not found:
                    payload = parse_xid_payload(raw.get("extra_info"))
                    found = [payload] if payload is not None else []
                parts.xids.extend((xid, "event", event.time) for xid in found)


def _read_metrics(samples: list[Sample], parts: _Parts) -> None:
    try:
        parts.absorb(facts_from_samples(latest_samples(samples)))
    except Exception as exc:  # metrics are a second source: losing them costs only them
        parts.errors.append(ReadError(component="metrics", message=f"unreadable metrics: {exc}"))


def _xid_errors(parts: _Parts) -> tuple[XidError, ...]:
    """One XidError per (code, GPU): the state's if it names it, with the newest event time."""
    merged: dict[tuple[int, object], XidError] = {}
    for xid, source, when in parts.xids:
        index = parts.gpus.index_of(xid.gpu)
        key = (xid.code, index if index is not None else xid.gpu)
        held = merged.get(key)
        if held is None:
            merged[key] = XidError(
                code=xid.code, gpu=xid.gpu, gpu_index=index, message=xid.message, time=when,
                source=source, xid_class=classify_xid(xid.code).xid_class,
            )
        elif when is not None and (held.time is None or when > held.time):
            merged[key] = replace(held, time=when)
    return tuple(merged.values())


def _host(parts: _Parts) -> HostMetrics | None:
    if not parts.host and not parts.disks:
        return None
    return HostMetrics(disks=tuple(parts.disks.values()), **parts.host)


def _inventory(machine_info: Any, parts: _Parts) -> Mapping[str, Any]:
    """machine-info's GPU list into the table; returns machine-info as a mapping ({} if none)."""
    if machine_info is None:
        return {}
    if not isinstance(machine_info, Mapping):
        parts.errors.append(ReadError(
            component="machine-info", message=f"expected a JSON object, got {type(machine_info).__name__}"))
        return {}
    gpu_info = machine_info.get("gpuInfo")
    if isinstance(gpu_info, Mapping):
        gpus = as_records(gpu_info.get("gpus"))
        if gpus is None:
            parts.errors.append(ReadError(component="machine-info", message="gpuInfo.gpus is not an array"))
        else:
            parts.gpus.add_inventory(gpus)
    return machine_info


def _status(info: Mapping[str, Any], schema: str | None, latency_ms: float | None) -> GpudStatus:
    gpu_info = info.get("gpuInfo")
    product = opt_text(gpu_info.get("product")) if isinstance(gpu_info, Mapping) else None
    return GpudStatus(
        reachable=True, state="ok", version=opt_text(info.get("gpudVersion")), api_schema=schema,
        driver_version=opt_text(info.get("gpuDriverVersion")), cuda_version=opt_text(info.get("cudaVersion")),
        hostname=opt_text(info.get("hostname")), boot_id=opt_text(info.get("bootID")),
        gpu_product=product, latency_ms=latency_ms,
    )


def snapshot_from_responses(
    states: Any,
    events: Any = None,
    metrics: Any = None,
    machine_info: Any = None,
    *,
    task_id: str = "",
    task_name: str = "",
    node: str = "",
    instance_type: str | None = None,
    timestamp: datetime | None = None,
    latency_ms: float | None = None,
    read_errors: Iterable[ReadError] = (),
) -> Snapshot:
    """Build the unscored snapshot (verdict None) of a node whose GPUd answered.

    Args:
        states: the decoded `/v1/states` body; events, metrics: `/v1/events`, `/v1/metrics`
            (None when not read); machine_info: `/machine-info` (None on v0.4 or when not read).
        read_errors: errors the caller already met (e.g. /v1/metrics timed out); kept first.

    Never raises: unreadable parts become `ReadError`s in `snapshot.read_errors`.
    """
    # The caller's errors and the adapters' may quote the node (an exception's text): cleaned
    # once more at the end, below, so no message escapes `clean_text`.
    parts = _Parts(errors=list(read_errors))
    samples, metric_errors, row_schemas = samples_from_response(metrics)
    schema = _detect(states, row_schemas, machine_info)
    info = _inventory(machine_info, parts)
    _read_states(states, schema, parts)
    parts.errors.extend(metric_errors)
    _read_metrics(samples, parts)
    _read_events(events, parts)
    status = _status(info, schema, latency_ms)
    newest_first = sorted(parts.events, key=lambda e: e.time.timestamp() if e.time else float("-inf"),
                          reverse=True)
    return Snapshot(
        timestamp=timestamp or utcnow(),
        task_id=task_id,
        task_name=task_name,
        node=node,
        instance_type=instance_type,
        gpud=status,
        gpus=parts.gpus.readings(model=status.gpu_product or parts.model),
        host=_host(parts),
        components=tuple(parts.components),
        events=tuple(reversed(newest_first[:MAX_EVENTS])),
        xids=_xid_errors(parts),
        read_errors=tuple(ReadError(component=clean_text(e.component), message=clean_text(e.message))
                          for e in parts.errors),
    )
