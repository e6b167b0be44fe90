"""A fleet view assembled from the answers to `fleet_queries`: one `Snapshot` per node.

Answers are folded as they arrive (`FleetAnswers.add`), keyed by the raw `(task_id, node)`
labels; a node's labels are cleaned (flow.text.clean_text) once, when its snapshot is built.
Series that stopped being written linger for Prometheus' lookback delta after their last
sample, so what is read is held to the node's newest snapshot (docs/architecture.md,
"Lingering series").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from flow.config import Thresholds
from flow.health.scoring import score_snapshot
from flow.health.snapshot import GpudStatus, GpuReading, HealthStatus, Reason, Snapshot, Verdict
from flow.health.sources.prometheus.answers import Labels, Series, number
from flow.health.sources.prometheus.promql import GPU_METRICS
from flow.health.sources.prometheus.verdicts import (
    RESCORABLE,
    age_text,
    reasons_read_back,
    unknown,
)
from flow.text import clean_text

__all__ = ["STAMP_SLACK_S", "ExpectedNode", "FleetAnswers", "NodeKey", "assemble_fleet"]

NodeKey = tuple[str, str]  # (task_id, node)
_T = TypeVar("_T")

#: The remote_write sink stamps a sample with its snapshot's time rounded to the millisecond;
#: the snapshot-time series holds the time unrounded.
STAMP_SLACK_S = 0.001
#: Reason codes that say a GPU vanished: its series stop, and linger.
_VANISHED_GPU_CODES = frozenset({"gpu_missing", "gpu_silent"})
_STALE_ACTION = ("Check the node's collector (flow logs TASK --source collector) and its "
                 "remote_write sink")
_NO_DATA_ACTION = ("Check that the node's collector runs with a remote_write sink to this "
                   "Prometheus (flow health status TASK)")


@dataclass(frozen=True, kw_only=True)
class ExpectedNode:
    """A node the inventory names: shown even when Prometheus holds nothing for it."""

    task_id: str
    task_name: str
    node: str
    instance_type: str | None = None
    expected_gpus: int | None = None


def _instant(series: Series) -> float | None:
    return number(series.value[1]) if series.value is not None else None


def _newest(into: dict[NodeKey, tuple[float, _T]], series: Series, labels: _T) -> None:
    ts = _instant(series)
    key = (series.metric.task_id, series.metric.node)
    if ts is not None and (key not in into or ts > into[key][0]):
        into[key] = (ts, labels)


def _as_new_as(found: tuple[float, _T] | None, snapshot_ts: float) -> _T | None:
    return found[1] if found is not None and found[0] + STAMP_SLACK_S >= snapshot_ts else None


class FleetAnswers:
    """The answers to a fleet view's queries, folded by node and GPU as each arrives."""

    def __init__(self) -> None:
        self.nodes: dict[NodeKey, tuple[float, Labels]] = {}
        self.status: dict[NodeKey, str] = {}
        self.score: dict[NodeKey, float] = {}
        self.reasons: dict[NodeKey, dict[tuple[str, str], int]] = {}
        # Newest sample time and its labels, per node.
        self.state: dict[NodeKey, tuple[float, str]] = {}
        self.info: dict[NodeKey, tuple[float, Labels]] = {}
        self._gpud: dict[tuple[str | None, tuple[str, ...]], GpudStatus] = {}
        # (task_id, node) -> GPU index (label text) -> GpuReading field -> value.
        self.gpus: dict[NodeKey, dict[str, dict[str, Any]]] = {}
        # GPUs the node's newest snapshot reported (flow_node_gpus).
        self.gpu_count: dict[NodeKey, int] = {}
        # (task_id, node) -> GPU index (label text) -> GpuReading field -> last written, for
        # the nodes asked about (`lingering_gpu_suspects`).
        self.gpu_times: dict[NodeKey, dict[str, dict[str, float]]] = {}

    def add(self, name: str, result: list[Series]) -> None:
        """Fold the answer to the query `name` (a `fleet_queries` or `gpu_time_queries` key)."""
        field_name = name.partition("/")[0]
        if field_name in GPU_METRICS:
            self._add_gpu_field(field_name, result)
        elif name.startswith("gpu_times/"):
            self._add_gpu_times(name.split("/")[1], result)
        elif name == "nodes":
            for s in result:
                _newest(self.nodes, s, s.metric)
        elif name == "status":
            self.status.update(((s.metric.task_id, s.metric.node), s.metric.status) for s in result)
        elif name == "score":
            for s in result:
                if (value := _instant(s)) is not None:
                    self.score[s.metric.task_id, s.metric.node] = value
        elif name == "gpus":
            for s in result:
                if (value := _instant(s)) is not None and 0 <= value < 100_000:
                    self.gpu_count[s.metric.task_id, s.metric.node] = int(value)
        elif name == "reasons":
            for s in result:
                if count := _instant(s):
                    per = self.reasons.setdefault((s.metric.task_id, s.metric.node), {})
                    code = (clean_text(s.metric.code), clean_text(s.metric.severity))
                    per[code] = per.get(code, 0) + int(count)
        elif name == "state":
            for s in result:
                _newest(self.state, s, clean_text(s.metric.state))
        elif name == "info":
            for s in result:
                _newest(self.info, s, s.metric)

    def _add_gpu_field(self, name: str, result: list[Series]) -> None:
        # The hot loop of a fleet view (80,000 series per field): inlined, no calls.
        whole = name.endswith("_bytes")
        gpus = self.gpus
        for s in result:
            m = s.metric
            text = m.gpu
            if not text.isdigit() or len(text) > 5 or s.value is None:
                continue
            try:
                value = float(s.value[1])
            except ValueError:
                continue
            if value - value != 0.0:
                continue  # NaN or an infinity
            key = (m.task_id, m.node)
            per_node = gpus.get(key)
            if per_node is None:
                per_node = gpus[key] = {}
            gpu = per_node.get(text)
            if gpu is None:
                gpu = per_node[text] = {}
            gpu[name] = int(value) if whole else value

    def _add_gpu_times(self, field_name: str, result: list[Series]) -> None:
        for s in result:
            if (ts := _instant(s)) is not None:
                per_node = self.gpu_times.setdefault((s.metric.task_id, s.metric.node), {})
                per_node.setdefault(s.metric.gpu, {})[field_name] = ts

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
                    if written.get(name, 0.0) + STAMP_SLACK_S >= snapshot_ts}
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
        info = _as_new_as(self.info.get(key), snapshot_ts) or Labels()
        versions = (info.gpud_version, info.gpud_api, info.driver_version, info.cuda_version)
        found = self._gpud.get((state, versions))
        if found is None:
            found = self._gpud[state, versions] = GpudStatus(
                reachable=state in ("ok", "nvml"), state=state or "absent",
                version=clean_text(info.gpud_version) or None,
                api_schema=clean_text(info.gpud_api) or None,
                driver_version=clean_text(info.driver_version) or None,
                cuda_version=clean_text(info.cuda_version) or None)
        return found


def _node_snapshot(key: NodeKey, ts: float, labels: Labels, f: FleetAnswers, *, now: datetime,
                   stale_after_s: float, thresholds: Thresholds,
                   expected: ExpectedNode | None) -> Snapshot:
    when = datetime.fromtimestamp(ts, timezone.utc)
    identity: dict[str, Any] = {
        "timestamp": when,
        "task_id": clean_text(key[0]),
        "task_name": clean_text(labels.task_name) or (expected.task_name if expected else ""),
        "node": clean_text(key[1]),
        "instance_type": (clean_text(labels.instance_type)
                          or (expected.instance_type if expected else None)),
        "expected_gpus": expected.expected_gpus if expected else None,
    }
    age = (now - when).total_seconds()
    if age > stale_after_s:
        verdict = unknown("stale", f"no snapshot in Prometheus for {age_text(age)} (stale after "
                          f"{age_text(stale_after_s)})", _STALE_ACTION)
        return Snapshot(**identity, gpud=GpudStatus(reachable=False, state="stale"), verdict=verdict)
    gpus = f.gpu_readings(key, ts)
    gpud = f.gpud(key, ts)
    status_text = f.status.get(key)
    try:
        status = HealthStatus(status_text) if status_text else None
    except ValueError:
        status = None
    if status is None:
        verdict = unknown("no_data", "Prometheus holds no verdict for this node's newest snapshot",
                          _NO_DATA_ACTION)
    else:
        # No score while the status is unknown (docs/metrics.md): one read is the old score
        # lingering after its series stopped.
        score = None if status is HealthStatus.UNKNOWN else f.score.get(key)
        counts = f.reasons.get(key, {})
        rescored: tuple[Reason, ...] = ()
        if gpus and any(code in RESCORABLE for code, _ in counts):
            rescored = score_snapshot(Snapshot(**identity, gpud=GpudStatus(reachable=True), gpus=gpus),
                                      thresholds).reasons
        verdict = Verdict(score=None if score is None else round(score), status=status,
                          reasons=reasons_read_back(counts, thresholds, rescored))
    # One construction per node (a frozen dataclass pays per field, and 10,000 nodes add up).
    return Snapshot(**identity, gpud=gpud, gpus=gpus, verdict=verdict)


def assemble_fleet(f: FleetAnswers, *, now: datetime, stale_after_s: float,
                   thresholds: Thresholds | None = None,
                   expected: Sequence[ExpectedNode] | None = None) -> list[Snapshot]:
    """Snapshots from the folded answers to `fleet_queries`, one per node.

    With `expected`, exactly those nodes, in that order (one Prometheus does not hold is
    `unknown`, `no_data`); without, every node Prometheus holds, by task and node.
    """
    thresholds = thresholds or Thresholds()
    if expected is None:
        return [
            _node_snapshot(key, ts, labels, f, now=now, stale_after_s=stale_after_s,
                           thresholds=thresholds, expected=None)
            for key, (ts, labels) in sorted(f.nodes.items())
        ]
    out = []
    for node in expected:
        key = (node.task_id, node.node)
        if key in f.nodes:
            ts, labels = f.nodes[key]
            out.append(_node_snapshot(key, ts, labels, f, now=now, stale_after_s=stale_after_s,
                                      thresholds=thresholds, expected=node))
        else:
            out.append(Snapshot(
                timestamp=now, task_id=node.task_id, task_name=node.task_name, node=node.node,
                instance_type=node.instance_type, expected_gpus=node.expected_gpus,
                gpud=GpudStatus(reachable=False, state="absent"),
                verdict=unknown("no_data", "Prometheus holds no snapshot of this node",
                                _NO_DATA_ACTION)))
    return out
