"""One simulated node's GPUd API: request parameters in, GPUd's JSON bodies out (no HTTP here).

`NodeApi` speaks the v0.5.x schema, or the v0.4.x one when the node runs a v0.4 version. It
caches what it computes per sampler minute, since a real GPUd also answers from state it
refreshes once a minute, and a fleet of hundreds of nodes must stay cheap to serve.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from flow.health.sim import legacy
from flow.health.sim.gofmt import rfc3339
from flow.health.sim.metrics import MetricPoint, Series, metric_points, series, values
from flow.health.sim.physics import (
    NodeProfile,
    NodeSample,
    latest_sample_ts,
    sample,
    sample_times,
)
from flow.health.sim.promtext import render_prometheus
from flow.health.sim.states import (
    REGISTERED_COMPONENTS,
    UNSUPPORTED_COMPONENTS,
    build_states,
    kmsg_device,
)
from flow.health.sim.xid_catalog import XID_CATALOG, xid_reason

__all__ = [
    "DEFAULT_QUERY_SINCE_S",
    "HEALTH_SETTABLE",
    "METRICS_RETENTION_S",
    "SET_HEALTHY_SINCE",
    "ApiError",
    "NodeApi",
    "is_legacy_version",
    "parse_version",
]

DEFAULT_QUERY_SINCE_S = 30 * 60     # GPUd's DefaultQuerySince
METRICS_RETENTION_S = 3 * 3600      # GPUd keeps metrics 3 h by default
_SAMPLE_CACHE = 48                  # sampler minutes kept per node
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")
#: GPUd added POST /v1/health-states/set-healthy in v0.8.0 (GPUd PR #1073).
SET_HEALTHY_SINCE = (0, 8, 0)
#: The simulated components that implement GPUd's HealthSettable: set-healthy purges their
#: events up to now, so a fault logged before it no longer makes them unhealthy.
HEALTH_SETTABLE = frozenset({"accelerator-nvidia-error-xid", "accelerator-nvidia-error-sxid",
                             "accelerator-nvidia-infiniband"})


class ApiError(Exception):
    """A GPUd error answer: `{"code": status, "message": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra: dict[str, Any] = {}  # more keys of the error body (set-healthy's `failed`)

    def body(self) -> bytes:
        return orjson.dumps({"code": self.status, "message": self.message, **self.extra})


def parse_version(version: str) -> tuple[int, int, int]:
    """`"v0.5.1"` -> (0, 5, 1); ValueError for anything else."""
    m = _VERSION_RE.match(version.strip())
    if not m:
        raise ValueError(f"gpud version must look like v0.5.1, got {version!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def is_legacy_version(version: str) -> bool:
    """True for GPUd releases before v0.5.0, which used the older API shapes."""
    return parse_version(version) < (0, 5, 0)


class NodeApi:
    """Builds the bodies of every GPUd endpoint for one node."""

    def __init__(self, profile: NodeProfile, gpud_version: str, clock: Callable[[], float]) -> None:
        self.profile = profile
        self.gpud_version = gpud_version if gpud_version.startswith("v") else "v" + gpud_version
        self.legacy = is_legacy_version(gpud_version)
        self.clock = clock
        self._samples: OrderedDict[int, NodeSample] = OrderedDict()
        self._series = series(profile)
        # Static text of each point, with two %s holes: the timestamp and the value.
        self._point_tmpl = [_metric_template(se, self.legacy) for se in self._series]
        self._comp_names = list(dict.fromkeys(se.component for se in self._series))
        self._comp_series = [[i for i, se in enumerate(self._series) if se.component == c]
                             for c in self._comp_names]
        # One template per component and sample: all its points at once (one C-level % per sample).
        self._comp_tmpl = [",".join(self._point_tmpl[i] for i in idx) for idx in self._comp_series]
        self._minute = -1
        self._bodies: dict[tuple[Any, ...], bytes] = {}
        self.components = legacy.COMPONENTS if self.legacy else REGISTERED_COMPONENTS
        self.unsupported = legacy.UNSUPPORTED if self.legacy else UNSUPPORTED_COMPONENTS
        self.has_set_healthy = parse_version(gpud_version) >= SET_HEALTHY_SINCE
        #: component -> unix time of its last set-healthy: its events up to then are purged.
        self.cleared: dict[str, float] = {}

    # -- caches -------------------------------------------------------------------------------
    def _sample(self, ts: int) -> NodeSample:
        s = self._samples.get(ts)
        if s is None:
            s = sample(self.profile, ts)
            self._samples[ts] = s
            if len(self._samples) > _SAMPLE_CACHE:
                self._samples.popitem(last=False)
        return s

    def _metric_points(self, ts: int) -> list[MetricPoint]:
        return metric_points(self.profile, self._sample(ts), self._series)

    def cached(self, key: tuple[Any, ...], now: float, build: Callable[[], bytes]) -> bytes:
        """A body computed at most once per sampler minute for the same request."""
        minute = latest_sample_ts(self.profile, now)
        if minute != self._minute:
            self._minute = minute
            self._bodies.clear()
        body = self._bodies.get(key)
        if body is None:
            body = build()
            if len(self._bodies) < 64:
                self._bodies[key] = body
        return body

    # -- request parsing ----------------------------------------------------------------------
    def parse_components(self, raw: str | None) -> list[str]:
        """The `components=` query: all registered when absent; 404 for an unknown name."""
        if not raw:
            return list(self.components)
        names = [c.strip() for c in raw.split(",") if c.strip()]
        for name in names:
            if name not in self.components:
                raise ApiError(404, f"component not found: {name}")
        return names

    # -- endpoints ----------------------------------------------------------------------------
    def healthz(self) -> bytes:
        return b'{"status":"ok","version":"v1"}'

    def components_body(self) -> bytes:
        return orjson.dumps(list(self.components))

    def states(self, comps: Sequence[str], now: float) -> bytes:
        return orjson.dumps(self.states_obj(comps, now))

    def states_obj(self, comps: Sequence[str], now: float) -> list[dict[str, Any]]:
        s = self._sample(latest_sample_ts(self.profile, now))
        if self.legacy:
            allstates = legacy.build_states_v04(self.profile, s, now)
        else:
            allstates = build_states(self.profile, s, now, cleared=self.cleared)
        wanted = set(comps)
        return [e for e in allstates if e["component"] in wanted]

    def events_obj(self, comps: Sequence[str], start_ts: float, end_ts: float,
                   now: float) -> list[dict[str, Any]]:
        out = []
        for c in comps:
            if c in self.unsupported:
                continue
            evs = self._component_events(c, start_ts, now)
            entry: dict[str, Any] = {"component": c, "startTime": rfc3339(start_ts),
                                     "endTime": rfc3339(end_ts), "events": evs or None}
            out.append(entry)
        return out

    def _component_events(self, component: str, start_ts: float, now: float) -> list[dict[str, Any]]:
        inc = self.profile.xid
        xid_component = legacy.XID_COMPONENT if self.legacy else "accelerator-nvidia-error-xid"
        if component != xid_component or inc is None or not (start_ts <= inc.ts <= now):
            return []
        if inc.ts <= self.cleared.get(component, float("-inf")):
            return []  # purged by set-healthy
        ident = self.profile.gpus[inc.gpu_index]
        entry = XID_CATALOG[inc.xid]
        if self.legacy:
            return [legacy.xid_event(self.profile, inc)]
        return [{
            "component": component,
            "time": rfc3339(inc.ts),
            "name": "error_xid",
            "type": entry.event_type,
            "message": xid_reason(inc.xid, kmsg_device(ident.bus_id), ident.uuid),
        }]

    def metrics_fragments(self, comps: Sequence[str], since_s: float, now: float) -> dict[str, bytes]:
        """Per component (in GPUd's arbitrary order), its metrics as an encoded JSON array.

        Built from per-series byte templates: this is the hot path of a fleet-wide sweep.
        """
        since_s = min(max(since_s, 0.0), METRICS_RETENTION_S)
        wanted_set = set(comps)
        wanted = [ci for ci, c in enumerate(self._comp_names) if c in wanted_set]
        parts: list[list[str]] = [[] for _ in self._comp_names]
        scale = 1 if self.legacy else 1000
        for ts in sample_times(self.profile, now - since_s, now):
            vals = values(self.profile, self._sample(ts))
            stamp = str(ts * scale)
            for ci in wanted:
                idx = self._comp_series[ci]
                vs = [vals[i] for i in idx]
                if None in vs:  # a series with no point yet (the XID counter): point by point
                    pieces = [self._point_tmpl[i] % (stamp, vals[i]) for i in idx if vals[i] is not None]
                    if pieces:
                        parts[ci].append(",".join(pieces))
                    continue
                parts[ci].append(self._comp_tmpl[ci] % tuple(x for v in vs for x in (stamp, v)))
        return {self._comp_names[ci]: ("[" + ",".join(p) + "]").encode()
                for ci, p in enumerate(parts) if p}

    def metrics_body(self, comps: Sequence[str], since_s: float, now: float) -> bytes:
        frags = self.metrics_fragments(comps, since_s, now)
        return b"[" + b",".join(
            b'{"component":' + orjson.dumps(c) + b',"metrics":' + arr + b"}" for c, arr in frags.items()
        ) + b"]"

    def metrics_obj(self, comps: Sequence[str], since_s: float, now: float) -> list[dict[str, Any]]:
        """The `/v1/metrics` answer as Python objects (tests and /v1/info)."""
        result: list[dict[str, Any]] = orjson.loads(self.metrics_body(comps, since_s, now))
        return result

    def info_obj(self, comps: Sequence[str], start_ts: float, end_ts: float, since_s: float,
                 now: float) -> list[dict[str, Any]]:
        states = {e["component"]: e["states"] for e in self.states_obj(comps, now)}
        events = {e["component"]: e["events"] for e in self.events_obj(comps, start_ts, end_ts, now)}
        metrics = {c: orjson.Fragment(arr) for c, arr in self.metrics_fragments(comps, since_s, now).items()}
        out = []
        for c in comps:
            if c in self.unsupported:
                continue
            out.append({"component": c, "startTime": rfc3339(start_ts), "endTime": rfc3339(end_ts),
                        "info": {"states": states.get(c), "events": events.get(c),
                                 "metrics": metrics.get(c)}})
        return out

    def set_healthy(self, raw: str | None, now: float) -> dict[str, Any]:
        """POST /v1/health-states/set-healthy?components=: GPUd v0.8+ only (404 before).

        As GPUd's handler: `components` is required (400), an unknown name is a 404, and each
        named component that cannot be set healthy is listed under `failed`; when none could
        be, the answer is a 400.
        """
        if self.legacy or not self.has_set_healthy:
            raise ApiError(404, "404 page not found")
        if not raw:
            raise ApiError(400, "components parameter is required")
        comps = self.parse_components(raw)
        successful: list[str] = []
        failed: dict[str, str] = {}
        for c in comps:
            if c in HEALTH_SETTABLE and c not in self.unsupported:
                self.cleared[c] = now
                successful.append(c)
            else:
                failed[c] = "component does not support setting healthy state"
        self._bodies.clear()  # the cached /v1/states of this minute no longer holds
        if failed and not successful:
            err = ApiError(400, "failed to set any component to healthy")
            err.extra = {"failed": failed}
            raise err
        return {"code": 200, "message": "set healthy states completed", "successful": successful,
                "failed": failed}

    def machine_info(self, now: float) -> bytes:
        if self.legacy:
            raise ApiError(404, "404 page not found")
        return orjson.dumps(_machine_info(self.profile, self.gpud_version))

    def prometheus(self, now: float) -> bytes:
        ts = latest_sample_ts(self.profile, now)
        return render_prometheus(self._metric_points(ts))


def _json(obj: Any) -> str:
    # Static JSON text that will sit in a %-template: escape the percent signs.
    return orjson.dumps(obj).decode().replace("%", "%%")


def _metric_template(se: Series, legacy_schema: bool) -> str:
    """One point as `%`-template text with two holes: the timestamp, then the value.

    v0.5+: `{unix_seconds (ms), name, labels (omitempty), value}`; v0.4: `{unix_seconds (s),
    metric_name, metric_secondary_name (first label's value), value, extra_info (other labels)}`.
    Values are written with `str()`, which gives Go's text for them because `values()` hands
    integral numbers over as ints ("34", not "34.0").
    """
    if legacy_schema:
        head = ',"metric_name":' + _json(se.name)
        if se.labels:
            head += ',"metric_secondary_name":' + _json(se.labels[0][1])
        tail = ',"extra_info":' + _json(dict(se.labels[1:])) + "}" if len(se.labels) > 1 else "}"
        return '{"unix_seconds":%s' + head + ',"value":%s' + tail
    head = ',"name":' + _json(se.name)
    if se.labels:
        head += ',"labels":' + _json(dict(se.labels))
    return '{"unix_seconds":%s' + head + ',"value":%s}'


def _machine_info(p: NodeProfile, gpud_version: str) -> dict[str, Any]:
    m = p.model
    return {
        "gpudVersion": gpud_version,
        "gpuDriverVersion": m.driver_version,
        "cudaVersion": m.cuda_version,
        "kernelVersion": "5.15.0-1063-nvidia",
        "osImage": "Ubuntu 22.04.4 LTS",
        "operatingSystem": "linux",
        "systemUUID": p.machine_id[:8] + "-" + p.machine_id[8:12] + "-" + p.machine_id[12:16] + "-"
                      + p.machine_id[16:20] + "-" + p.machine_id[20:],
        "machineID": p.machine_id,
        "bootID": p.boot_id,
        "hostname": p.hostname,
        "uptime": rfc3339(p.boot_ts),
        "cpuInfo": {"type": "Intel(R) Xeon(R) Platinum 8480+", "manufacturer": "GenuineIntel",
                    "architecture": "x86_64", "logicalCores": p.cpu_cores},
        "memoryInfo": {"totalBytes": p.host_mem_total_bytes},
        "gpuInfo": {
            "product": m.product_name,
            "manufacturer": "NVIDIA",
            "architecture": m.architecture,
            "memory": m.memory_label,
            "gpus": [{"uuid": g.uuid, "busID": g.bus_id, "sn": g.serial, "minorID": str(g.index),
                      "boardID": g.index * 256} for g in p.listed_gpus],
        },
        "diskInfo": {
            "blockDevices": [
                {"name": "/dev/nvme0n1", "type": "disk", "size": 1920383410176,
                 "serial": "S64ANS0T512873", "model": "SAMSUNG MZQL21T9HCJR-00A07",
                 "children": ["/dev/nvme0n1p1", "/dev/nvme0n1p2"]},
                {"name": "/dev/nvme0n1p2", "type": "part", "size": 1919254093824, "mountPoint": "/",
                 "fsType": "ext4", "parents": ["/dev/nvme0n1"]},
            ],
            "containerRootDisk": "/dev/nvme0n1p2",
        },
        "nicInfo": {"privateIPInterfaces": [{
            "interface": "eth0",
            "mac": "0a:" + ":".join(f"{(p.seed >> (8 * k)) & 0xFF:02x}" for k in range(5)),
            "ip": f"10.{(p.index >> 8) & 0xFF}.{p.index & 0xFF}.{10 + p.seed % 200}",
        }]},
    }
