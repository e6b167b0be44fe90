"""GPUd v0.4.x shapes: older component names, `healthy` on states, second-based metrics.

What differs from v0.5 (shared/gpud/API.md, "Version differences"):
* State: `{name, healthy, health, reason, error, extra_info, suggested_actions}`; `healthy` is a
  Go `bool` with `omitempty`, so an unhealthy state has no `healthy` key at all. No `time`.
* Event: `{time, name, type, message, extra_info, suggested_actions}`.
* Metric: `{unix_seconds (real seconds), metric_name, metric_secondary_name (the GPU id), value}`,
  with the other labels, if any, in `extra_info`.
* Component names: `accelerator-nvidia-clock` (clock events), `accelerator-nvidia-error`,
  `accelerator-nvidia-info`, `dmesg`, `file-descriptor`, `info`, `power-supply`, `systemd` …
* No `/machine-info`.
The `extra_info["data"]` blobs are served in their v0.5.1 form (EXTRA_INFO.md does not cover
v0.4), with `extra_info["encoding"] = "json"` as v0.4 added.
"""

from __future__ import annotations

from typing import Any

from flow.health.sim.gofmt import rfc3339
from flow.health.sim.metrics import MetricPoint
from flow.health.sim.physics import NodeProfile, NodeSample, XidIncident
from flow.health.sim.states import REGISTERED_COMPONENTS, build_states, kmsg_device
from flow.health.sim.xid_catalog import XID_CATALOG, xid_reason

__all__ = ["COMPONENTS", "UNSUPPORTED", "XID_COMPONENT", "build_states_v04", "encode_metric", "xid_event"]

XID_COMPONENT = "accelerator-nvidia-error-xid"

# v0.5 name -> v0.4 name, for the components whose names changed.
_RENAMED = {"accelerator-nvidia-hw-slowdown": "accelerator-nvidia-clock"}
_DROPPED = {"accelerator-nvidia-gpu-counts", "accelerator-nvidia-nccl", "network-latency"}
_EXTRA: dict[str, str] = {
    "accelerator-nvidia-error": "no nvml error found",
    "accelerator-nvidia-info": "ok",
    "dmesg": "no dmesg issue found",
    "file-descriptor": "ok",
    "info": "ok",
    "power-supply": "ok",
    "systemd": "ok",
}

COMPONENTS: tuple[str, ...] = tuple(sorted(
    {_RENAMED.get(c, c) for c in REGISTERED_COMPONENTS if c not in _DROPPED} | set(_EXTRA)
))
UNSUPPORTED: frozenset[str] = frozenset({"containerd", "docker", "tailscale"})


def _convert_state(st: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": st["name"]}
    if st.get("health") == "Healthy":
        out["healthy"] = True
    out["health"] = st["health"]
    out["reason"] = st["reason"]
    if st.get("error"):
        out["error"] = st["error"]
    if "extra_info" in st:
        out["extra_info"] = {"data": st["extra_info"]["data"], "encoding": "json"}
    if "suggested_actions" in st:
        sa = st["suggested_actions"]
        out["suggested_actions"] = {"descriptions": [sa["description"]] if sa["description"] else [],
                                    "repair_actions": sa["repair_actions"]}
    return out


def build_states_v04(p: NodeProfile, s: NodeSample, now: float) -> list[dict[str, Any]]:
    """The whole v0.4 `/v1/states` answer."""
    by_name: dict[str, dict[str, Any]] = {}
    for entry in build_states(p, s, now):
        c = entry["component"]
        if c in _DROPPED:
            continue
        state = _convert_state(entry["states"][0])
        new = _RENAMED.get(c, c)
        if state["name"] == c:
            state["name"] = new
        by_name[new] = state
    inc = p.xid
    if inc is not None and inc.ts <= now:
        ident = p.gpus[inc.gpu_index]
        by_name[XID_COMPONENT]["reason"] = xid_reason(inc.xid, kmsg_device(ident.bus_id), None, legacy=True)
    for c, reason in _EXTRA.items():
        by_name[c] = {"name": c, "healthy": True, "health": "Healthy", "reason": reason}
    return [{"component": c, "states": [by_name[c]]} for c in COMPONENTS if c in by_name]


def xid_event(p: NodeProfile, inc: XidIncident) -> dict[str, Any]:
    ident = p.gpus[inc.gpu_index]
    entry = XID_CATALOG[inc.xid]
    device = kmsg_device(ident.bus_id)
    return {
        "time": rfc3339(inc.ts),
        "name": "error_xid",
        "type": entry.event_type,
        "message": xid_reason(inc.xid, device, None, legacy=True),
        "extra_info": {"data": str(inc.xid), "device_uuid": device},
        "suggested_actions": {"descriptions": [], "repair_actions": list(entry.repair_actions)},
    }


def encode_metric(pt: MetricPoint, ts: int) -> dict[str, Any]:
    """A v0.4 Metric: real seconds, the first label's value as the secondary name."""
    m: dict[str, Any] = {"unix_seconds": ts, "metric_name": pt.name}
    if pt.labels:
        m["metric_secondary_name"] = pt.labels[0][1]
    v = pt.value
    m["value"] = int(v) if v.is_integer() else v
    if len(pt.labels) > 1:
        m["extra_info"] = dict(pt.labels[1:])
    return m
