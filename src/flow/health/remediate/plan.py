"""The plan: from a sweep, each node's recent history and its scheduler state, what to do.

Pure: no I/O, no clock. Per node:

- **drain** when its verdict has a reason the policy drains for, in `consecutive_sweeps` sweeps
  in a row (the newest included), or at once when the reason never heals by itself; not when the
  node is already drained (by flow: nothing to do; by anyone else: left alone and said so).
- **undrain** when the scheduler shows it drained with flow's marker and it has been Healthy in
  `healthy_sweeps` sweeps in a row.
- otherwise nothing, with the reason why not (`note`).

Drains then pass the brake, most severe first (lowest score, then most drain reasons); the
ones past its limit are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from flow.health.remediate.backend import NodeState
from flow.health.remediate.brake import Brake
from flow.health.remediate.marker import is_ours
from flow.health.remediate.policy import RemediationSettings, drain_reasons, heals_by_itself, is_healthy
from flow.health.snapshot import Reason, Snapshot

__all__ = ["NodeView", "Plan", "PlanItem", "make_plan", "severity_key"]


@dataclass(frozen=True, kw_only=True)
class NodeView:
    """One swept node: its newest snapshot, its scheduler name and its stored history (oldest
    first, the newest snapshot last)."""

    snapshot: Snapshot
    scheduler_node: str
    history: tuple[Snapshot, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PlanItem:
    """What the plan says for one node. `action` is drain, undrain or none; `refused` says the
    brake stopped a drain; `note` says why (not)."""

    node: str  # scheduler name
    task_id: str = ""
    task_name: str = ""
    host: str = ""
    status: str | None = None
    score: int | None = None
    action: str = "none"
    reasons: tuple[Reason, ...] = ()
    note: str = ""
    refused: bool = False
    problem: bool = False  # something is wrong that the operator must look at (exit 1)

    @property
    def acts(self) -> bool:
        return self.action != "none" and not self.refused

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node, "task_id": self.task_id, "task_name": self.task_name,
            "host": self.host, "status": self.status, "score": self.score, "action": self.action,
            "refused": self.refused, "note": self.note,
            "reasons": [{"code": r.code, "severity": r.severity.value, "message": r.message}
                        for r in self.reasons],
        }


@dataclass(frozen=True, kw_only=True)
class Plan:
    items: tuple[PlanItem, ...]
    brake: Brake
    fleet_size: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def actions(self) -> tuple[PlanItem, ...]:
        return tuple(i for i in self.items if i.action != "none")

    @property
    def brake_held(self) -> bool:
        return any(i.refused for i in self.items)


def severity_key(item: PlanItem) -> tuple[float, int, str]:
    """Most severe first: the lowest score (an Unknown verdict after every scored one), then
    the most drain reasons, then the name (so that equal nodes are taken in a stable order)."""
    score = float(item.score) if item.score is not None else 100.5
    return score, -len(item.reasons), item.node


def _streak(history: Sequence[Snapshot], test: Any) -> int:
    count = 0
    for snapshot in reversed(history):
        if not test(snapshot):
            break
        count += 1
    return count


def _base(view: NodeView) -> PlanItem:
    s = view.snapshot
    return PlanItem(node=view.scheduler_node, task_id=s.task_id, task_name=s.task_name, host=s.node,
                    status=s.status.value, score=s.verdict.score if s.verdict else None)


def _decide(view: NodeView, state: NodeState | None, settings: RemediationSettings) -> PlanItem:
    item = _base(view)
    history = view.history or (view.snapshot,)
    reasons = drain_reasons(view.snapshot, settings)
    if state is not None and state.error is not None:
        if reasons:
            return replace(item, reasons=reasons, problem=True,
                           note=f"cannot read the node in the scheduler: {state.error}")
        return replace(item, note=f"cannot read the node in the scheduler: {state.error}")
    drained = state is not None and state.drained
    ours = drained and state is not None and is_ours(state.reason)
    if reasons:
        if ours:
            return replace(item, reasons=reasons, note="already drained by flow")
        if drained:
            theirs = state.reason if state is not None and state.reason else "no reason given"
            return replace(item, reasons=reasons, note=f"drained by someone else ({theirs}): left alone")
        streak = _streak(history, lambda s: bool(drain_reasons(s, settings)))
        if not heals_by_itself(reasons, settings):
            return replace(item, action="drain", reasons=reasons,
                           note="a fault that does not heal by itself: drained at once")
        if streak >= settings.consecutive_sweeps:
            return replace(item, action="drain", reasons=reasons,
                           note=f"critical in {streak} sweeps in a row")
        return replace(item, reasons=reasons,
                       note=f"critical in {streak} of the {settings.consecutive_sweeps} sweeps in a "
                            "row needed: waiting")
    if ours:
        healthy = _streak(history, is_healthy)
        if healthy >= settings.healthy_sweeps:
            return replace(item, action="undrain", note=f"healthy in {healthy} sweeps in a row")
        return replace(item, note=f"drained by flow; healthy in {healthy} of the "
                                  f"{settings.healthy_sweeps} sweeps in a row needed to resume")
    if drained:
        theirs = state.reason if state is not None and state.reason else "no reason given"
        return replace(item, note=f"drained by someone else ({theirs}): left alone")
    return item


def make_plan(
    views: Sequence[NodeView],
    states: Mapping[str, NodeState],
    settings: RemediationSettings,
    *,
    brake: Brake,
    fleet_size: int,
) -> Plan:
    """The plan for `views` (see the module doc). `states` holds the scheduler's view of the
    nodes that were read (a node missing from it is taken as not drained)."""
    items = [_decide(v, states.get(v.scheduler_node), settings) for v in views]
    drains = sorted((i for i in items if i.action == "drain"), key=severity_key)
    _, refused = brake.split(drains)
    refused_nodes = {id(i) for i in refused}
    why = f"brake: {brake.describe()}"
    final = [replace(i, refused=True, note=why) if id(i) in refused_nodes else i for i in items]
    return Plan(items=tuple(final), brake=brake, fleet_size=fleet_size)
