"""The brake: how many nodes flow may take out of service within a sliding window.

A bad rule or a bad sweep (a switch that drops, a GPUd upgrade that misreports) can make the
whole fleet look broken at once; the brake keeps that from becoming a fleet-wide drain. Counted:
every node flow drained (applied) within the window, by the audit log, and every node the
scheduler shows drained with flow's marker now, whenever that happened. When a plan asks for
more than is left, the most severe nodes go first and the rest are refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from flow.health.remediate.audit import ActionRecord
from flow.health.remediate.backend import NodeState
from flow.health.remediate.marker import is_ours

__all__ = ["Brake", "held_by_us"]

T = TypeVar("T")


def held_by_us(records: Iterable[ActionRecord], states: Mapping[str, NodeState],
               *, since: datetime) -> frozenset[str]:
    """Nodes that count against the brake: drained by flow (applied) at or after `since`, or
    drained now with flow's marker."""
    held = {r.node for r in records if r.action == "drain" and r.mode == "applied" and r.time >= since}
    held |= {name for name, state in states.items()
             if state.error is None and state.drained and is_ours(state.reason)}
    return frozenset(held)


@dataclass(frozen=True)
class Brake:
    """`limit` nodes within the window, `held` of them already taken."""

    limit: int
    held: frozenset[str]
    window_hours: float

    @property
    def left(self) -> int:
        return max(0, self.limit - len(self.held))

    def split(self, candidates: Sequence[T]) -> tuple[list[T], list[T]]:
        """(allowed, refused): `candidates`, already ordered most severe first, cut at `left`."""
        allowed = list(candidates[:self.left])
        return allowed, list(candidates[self.left:])

    def describe(self) -> str:
        return (f"{len(self.held)} of {self.limit} nodes drained by flow within the last "
                f"{self.window_hours:g} h")
