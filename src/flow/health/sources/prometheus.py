"""The fleet view and a task's history, read back from Prometheus with PromQL.

The collectors remote-write the metric vocabulary (docs/metrics.md) to a Prometheus (or
Thanos, Mimir, VictoriaMetrics); this module reads it back as `Snapshot` objects, so the fleet
table, the issues, the `--json` documents and the history summary render them unchanged.

The fleet view is a fixed handful of instant queries for the whole fleet (`fleet_queries`),
never one per node; a task's history is a handful of range queries for that task
(`history_queries`). What comes back is less than a sweep over SSH reads:

- Reasons come back as code and severity (the `flow_node_health_reasons` series). Where scoring
  the GPU readings read back gives the same code (temperature, utilization, memory), the
  reasons are those, per GPU with their messages, as over SSH; any other code is one reason
  with the count of GPUs or components it hit, its message rebuilt from the code
  (`REASON_TEXT`) and its GPU unknown (`gpu` null).
- GPUs carry the readings the fleet table shows (`GPU_FIELDS`); the others are null. GPUd's
  components, events and the host metrics are not read (`host` is null).
- A node whose newest snapshot is older than `stale_after_s` is `unknown` with reason `stale`
  and its age; a node expected (from the inventory) that Prometheus does not hold is `unknown`
  with reason `no_data`.

A series that stopped being written lingers for Prometheus' lookback delta (5 minutes by
default) after its last remote-written sample: the label-valued families (reasons, GPUd state,
versions) are therefore read only where their sample is as new as the node's snapshot, the
score not while the status is unknown, and GPU readings, where a GPU may have vanished
(`_Families.lingering_gpu_suspects`), only where their sample is as new as the snapshot
(`gpu_time_queries`, a follow-up for those nodes alone).

Every answer is bounded (`MAX_ANSWER_BYTES`, and a total deadline per request); labels are
strings from the nodes and are cleaned (flow.text.clean_text) where they enter.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import httpx
import orjson

from flow.config import Thresholds, is_loopback_host
from flow.errors import TransportError
from flow.health.scoring import score_snapshot
from flow.health.snapshot import (
    GpudStatus,
    GpuReading,
    HealthStatus,
    Reason,
    Severity,
    Snapshot,
    Verdict,
    XidError,
)
from flow.http_deadline import AnswerTimeout, request_within
from flow.secrets import redact_url
from flow.text import clean_text

__all__ = [
    "DEFAULT_LOOKBACK_S",
    "DEFAULT_STALE_AFTER_S",
    "DEFAULT_TIMEOUT_S",
    "GPU_FIELDS",
    "GPU_SHARDS",
    "MAX_ANSWER_BYTES",
    "MAX_POINTS_PER_SERIES",
    "REASON_TEXT",
    "ExpectedNode",
    "FleetRead",
    "PrometheusError",
    "PrometheusSource",
    "assemble_fleet",
    "assemble_history",
    "fleet_queries",
    "gpu_time_queries",
    "history_queries",
    "history_step",
    "paused_gc",
    "window_bounds",
]

#: A node whose newest snapshot is older than this is `unknown` (`stale`): 5 collector
#: intervals of 60 s, and Prometheus' own lookback delta.
DEFAULT_STALE_AFTER_S = 300.0
#: How far back the list of nodes looks: a node silent for longer is forgotten (or, when the
#: inventory names it, `no_data`).
DEFAULT_LOOKBACK_S = 3600.0
DEFAULT_TIMEOUT_S = 30.0
#: The largest answer read: the biggest query of a 10,000-node, 8-GPU fleet answers about
#: 8 MiB (docs/benchmarks.md); a hostile or misdirected endpoint cannot make us buffer more.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: Prometheus refuses range queries of more than 11,000 points per series.
MAX_POINTS_PER_SERIES = 11_000

#: The per-GPU families the fleet view reads, by the GpuReading field they fill.
_GPU_METRICS: Mapping[str, str] = {
    "temp_c": "flow_gpu_temperature_celsius",
    "util_gpu_pct": "flow_gpu_utilization_percent",
    "mem_used_bytes": "flow_gpu_memory_used_bytes",
    "mem_total_bytes": "flow_gpu_memory_total_bytes",
}
#: GpuReading fields read from Prometheus (what the fleet table shows); the others are None.
GPU_FIELDS: tuple[str, ...] = tuple(_GPU_METRICS)

#: Reason codes (docs/scoring.md) as a sentence, for reasons read back without their message.
REASON_TEXT: Mapping[str, str] = {
    "temp_critical": "GPU temperature above the critical threshold",
    "temp_warning": "GPU temperature above the warning threshold",
    "thermal_margin": "GPU close to its slowdown temperature",
    "util_low": "GPU utilization low",
    "util_high": "GPU utilization saturated",
    "mem_critical": "GPU memory almost full",
    "mem_warning": "GPU memory use high",
    "throttle_hw": "GPU clocks throttled by hardware",
    "throttle_sw": "GPU clocks throttled by software",
    "ecc_uncorrected": "uncorrected ECC errors",
    "ecc_corrected": "corrected ECC errors",
    "ecc_aggregate_uncorrected": "uncorrected ECC errors over the GPU's life",
    "remap_failed": "row remapping failed (replace the GPU)",
    "remap_pending": "row remapping pending (reset the GPU)",
    "nvlink_errors": "NVLink errors",
    "xid_fatal": "fatal XID",
    "xid_warning": "XID warning",
    "xid_application": "application XID",
    "xid_info": "informational XID",
    "component_unhealthy": "a GPUd component is unhealthy",
    "component_degraded": "a GPUd component is degraded",
    "component_unreadable": "a GPUd component could not be read",
    "gpu_missing": "fewer GPUs visible than expected",
    "gpu_silent": "a GPU listed by GPUd reports no readings",
    "gpud_unreachable": "GPUd unreachable",
    "no_gpu_data": "GPUd answered but reported no GPU data",
}
_DETAIL_HINT = "details: flow health --task TASK (over SSH)"

_SNAP = "flow_node_snapshot_timestamp_seconds"
NodeKey = tuple[str, str]  # (task_id, node)


@contextlib.contextmanager
def paused_gc(*, freeze: bool = False) -> Iterator[None]:
    """The cyclic garbage collector paused. Decoding a fleet's answers, and turning 10,000
    snapshots into a JSON document, allocate millions of dicts and lists, none of them in a
    cycle; the collector's passes would scan them all again and again (a third of the time).

    What was allocated during the pause is young when it ends, and the collector's next pass
    scans all of it once (half a second for a fleet). With `freeze`, everything alive is moved
    out of the collector's reach instead (`gc.freeze`): for a command about to exit, which
    would otherwise pay that pass at exit; reference counting still frees it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()


class PrometheusError(TransportError):
    """Prometheus could not be read: unreachable, refused, too slow, too large or not its API.

    The message names the URL (redacted) and what went wrong; exit status 2 (the fleet view
    could not be built, which is not a verdict on the fleet).
    """

    exit_code = 2

    def __init__(self, message: str, *, url: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url


@dataclass(frozen=True, kw_only=True)
class ExpectedNode:
    """A node the inventory names: shown even when Prometheus holds nothing for it."""

    task_id: str
    task_name: str
    node: str
    instance_type: str | None = None
    expected_gpus: int | None = None


@dataclass(frozen=True)
class FleetRead:
    snapshots: tuple[Snapshot, ...]
    elapsed_s: float
    queries: int


def _matcher(task_id: str | None, **more: str) -> str:
    if task_id is None:
        return ""
    pairs = {"task_id": task_id, **more}
    return "{" + ", ".join(f"{k}={_quote(v)}" for k, v in pairs.items()) + "}"


def _quote(value: str) -> str:
    """A PromQL string literal (its escapes are Go's)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _fresh(selector: str, match: str = "") -> str:
    """`selector` without the series older than their node's newest snapshot (lingering ones).
    `match` narrows the snapshot times compared to (a range query evaluates them per step)."""
    latest = f"max by (task_id, node) (timestamp({_SNAP}{match}))"
    return (f"({selector} unless (timestamp({selector}) < on (task_id, node) group_left () "
            f"{latest}))")


#: Each per-GPU family is read in shards of GPU indices, disjoint and together everything (a
#: PromQL regex is anchored): four answers of 20,000 series for a 10,000-node fleet instead of
#: one of 80,000, so the answers arrive one after another and each is folded while Prometheus
#: still works on the others. Prometheus' own cost is the same (docs/benchmarks.md).
GPU_SHARDS: tuple[str, ...] = ('gpu=~"[01]"', 'gpu=~"[23]"', 'gpu=~"[45]"', 'gpu!~"[0-5]"')


def fleet_queries(*, lookback_s: float = DEFAULT_LOOKBACK_S) -> dict[str, str]:
    """The instant queries of one fleet view, by name: the same handful for any fleet size.
    A per-GPU query is named `FIELD/SHARD` (`temp_c/0`)."""
    queries = {
        "nodes": f"last_over_time({_SNAP}[{int(lookback_s)}s])",
        "status": "flow_node_status == 1",
        "score": "flow_node_health_score",
        "gpus": "flow_node_gpus",
        "reasons": _fresh("flow_node_health_reasons"),
        # Their value is 1; asked for their sample's time instead, lingering series are left
        # out here (`_Families.gpud`) at a third of what the join of `_fresh` costs Prometheus.
        "state": "timestamp(flow_node_scrape_state)",
        "info": "timestamp(flow_node_info)",
    }
    for shard, matcher in enumerate(GPU_SHARDS):
        for name, metric in _GPU_METRICS.items():
            # Only the identifying labels travel: a tenth of the bytes of the full label set.
            queries[f"{name}/{shard}"] = f"max by (task_id, node, gpu) ({metric}{{{matcher}}})"
    return queries


#: Nodes per follow-up query of GPU sample times (`gpu_time_queries`).
_NODES_PER_TIME_QUERY = 100
#: Reason codes that say a GPU vanished: its series stop, and linger.
_VANISHED_GPU_CODES = frozenset({"gpu_missing", "gpu_silent"})


def _regex_alternatives(values: Iterable[str]) -> str:
    """A PromQL regex matching exactly these values (RE2 syntax, anchored by PromQL)."""
    return "|".join(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", v) for v in sorted(set(values)))


def gpu_time_queries(nodes: Iterable[str]) -> dict[str, str]:
    """The follow-up instant queries of a fleet view: when each per-GPU series of these nodes
    was last written, for nodes whose GPU series may linger. Named `gpu_times/FIELD/CHUNK`.
    (`timestamp` gives a sample's own time only when applied to a plain selector.)"""
    ordered = sorted(set(nodes))
    queries = {}
    for start in range(0, len(ordered), _NODES_PER_TIME_QUERY):
        chunk = ordered[start:start + _NODES_PER_TIME_QUERY]
        matcher = f"{{node=~{_quote(_regex_alternatives(chunk))}}}"
        for name, metric in _GPU_METRICS.items():
            queries[f"gpu_times/{name}/{start // _NODES_PER_TIME_QUERY}"] = (
                f"max by (task_id, node, gpu) (timestamp({metric}{matcher}))")
    return queries


def history_queries(task_id: str) -> dict[str, str]:
    """The range queries of one task's history, by name."""
    m = _matcher(task_id)
    return {
        "nodes": f"{_SNAP}{m}",
        "status": f"flow_node_status{m} == 1",
        "score": f"flow_node_health_score{m}",
        "reasons": _fresh(f"flow_node_health_reasons{m}", m),
        # Plain selectors: a range answer names each series once, so aggregating away labels
        # saves no bytes and costs Prometheus twice the time.
        "temp_c": f"flow_gpu_temperature_celsius{m}",
        "util_gpu_pct": f"flow_gpu_utilization_percent{m}",
        # When each GPU was last written, per step: the readings of a GPU that vanished linger
        # for the lookback delta and are left out (assemble_history). A third of what
        # filtering each family with `_fresh` costs Prometheus.
        "gpu_times": f"timestamp(flow_gpu_temperature_celsius{m})",
        # Only counts above 0: the summary counts rises, and most GPUs never have an error.
        "ecc": f"flow_gpu_ecc_errors_total{_matcher(task_id, scope='volatile')} > 0",
        "xid": f"flow_gpu_xid_errors{m}",
    }


def history_step(hours: float, interval_s: float) -> int:
    """The range-query step (whole seconds): the collector interval, or coarser where the
    window would otherwise need more than `MAX_POINTS_PER_SERIES` points."""
    window = hours * 3600.0
    return max(1, math.ceil(interval_s), math.ceil(window / (MAX_POINTS_PER_SERIES - 1)))


@dataclass(frozen=True, kw_only=True)
class PrometheusSource:
    """Where and how to query. `url` is the base URL (`https://prom:9090`, or a path prefix
    such as Mimir's `/prometheus`); basic auth may ride in it (shown redacted); `token` is sent
    as `Authorization: Bearer`."""

    url: str
    token: str | None = field(default=None, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_answer_bytes: int = MAX_ANSWER_BYTES
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    lookback_s: float = DEFAULT_LOOKBACK_S
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def shown_url(self) -> str:
        return redact_url(self.url)

    def client(self) -> httpx.AsyncClient:
        # Compressing tens of megabytes costs Prometheus more than sending them over loopback.
        host = httpx.URL(self.url).host
        headers = {"Accept": "application/json",
                   "Accept-Encoding": "identity" if is_loopback_host(host) else "gzip"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # Many parallel answers of megabytes each: no pool limit below the query count.
        return httpx.AsyncClient(headers=headers, limits=httpx.Limits(max_connections=32),
                                 follow_redirects=False, trust_env=False)

    async def query(self, client: httpx.AsyncClient, path: str, params: Mapping[str, str],
                    what: str) -> list[dict[str, Any]]:
        """One API call (`/api/v1/query` or `/api/v1/query_range`): its `data.result`.

        Raises:
            PrometheusError: unreachable, timed out, an HTTP error, an answer larger than
                `max_answer_bytes`, or not a successful Prometheus API answer.
        """
        shown = self.shown_url
        url = str(httpx.URL(self.url.rstrip("/") + path, params=dict(params)))
        try:
            response = await request_within(client, "GET", url, timeout_s=self.timeout_s,
                                            max_body=self.max_answer_bytes + 1)
        except AnswerTimeout:
            raise PrometheusError(
                f"Prometheus at {shown} gave no complete answer to the {what} query within "
                f"{self.timeout_s:g} s", url=shown,
                hint="check the server's load, or narrow the fleet with --filter") from None
        except httpx.HTTPError as exc:
            detail = clean_text(str(exc) or type(exc).__name__, limit=200)
            raise PrometheusError(f"cannot reach Prometheus at {shown}: {detail}", url=shown,
                                  hint="check --prometheus-url / FLOW_PROMETHEUS_URL") from None
        body = response.content
        if len(body) > self.max_answer_bytes:
            raise PrometheusError(
                f"Prometheus at {shown} answered the {what} query with more than "
                f"{self.max_answer_bytes} bytes; allowed: at most {self.max_answer_bytes} bytes",
                url=shown, hint="narrow the fleet with --filter, or check that the URL is Prometheus")
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if response.status_code in (401, 403):
            raise PrometheusError(
                f"Prometheus at {shown} refused the query ({response.status_code})", url=shown,
                hint="set FLOW_PROMETHEUS_TOKEN (or health.prometheus_token_file), or put "
                     "user:password@ in the URL")
        if not isinstance(answer, dict) or "status" not in answer:
            excerpt = clean_text(body[:200].decode("utf-8", "replace"), limit=200)
            raise PrometheusError(
                f"Prometheus at {shown} answered the {what} query with HTTP "
                f"{response.status_code}, not the Prometheus API's JSON: {excerpt!r}", url=shown,
                hint="the URL is the server's base (https://host:9090), without /api/v1")
        if answer.get("status") != "success":
            error = clean_text(str(answer.get("error") or answer.get("errorType") or "error"),
                               limit=300)
            raise PrometheusError(
                f"Prometheus at {shown} refused the {what} query (HTTP {response.status_code}): "
                f"{error}", url=shown)
        data = answer.get("data")
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list):
            raise PrometheusError(f"Prometheus at {shown} answered the {what} query without a "
                                  "result list", url=shown)
        return [r for r in result if isinstance(r, dict) and isinstance(r.get("metric"), dict)]

    async def _queries(self, path: str, queries: Mapping[str, str],
                       extra: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
        results: dict[str, list[dict[str, Any]]] = {}
        await self._each_answer(path, queries, extra, results.__setitem__)
        return results

    async def _each_answer(self, path: str, queries: Mapping[str, str], extra: Mapping[str, str],
                           fold: Callable[[str, list[dict[str, Any]]], None]) -> None:
        """Every query at once; `fold(name, result)` for each answer as it arrives."""
        async def one(client: httpx.AsyncClient, name: str, query: str) -> None:
            fold(name, await self.query(client, path, {"query": query, **extra}, name))

        async with self.client() as client:
            await asyncio.gather(*(one(client, name, q) for name, q in queries.items()))

    async def read_fleet(self, *, expected: Sequence[ExpectedNode] | None = None,
                         now: datetime | None = None) -> FleetRead:
        """The fleet view: one snapshot per node Prometheus holds (or per `expected` node).

        Raises:
            PrometheusError: see `query`.
        """
        started = time.monotonic()
        now = now or datetime.now(timezone.utc)
        queries = fleet_queries(lookback_s=max(self.lookback_s, self.stale_after_s))
        with paused_gc():
            families = _Families()
            at = {"time": f"{now.timestamp():.3f}"}
            await self._each_answer("/api/v1/query", queries, at, families.add)
            follow_up = gpu_time_queries(key[1] for key in families.lingering_gpu_suspects())
            if follow_up:
                await self._each_answer("/api/v1/query", follow_up, at, families.add)
                queries.update(follow_up)
            snapshots = _snapshots(families, now=now, stale_after_s=self.stale_after_s,
                                   thresholds=self.thresholds, expected=expected)
            del families
        return FleetRead(tuple(snapshots), time.monotonic() - started, len(queries))

    async def read_history(self, task_id: str, hours: float, *, interval_s: float,
                           now: datetime | None = None) -> list[Snapshot]:
        """A task's snapshots over the last `hours`, time-ordered, one per distinct snapshot
        seen at the query's step (`history_step`).

        Raises:
            PrometheusError: see `query`.
        """
        now = now or datetime.now(timezone.utc)
        step = history_step(hours, interval_s)
        end = now.timestamp()
        extra = {"start": f"{end - hours * 3600.0:.3f}", "end": f"{end:.3f}", "step": f"{step}s"}
        with paused_gc():
            results = await self._queries("/api/v1/query_range", history_queries(task_id), extra)
            return assemble_history(results, thresholds=self.thresholds)


# --- assembling -------------------------------------------------------------------------------

def _value(raw: Any) -> float | None:
    try:
        number = float(raw[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return number if number - number == 0.0 else None  # not NaN or an infinity


def _label(metric: Mapping[str, Any], name: str) -> str:
    value = metric.get(name)
    return clean_text(value) if isinstance(value, str) else ""


def _key(metric: Mapping[str, Any]) -> NodeKey:
    return _label(metric, "task_id"), _label(metric, "node")


def _gpu_index(metric: Mapping[str, Any]) -> int | None:
    text = metric.get("gpu")
    return int(text) if isinstance(text, str) and text.isdigit() and len(text) < 6 else None


def _severity(text: str) -> Severity:
    try:
        return Severity(text)
    except ValueError:
        return Severity.INFO


def _reasons(counts: Mapping[tuple[str, str], int], thresholds: Thresholds,
             rescored: Iterable[Reason] = ()) -> tuple[Reason, ...]:
    """One reason per code read back; where scoring the GPU readings read back gives the same
    code (temperature, utilization, memory), its per-GPU reasons instead, messages and all."""
    by_code: dict[str, list[Reason]] = {}
    for r in rescored:
        if r.gpu is not None:
            by_code.setdefault(r.code, []).append(r)
    reasons: list[Reason] = []
    for (code, severity_text), count in counts.items():
        if code in by_code:
            reasons.extend(by_code.pop(code))
            continue
        text = REASON_TEXT.get(code, code)
        if count > 1:
            text += f" (x{count})"
        reasons.append(Reason(code=code, severity=_severity(severity_text), message=text,
                              action=_DETAIL_HINT, penalty=thresholds.penalty(code)))
    # Scoring's order (worst first, the worst reading first within a code): the fleet table
    # shows the first.
    reasons.sort(key=lambda r: (-r.severity.rank, -r.penalty, r.code,
                                -(r.value if r.value is not None else 0.0),
                                r.gpu if r.gpu is not None else -1))
    return tuple(reasons)


def _age_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _unknown(code: str, message: str, action: str) -> Verdict:
    return Verdict(score=None, status=HealthStatus.UNKNOWN,
                   reasons=(Reason(code=code, severity=Severity.UNKNOWN, message=message,
                                   action=action),))


_STALE_ACTION = ("Check the node's collector (flow logs TASK --source collector) and its "
                 "remote_write sink")
_NO_DATA_ACTION = ("Check that the node's collector runs with a remote_write sink to this "
                   "Prometheus (flow health status TASK)")


def _str(value: Any) -> str:
    return value if type(value) is str else ""


def _raw_key(metric: Mapping[str, Any]) -> NodeKey:
    # Raw label values, cleaned once per node when its snapshot is built (a fleet answer holds
    # a node's labels in every one of its GPUs' series).
    return _str(metric.get("task_id")), _str(metric.get("node"))


#: Reason codes that scoring the GPU readings read back reproduces, with GPU and message.
_RESCORABLE = frozenset({"temp_critical", "temp_warning", "util_low", "util_high", "mem_critical",
                         "mem_warning"})


class _Families:
    """Instant-query answers folded by node (raw label values) and GPU, one answer at a time
    (`add`), so each is folded while Prometheus still evaluates the others."""

    def __init__(self, results: Mapping[str, list[dict[str, Any]]] | None = None) -> None:
        self.nodes: dict[NodeKey, tuple[float, dict[str, Any]]] = {}
        self.status: dict[NodeKey, str] = {}
        self.score: dict[NodeKey, float] = {}
        self.reasons: dict[NodeKey, dict[tuple[str, str], int]] = {}
        # Newest sample time and its labels, per node.
        self.state: dict[NodeKey, tuple[float, str]] = {}
        self.info: dict[NodeKey, tuple[float, dict[str, Any]]] = {}
        self._gpud: dict[tuple[str | None, tuple[str, ...]], GpudStatus] = {}
        # (task_id, node) -> GPU index (label text) -> GpuReading field -> value.
        self.gpus: dict[NodeKey, dict[str, dict[str, Any]]] = {}
        # GPUs the node's newest snapshot reported (flow_node_gpus).
        self.gpu_count: dict[NodeKey, int] = {}
        # (task_id, node) -> GPU index (label text) -> GpuReading field -> last written, for
        # the nodes asked about (`lingering_gpu_suspects`).
        self.gpu_times: dict[NodeKey, dict[str, dict[str, float]]] = {}
        for name, result in (results or {}).items():
            self.add(name, result)

    def add(self, name: str, result: list[dict[str, Any]]) -> None:
        """Fold the answer to the fleet query `name` (a `fleet_queries` key)."""
        field_name = name.partition("/")[0]
        if field_name in _GPU_METRICS:
            self._add_gpu_field(field_name, result)
        elif name == "nodes":
            for r in result:
                ts = _value(r.get("value"))
                key = _raw_key(r["metric"])
                if ts is not None and (key not in self.nodes or ts > self.nodes[key][0]):
                    self.nodes[key] = (ts, r["metric"])
        elif name == "status":
            self.status.update((_raw_key(r["metric"]), _str(r["metric"].get("status")))
                               for r in result)
        elif name == "score":
            for r in result:
                value = _value(r.get("value"))
                if value is not None:
                    self.score[_raw_key(r["metric"])] = value
        elif name == "gpus":
            for r in result:
                value = _value(r.get("value"))
                if value is not None and 0 <= value < 100_000:
                    self.gpu_count[_raw_key(r["metric"])] = int(value)
        elif name.startswith("gpu_times/"):
            self._add_gpu_times(name.split("/")[1], result)
        elif name == "reasons":
            for r in result:
                count = _value(r.get("value"))
                if count:
                    per = self.reasons.setdefault(_raw_key(r["metric"]), {})
                    code = (_label(r["metric"], "code"), _label(r["metric"], "severity"))
                    per[code] = per.get(code, 0) + int(count)
        elif name == "state":
            for r in result:
                _newest(self.state, r, _label(r["metric"], "state"))
        elif name == "info":
            for r in result:
                _newest(self.info, r, r["metric"])

    def _add_gpu_field(self, name: str, result: list[dict[str, Any]]) -> None:
        # The hot loop of a fleet view (80,000 series per field): inlined lookups, no calls.
        whole = name.endswith("_bytes")
        gpus = self.gpus
        for r in result:
            metric = r["metric"]
            text = metric.get("gpu")
            if type(text) is not str or not text.isdigit() or len(text) > 5:
                continue
            try:
                value = float(r["value"][1])
            except (TypeError, ValueError, IndexError, KeyError):
                continue
            if value - value != 0.0:
                continue  # NaN or an infinity
            task_id, node = metric.get("task_id"), metric.get("node")
            key = (task_id if type(task_id) is str else "", node if type(node) is str else "")
            per_node = gpus.get(key)
            if per_node is None:
                per_node = gpus[key] = {}
            gpu = per_node.get(text)
            if gpu is None:
                gpu = per_node[text] = {}
            gpu[name] = int(value) if whole else value

    def _add_gpu_times(self, field_name: str, result: list[dict[str, Any]]) -> None:
        for r in result:
            text, ts = r["metric"].get("gpu"), _value(r.get("value"))
            if type(text) is str and ts is not None:
                per_gpu = self.gpu_times.setdefault(_raw_key(r["metric"]), {}).setdefault(text, {})
                per_gpu[field_name] = ts

    def lingering_gpu_suspects(self) -> list[NodeKey]:
        """Nodes whose GPU series read may include some that stopped being written (a GPU
        vanished: they linger for Prometheus' lookback delta): more GPUs read than the
        node's snapshot reported, or a reason that says a GPU is missing or silent."""
        suspects = []
        for key, per_node in self.gpus.items():
            count = self.gpu_count.get(key)
            if count is None or count == 0:
                continue  # no count: nothing to go by; none: no GPU is read (gpu_readings)
            codes = self.reasons.get(key, {})
            if len(per_node) > count or any(code in _VANISHED_GPU_CODES for code, _ in codes):
                suspects.append(key)
        return suspects

    def gpu_readings(self, key: NodeKey, snapshot_ts: float) -> tuple[GpuReading, ...]:
        """The node's GPUs with their readings as new as its snapshot; a node whose snapshot
        reported no GPU has none.

        Where the sample times were asked for (`lingering_gpu_suspects`), a GPU whose readings
        all stopped is either one the snapshot still lists without readings, shown `silent` as
        a sweep shows it, or one no longer listed, left out: as many are kept, lowest index
        first, as the snapshot's GPU count leaves room for.
        """
        per_node = self.gpus.get(key)
        count = self.gpu_count.get(key)
        if not per_node or count == 0:
            return ()
        # "03" and "3" are one GPU (the last read wins).
        by_index = {int(text): (text, values) for text, values in per_node.items()}
        times = self.gpu_times.get(key)
        if times is None:
            return tuple(GpuReading.with_readings(i, by_index[i][1]) for i in sorted(by_index))
        fresh: dict[int, dict[str, Any]] = {}
        stopped: list[int] = []
        for index in sorted(by_index):
            text, values = by_index[index]
            written = times.get(text, {})
            kept = {name: value for name, value in values.items()
                    if written.get(name, 0.0) + _STAMP_SLACK_S >= snapshot_ts}
            if kept:
                fresh[index] = kept
            else:
                stopped.append(index)
        room = max(0, (count or 0) - len(fresh))
        gpus = [GpuReading.with_readings(i, values) for i, values in fresh.items()]
        gpus += [GpuReading.with_readings(i, {"silent": True}) for i in stopped[:room]]
        return tuple(sorted(gpus, key=lambda g: g.index))

    def gpud(self, key: NodeKey, snapshot_ts: float) -> GpudStatus:
        """The node's GpudStatus from its state and info series as new as its snapshot (older
        ones linger after a change); one shared object per distinct state and versions."""
        state = _as_new_as(self.state.get(key), snapshot_ts)
        info = _as_new_as(self.info.get(key), snapshot_ts) or {}
        versions = tuple(_str(info.get(k)) for k in ("gpud_version", "gpud_api", "driver_version",
                                                     "cuda_version"))
        found = self._gpud.get((state, versions))
        if found is None:
            found = self._gpud[state, versions] = _gpud(state, info)
        return found


_T = TypeVar("_T")
#: The remote_write sink stamps a sample with its snapshot's time rounded to the millisecond;
#: the snapshot-time series holds the time unrounded.
_STAMP_SLACK_S = 0.001


def _newest(into: dict[NodeKey, tuple[float, _T]], r: Mapping[str, Any], labels: _T) -> None:
    ts = _value(r.get("value"))
    key = _raw_key(r["metric"])
    if ts is not None and (key not in into or ts > into[key][0]):
        into[key] = (ts, labels)


def _as_new_as(found: tuple[float, _T] | None, snapshot_ts: float) -> _T | None:
    return found[1] if found is not None and found[0] + _STAMP_SLACK_S >= snapshot_ts else None


def _gpud(state: str | None, info: Mapping[str, Any] | None) -> GpudStatus:
    info = info or {}

    def opt(name: str) -> str | None:
        return _label(info, name) or None

    return GpudStatus(reachable=state in ("ok", "nvml"), state=state or "absent",
                      version=opt("gpud_version"), api_schema=opt("gpud_api"),
                      driver_version=opt("driver_version"), cuda_version=opt("cuda_version"))


def _node_snapshot(key: NodeKey, ts: float, metric: Mapping[str, Any], f: _Families, *,
                   now: datetime, stale_after_s: float, thresholds: Thresholds,
                   expected: ExpectedNode | None) -> Snapshot:
    when = datetime.fromtimestamp(ts, timezone.utc)
    identity: dict[str, Any] = {
        "timestamp": when,
        "task_id": clean_text(key[0]),
        "task_name": _label(metric, "task_name") or (expected.task_name if expected else ""),
        "node": clean_text(key[1]),
        "instance_type": _label(metric, "instance_type") or (expected.instance_type if expected else None),
        "expected_gpus": expected.expected_gpus if expected else None,
    }
    age = (now - when).total_seconds()
    if age > stale_after_s:
        verdict = _unknown("stale", f"no snapshot in Prometheus for {_age_text(age)} (stale after "
                           f"{_age_text(stale_after_s)})", _STALE_ACTION)
        return Snapshot(**identity, gpud=GpudStatus(reachable=False, state="stale"), verdict=verdict)
    gpus = f.gpu_readings(key, ts)
    gpud = f.gpud(key, ts)
    status_text = f.status.get(key)
    try:
        status = HealthStatus(status_text) if status_text else None
    except ValueError:
        status = None
    if status is None:
        verdict = _unknown("no_data", "Prometheus holds no verdict for this node's newest snapshot",
                           _NO_DATA_ACTION)
    else:
        # No score while the status is unknown (docs/metrics.md): one read is the old score
        # lingering after its series stopped.
        score = None if status is HealthStatus.UNKNOWN else f.score.get(key)
        counts = f.reasons.get(key, {})
        rescored: tuple[Reason, ...] = ()
        if gpus and any(code in _RESCORABLE for code, _ in counts):
            rescored = score_snapshot(Snapshot(**identity, gpud=GpudStatus(reachable=True), gpus=gpus),
                                      thresholds).reasons
        verdict = Verdict(score=None if score is None else round(score), status=status,
                          reasons=_reasons(counts, thresholds, rescored))
    # One construction per node (a frozen dataclass pays per field, and 10,000 nodes add up).
    return Snapshot(**identity, gpud=gpud, gpus=gpus, verdict=verdict)


def assemble_fleet(
    results: Mapping[str, list[dict[str, Any]]], *, now: datetime, stale_after_s: float,
    thresholds: Thresholds | None = None, expected: Sequence[ExpectedNode] | None = None,
) -> list[Snapshot]:
    """Snapshots from the answers to `fleet_queries` (by name), one per node.

    With `expected`, exactly those nodes, in that order (one Prometheus does not hold is
    `unknown`, `no_data`); without, every node Prometheus holds, by task and node.
    """
    return _snapshots(_Families(results), now=now, stale_after_s=stale_after_s,
                      thresholds=thresholds or Thresholds(), expected=expected)


def _snapshots(f: _Families, *, now: datetime, stale_after_s: float, thresholds: Thresholds,
               expected: Sequence[ExpectedNode] | None) -> list[Snapshot]:
    if expected is None:
        return [
            _node_snapshot(key, ts, metric, f, now=now, stale_after_s=stale_after_s,
                           thresholds=thresholds, expected=None)
            for key, (ts, metric) in sorted(f.nodes.items())
        ]
    out = []
    for node in expected:
        key = (node.task_id, node.node)
        if key in f.nodes:
            ts, metric = f.nodes[key]
            out.append(_node_snapshot(key, ts, metric, f, now=now, stale_after_s=stale_after_s,
                                      thresholds=thresholds, expected=node))
        else:
            out.append(Snapshot(
                timestamp=now, task_id=node.task_id, task_name=node.task_name, node=node.node,
                instance_type=node.instance_type, expected_gpus=node.expected_gpus,
                gpud=GpudStatus(reachable=False, state="absent"),
                verdict=_unknown("no_data", "Prometheus holds no snapshot of this node",
                                 _NO_DATA_ACTION)))
    return out


# --- history ----------------------------------------------------------------------------------

def _points(r: Mapping[str, Any]) -> Iterable[tuple[float, float]]:
    for point in r.get("values") or ():
        value = _value(point)
        try:
            t = float(point[0])
        except (TypeError, ValueError, IndexError):
            continue
        if value is not None:
            yield t, value


def assemble_history(results: Mapping[str, list[dict[str, Any]]], *,
                     thresholds: Thresholds | None = None) -> list[Snapshot]:
    """Snapshots from the answers to `history_queries`: one per distinct snapshot time of each
    node (a step repeats a snapshot until the next one arrives), time-ordered."""
    thresholds = thresholds or Thresholds()
    # (node key, step time) -> what the other series said at that step.
    status: dict[tuple[NodeKey, float], str] = {}
    score: dict[tuple[NodeKey, float], float] = {}
    reasons: dict[tuple[NodeKey, float], dict[tuple[str, str], int]] = {}
    gpus: dict[tuple[NodeKey, float], dict[int, dict[str, Any]]] = {}
    xids: dict[tuple[NodeKey, float], list[tuple[int, int | None]]] = {}
    for r in results.get("status", ()):
        key, label = _key(r["metric"]), _label(r["metric"], "status")
        for t, _ in _points(r):
            status[key, t] = label
    for r in results.get("score", ()):
        key = _key(r["metric"])
        for t, v in _points(r):
            score[key, t] = v
    for r in results.get("reasons", ()):
        key = _key(r["metric"])
        code = (_label(r["metric"], "code"), _label(r["metric"], "severity"))
        for t, v in _points(r):
            if v:
                per = reasons.setdefault((key, t), {})
                per[code] = per.get(code, 0) + int(v)
    for name in ("temp_c", "util_gpu_pct", "ecc"):
        for r in results.get(name, ()):
            key, index = _key(r["metric"]), _gpu_index(r["metric"])
            if index is None:
                continue
            field_name = name
            if name == "ecc":
                scope, kind = _label(r["metric"], "scope"), _label(r["metric"], "type")
                if scope not in ("volatile", "aggregate") or kind not in ("corrected", "uncorrected"):
                    continue
                field_name = f"ecc_{scope}_{kind}"
            for t, v in _points(r):
                gpu = gpus.setdefault((key, t), {}).setdefault(index, {})
                gpu[field_name] = int(v) if name == "ecc" else v
    written: dict[tuple[NodeKey, float, int], float] = {}
    for r in results.get("gpu_times", ()):
        key, index = _key(r["metric"]), _gpu_index(r["metric"])
        if index is not None:
            for t, v in _points(r):
                written[key, t, index] = v
    for r in results.get("xid", ()):
        key, index = _key(r["metric"]), _gpu_index(r["metric"])
        xid_code = _label(r["metric"], "code")
        if not xid_code.isdigit() or len(xid_code) > 6:
            continue
        for t, v in _points(r):
            if v:
                xids.setdefault((key, t), []).append((int(xid_code), index))

    out: list[Snapshot] = []
    for r in results.get("nodes", ()):
        key = _key(r["metric"])
        task_name, instance_type = _label(r["metric"], "task_name"), _label(r["metric"], "instance_type")
        previous: float | None = None
        for t, ts in _points(r):
            if ts == previous:
                continue  # the same snapshot, seen again at the next step
            previous = ts
            at = (key, t)
            status_label = status.get(at)
            try:
                health = HealthStatus(status_label) if status_label else HealthStatus.UNKNOWN
            except ValueError:
                health = HealthStatus.UNKNOWN
            # No score while the status is unknown: one read is a lingering old one.
            value = None if health is HealthStatus.UNKNOWN else score.get(at)
            out.append(Snapshot(
                timestamp=datetime.fromtimestamp(ts, timezone.utc), task_id=key[0],
                task_name=task_name, node=key[1], instance_type=instance_type or None,
                gpud=GpudStatus(reachable=health is not HealthStatus.UNKNOWN,
                                state="ok" if health is not HealthStatus.UNKNOWN else "absent"),
                gpus=tuple(GpuReading.with_readings(i, v) for i, v in sorted(gpus.get(at, {}).items())
                           if written.get((key, t, i), ts) + _STAMP_SLACK_S >= ts),
                xids=tuple(XidError(code=c, gpu_index=g, gpu=f"GPU {g}" if g is not None else None)
                           for c, g in xids.get(at, ())),
                verdict=Verdict(score=None if value is None else round(value), status=health,
                                reasons=_reasons(reasons.get(at, {}), thresholds)),
            ))
    out.sort(key=lambda s: (s.timestamp, s.node))
    return out


def window_bounds(hours: float, now: datetime | None = None) -> tuple[datetime, datetime]:
    """(start, end) of the last `hours` ending `now`."""
    end = now or datetime.now(timezone.utc)
    return end - timedelta(hours=hours), end
