"""What the views say about a set of snapshots, without rendering it: the fleet's counts, reasons
folded per rule, what changed between two sweeps. Pure functions (no rich), shared by the
terminal views and the `--json` documents.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from flow.health.snapshot import GpuReading, HealthStatus, Reason, Severity, Snapshot

__all__ = ["FleetSummary", "changes_between", "gpu_list", "group_reasons", "label", "summarise"]


def gpu_list(gpus: Sequence[int]) -> str:
    """`0-7`, `0,3,5`: compact GPU index lists."""
    ordered = sorted(set(gpus))
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(str(g) for g in ordered)


def group_reasons(reasons: Sequence[Reason]) -> list[tuple[Reason, list[int]]]:
    """Per-GPU reasons of one rule folded into one line: (the worst reason, the GPUs it hit).

    Reasons arrive sorted by scoring (worst reading first within a code); XIDs fold per XID code.
    """
    groups: dict[tuple[str, float | None], tuple[Reason, list[int]]] = {}
    out: list[tuple[Reason, list[int]]] = []
    for r in reasons:
        if r.gpu is None:
            out.append((r, []))
            continue
        key = (r.code, r.value if r.code.startswith("xid_") else None)
        if key in groups:
            groups[key][1].append(r.gpu)
        else:
            groups[key] = (r, [r.gpu])
            out.append(groups[key])
    return out


def _gpu_is_healthy(snapshot: Snapshot, gpu: GpuReading) -> bool:
    if snapshot.status is HealthStatus.UNKNOWN:
        return False
    reasons = snapshot.verdict.reasons if snapshot.verdict else ()
    return not any(r.gpu == gpu.index and r.severity is not Severity.INFO for r in reasons)


@dataclass(frozen=True)
class FleetSummary:
    nodes: int
    healthy: int
    degraded: int
    critical: int
    unknown: int
    gpus_total: int
    gpus_healthy: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def summarise(snapshots: Sequence[Snapshot]) -> FleetSummary:
    counts = Counter(s.status for s in snapshots)
    gpus_total = sum(len(s.gpus) for s in snapshots)
    gpus_healthy = sum(1 for s in snapshots for g in s.gpus if _gpu_is_healthy(s, g))
    return FleetSummary(
        nodes=len(snapshots),
        healthy=counts[HealthStatus.HEALTHY],
        degraded=counts[HealthStatus.DEGRADED],
        critical=counts[HealthStatus.CRITICAL],
        unknown=counts[HealthStatus.UNKNOWN],
        gpus_total=gpus_total,
        gpus_healthy=gpus_healthy,
    )


def label(s: Snapshot) -> str:
    return s.task_name or s.task_id


def changes_between(before: Sequence[Snapshot], after: Sequence[Snapshot]) -> list[str]:
    """Lines saying which nodes changed status (or appeared/disappeared) between two sweeps."""
    old = {(s.task_id, s.node): s for s in before}
    new = {(s.task_id, s.node): s for s in after}
    lines: list[str] = []
    for key, s in new.items():
        prev = old.get(key)
        if prev is None:
            lines.append(f"{label(s)} {s.node}: new ({s.status.value})")
        elif prev.status is not s.status:
            reason = s.verdict.main_reason if s.verdict else None
            lines.append(f"{label(s)} {s.node}: {prev.status.value} → {s.status.value}"
                         + (f" ({reason.message})" if reason else ""))
    for key, s in old.items():
        if key not in new:
            lines.append(f"{label(s)} {s.node}: gone")
    return lines
