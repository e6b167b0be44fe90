"""Summaries of a task's history: pure functions over time-ordered samples.

A `Sample` (sample.py) is the part of a snapshot a summary needs.

Counting rules:
- ECC: counters in a snapshot are cumulative, so a window counts their increase: the sum of
  the rises between consecutive readings of each GPU. A fall is a counter reset (a reboot or
  driver reload clears the volatile counters), after which the new value is all new errors.
  Volatile counters are used; a GPU that never reports them falls back to the aggregate ones.
- XIDs: the distinct (code, GPU, time) seen in the window (GPUd repeats an XID in every
  snapshot while it is current).
- Unhealthy periods: runs of consecutive snapshots whose status is degraded or critical. A
  period ends at the first snapshot that is neither (its time is the period's end); one still
  running at the window's end is `ongoing` and ends at its last snapshot.
- Status changes ("flapping"): consecutive snapshots whose status differs.
- Several nodes: a task's nodes are each followed on their own (a GPU is a node's GPU index,
  a period and a change are a node's), then put together: GPUs by node and index, periods by
  start. The current status is the worst of the nodes' newest (critical, unknown, degraded,
  healthy), the current score the lowest of theirs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

from flow.health.snapshot import HealthStatus, format_time
from flow.health.storage.sample import GpuSample, Sample

__all__ = [
    "FleetSummary",
    "FleetTotals",
    "GpuSummary",
    "TaskSummary",
    "UnhealthyPeriod",
    "summarize_fleet",
    "summarize_task",
]

_UNHEALTHY = (HealthStatus.DEGRADED, HealthStatus.CRITICAL)
_STATUS_ORDER = (HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.CRITICAL,
                 HealthStatus.UNKNOWN)
# Worse is higher; Severity's order (flow.health.snapshot.Severity.rank): unknown is worse
# than degraded.
_STATUS_RANK = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.UNKNOWN: 2,
                HealthStatus.CRITICAL: 3}


def _time(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


@dataclass(frozen=True, kw_only=True)
class GpuSummary:
    index: int
    samples: int
    node: str = ""
    max_temp_c: float | None
    avg_util_gpu_pct: float | None
    ecc_corrected_increase: int
    ecc_uncorrected_increase: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True, kw_only=True)
class UnhealthyPeriod:
    start: datetime
    end: datetime
    worst_status: HealthStatus
    reasons: tuple[str, ...]  # reason codes seen, in order of first appearance
    snapshots: int
    ongoing: bool
    node: str = ""

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": format_time(self.start),
            "end": format_time(self.end),
            "duration_s": self.duration_s,
            "worst_status": self.worst_status.value,
            "reasons": list(self.reasons),
            "snapshots": self.snapshots,
            "ongoing": self.ongoing,
            "node": self.node,
        }


@dataclass(frozen=True, kw_only=True)
class TaskSummary:
    """One task's history in a window. Scores count snapshots that have one (not unknown)."""

    task_id: str
    task_name: str
    window_start: datetime
    window_end: datetime
    snapshots: int
    first_time: datetime | None
    last_time: datetime | None
    status_current: HealthStatus
    score_current: int | None
    score_avg: float | None
    score_min: int | None
    score_max: int | None
    status_counts: dict[str, int]
    gpus: tuple[GpuSummary, ...]
    ecc_corrected_increase: int
    ecc_uncorrected_increase: int
    xid_count: int
    xid_by_code: dict[int, int]
    unhealthy_periods: tuple[UnhealthyPeriod, ...]
    status_changes: int

    @property
    def unhealthy_s(self) -> float:
        return sum(p.duration_s for p in self.unhealthy_periods)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "task_name": self.task_name,
            "window_start": format_time(self.window_start),
            "window_end": format_time(self.window_end),
            "snapshots": self.snapshots,
            "first_time": _time(self.first_time),
            "last_time": _time(self.last_time),
            "status_current": self.status_current.value,
            "score_current": self.score_current,
            "score_avg": self.score_avg,
            "score_min": self.score_min,
            "score_max": self.score_max,
            "status_counts": dict(self.status_counts),
            "gpus": [g.to_dict() for g in self.gpus],
            "ecc_corrected_increase": self.ecc_corrected_increase,
            "ecc_uncorrected_increase": self.ecc_uncorrected_increase,
            "xid_count": self.xid_count,
            "xid_by_code": {str(k): v for k, v in sorted(self.xid_by_code.items())},
            "unhealthy_periods": [p.to_dict() for p in self.unhealthy_periods],
            "unhealthy_s": self.unhealthy_s,
            "status_changes": self.status_changes,
        }


@dataclass(frozen=True, kw_only=True)
class FleetTotals:
    tasks: int = 0
    snapshots: int = 0
    status_current: dict[str, int] = field(default_factory=dict)  # tasks by current status
    tasks_with_unhealthy_periods: int = 0
    unhealthy_periods: int = 0
    status_changes: int = 0
    ecc_corrected_increase: int = 0
    ecc_uncorrected_increase: int = 0
    xid_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["status_current"] = dict(self.status_current)
        return d


@dataclass(frozen=True, kw_only=True)
class FleetSummary:
    window_start: datetime
    window_end: datetime
    tasks: tuple[TaskSummary, ...]
    totals: FleetTotals

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_start": format_time(self.window_start),
            "window_end": format_time(self.window_end),
            "totals": self.totals.to_dict(),
            "tasks": [t.to_dict() for t in self.tasks],
        }


def _increase(values: Iterable[int | None]) -> int:
    total = 0
    prev: int | None = None
    for value in values:
        if value is None:
            continue
        if prev is not None:
            total += value - prev if value >= prev else value  # a fall is a counter reset
        prev = value
    return total


def _by_node(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    nodes: dict[str, list[Sample]] = {}
    for sample in samples:
        nodes.setdefault(sample.node, []).append(sample)
    return nodes


def _gpu_summaries(samples: Sequence[Sample]) -> tuple[GpuSummary, ...]:
    per_gpu: dict[tuple[str, int], list[GpuSample]] = {}
    for sample in samples:
        for gpu in sample.gpus:
            per_gpu.setdefault((sample.node, gpu.gpu_index), []).append(gpu)
    out: list[GpuSummary] = []
    for node, index in sorted(per_gpu):
        readings = per_gpu[node, index]
        temps = [g.temp_c for g in readings if g.temp_c is not None]
        utils = [g.util_gpu_pct for g in readings if g.util_gpu_pct is not None]
        volatile = any(g.ecc_corrected is not None or g.ecc_uncorrected is not None for g in readings)
        if volatile:
            corrected = _increase(g.ecc_corrected for g in readings)
            uncorrected = _increase(g.ecc_uncorrected for g in readings)
        else:
            corrected = _increase(g.ecc_aggregate_corrected for g in readings)
            uncorrected = _increase(g.ecc_aggregate_uncorrected for g in readings)
        out.append(GpuSummary(
            index=index, node=node, samples=len(readings),
            max_temp_c=max(temps) if temps else None,
            avg_util_gpu_pct=round(sum(utils) / len(utils), 2) if utils else None,
            ecc_corrected_increase=corrected, ecc_uncorrected_increase=uncorrected,
        ))
    return tuple(out)


def _periods(samples: Sequence[Sample]) -> tuple[UnhealthyPeriod, ...]:
    periods: list[UnhealthyPeriod] = []
    run: list[Sample] = []

    def close(end: datetime, ongoing: bool) -> None:
        reasons: dict[str, None] = {}
        for s in run:
            for code in s.reasons:
                reasons.setdefault(code, None)
        worst = max((s.status for s in run), key=_STATUS_RANK.__getitem__)
        periods.append(UnhealthyPeriod(start=run[0].time, end=end, worst_status=worst,
                                       reasons=tuple(reasons), snapshots=len(run), ongoing=ongoing,
                                       node=run[0].node))

    for sample in samples:
        if sample.status in _UNHEALTHY:
            run.append(sample)
        elif run:
            close(sample.time, False)
            run = []
    if run:
        close(run[-1].time, True)
    return tuple(periods)


def summarize_task(
    task_id: str, samples: Sequence[Sample], *, window_start: datetime, window_end: datetime
) -> TaskSummary:
    """Summarise a task's samples (time-ordered, all inside the window)."""
    scores = [s.score for s in samples if s.score is not None]
    counts = Counter(s.status for s in samples)
    xids = set().union(*(s.xids for s in samples)) if samples else set()
    gpus = _gpu_summaries(samples)
    last = samples[-1] if samples else None
    nodes = _by_node(samples)
    newest = [per_node[-1] for per_node in nodes.values()]
    current = max((s.status for s in newest), key=_STATUS_RANK.__getitem__,
                  default=HealthStatus.UNKNOWN)
    current_scores = [s.score for s in newest if s.score is not None]
    periods = sorted((p for per_node in nodes.values() for p in _periods(per_node)),
                     key=lambda p: (p.start, p.node))
    return TaskSummary(
        task_id=task_id,
        task_name=last.task_name if last else "",
        window_start=window_start,
        window_end=window_end,
        snapshots=len(samples),
        first_time=samples[0].time if samples else None,
        last_time=last.time if last else None,
        status_current=current,
        score_current=min(current_scores) if current_scores else None,
        score_avg=round(sum(scores) / len(scores), 2) if scores else None,
        score_min=min(scores) if scores else None,
        score_max=max(scores) if scores else None,
        status_counts={st.value: counts.get(st, 0) for st in _STATUS_ORDER},
        gpus=gpus,
        ecc_corrected_increase=sum(g.ecc_corrected_increase for g in gpus),
        ecc_uncorrected_increase=sum(g.ecc_uncorrected_increase for g in gpus),
        xid_count=len(xids),
        xid_by_code=dict(sorted(Counter(code for code, _, _ in xids).items())),
        unhealthy_periods=tuple(periods),
        status_changes=sum(1 for per_node in nodes.values()
                           for a, b in pairwise(per_node) if a.status != b.status),
    )


def summarize_fleet(
    tasks: Sequence[TaskSummary], *, window_start: datetime, window_end: datetime
) -> FleetSummary:
    current = Counter(t.status_current for t in tasks)
    totals = FleetTotals(
        tasks=len(tasks),
        snapshots=sum(t.snapshots for t in tasks),
        status_current={st.value: current.get(st, 0) for st in _STATUS_ORDER},
        tasks_with_unhealthy_periods=sum(1 for t in tasks if t.unhealthy_periods),
        unhealthy_periods=sum(len(t.unhealthy_periods) for t in tasks),
        status_changes=sum(t.status_changes for t in tasks),
        ecc_corrected_increase=sum(t.ecc_corrected_increase for t in tasks),
        ecc_uncorrected_increase=sum(t.ecc_uncorrected_increase for t in tasks),
        xid_count=sum(t.xid_count for t in tasks),
    )
    return FleetSummary(window_start=window_start, window_end=window_end, tasks=tuple(tasks),
                        totals=totals)
