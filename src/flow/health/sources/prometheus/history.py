"""A task's history assembled from the answers to `history_queries`: one `Snapshot` per
distinct snapshot time of each node (a range query repeats a snapshot at every step until the
next one arrives), time-ordered."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from flow.config import Thresholds
from flow.health.snapshot import GpudStatus, GpuReading, HealthStatus, Snapshot, Verdict, XidError
from flow.health.sources.prometheus.answers import Labels, Series, number
from flow.health.sources.prometheus.fleet import NodeKey
from flow.health.sources.prometheus.verdicts import reasons_read_back
from flow.text import clean_text

__all__ = ["assemble_history", "window_bounds"]


def _points(series: Series) -> Iterator[tuple[float, float]]:
    for t, text in series.values:
        value = number(text)
        if value is not None:
            yield t, value


def _key(labels: Labels) -> NodeKey:
    return clean_text(labels.task_id), clean_text(labels.node)


def _gpu_index(labels: Labels) -> int | None:
    text = labels.gpu
    return int(text) if text.isdigit() and len(text) < 6 else None


def assemble_history(results: Mapping[str, list[Series]], *,
                     thresholds: Thresholds | None = None) -> list[Snapshot]:
    """Snapshots from the answers to `history_queries` (by name)."""
    thresholds = thresholds or Thresholds()
    # (node key, step time) -> what the other series said at that step.
    status: dict[tuple[NodeKey, float], str] = {}
    score: dict[tuple[NodeKey, float], float] = {}
    reasons: dict[tuple[NodeKey, float], dict[tuple[str, str], int]] = {}
    gpus: dict[tuple[NodeKey, float], dict[int, dict[str, Any]]] = {}
    xids: dict[tuple[NodeKey, float], list[tuple[int, int | None]]] = {}
    for s in results.get("status", ()):
        key, label = _key(s.metric), s.metric.status
        for t, _ in _points(s):
            status[key, t] = label
    for s in results.get("score", ()):
        key = _key(s.metric)
        for t, v in _points(s):
            score[key, t] = v
    for s in results.get("reasons", ()):
        key = _key(s.metric)
        code = (clean_text(s.metric.code), clean_text(s.metric.severity))
        for t, v in _points(s):
            if v:
                per = reasons.setdefault((key, t), {})
                per[code] = per.get(code, 0) + int(v)
    for name in ("temp_c", "util_gpu_pct", "ecc"):
        for s in results.get(name, ()):
            key, index = _key(s.metric), _gpu_index(s.metric)
            if index is None:
                continue
            field_name = name
            if name == "ecc":
                scope, kind = s.metric.scope, s.metric.type
                if scope not in ("volatile", "aggregate") or kind not in ("corrected", "uncorrected"):
                    continue
                field_name = f"ecc_{scope}_{kind}"
            for t, v in _points(s):
                gpu = gpus.setdefault((key, t), {}).setdefault(index, {})
                gpu[field_name] = int(v) if name == "ecc" else v
    for s in results.get("xid", ()):
        key, index = _key(s.metric), _gpu_index(s.metric)
        xid_code = s.metric.code
        if not xid_code.isdigit() or len(xid_code) > 6:
            continue
        for t, v in _points(s):
            if v:
                xids.setdefault((key, t), []).append((int(xid_code), index))

    out: list[Snapshot] = []
    for s in results.get("nodes", ()):
        key = _key(s.metric)
        task_name, instance_type = clean_text(s.metric.task_name), clean_text(s.metric.instance_type)
        previous: float | None = None
        for t, ts in _points(s):
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
                gpus=tuple(GpuReading.with_readings(i, v) for i, v in sorted(gpus.get(at, {}).items())),
                xids=tuple(XidError(code=c, gpu_index=g, gpu=f"GPU {g}" if g is not None else None)
                           for c, g in xids.get(at, ())),
                verdict=Verdict(score=None if value is None else round(value), status=health,
                                reasons=reasons_read_back(reasons.get(at, {}), thresholds)),
            ))
    out.sort(key=lambda s: (s.timestamp, s.node))
    return out


def window_bounds(hours: float, now: datetime | None = None) -> tuple[datetime, datetime]:
    """(start, end) of the last `hours` ending `now`."""
    end = now or datetime.now(timezone.utc)
    return end - timedelta(hours=hours), end
