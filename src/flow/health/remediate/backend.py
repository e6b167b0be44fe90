"""What a scheduler backend does for remediation: read a node, drain it, resume it.

Backends (Slurm's `scontrol`, a site's own command) implement `SchedulerBackend`. They never
raise for a scheduler that refuses or cannot be reached: each call returns an `ActionResult`
whose `ok` says whether the change is known to have happened (read back where the scheduler
allows) and whose `answer` is what the scheduler said, for the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["ActionResult", "NodeState", "SchedulerBackend"]


@dataclass(frozen=True, kw_only=True)
class NodeState:
    """A node as the scheduler sees it. `states` are the scheduler's flags, upper case
    (Slurm: `IDLE`, `ALLOCATED`, `MIXED`, `DRAIN`, `DRAINING`, `DRAINED`, `DOWN`, ...);
    `reason` is the drain/down reason text (None when there is none)."""

    name: str
    states: frozenset[str] = field(default_factory=frozenset)
    reason: str | None = None
    error: str | None = None  # set when the node could not be read: the rest is then unknown

    @property
    def drained(self) -> bool:
        """Drained or draining (no new work is placed there)."""
        return bool(self.states & {"DRAIN", "DRAINING", "DRAINED"})


@dataclass(frozen=True, kw_only=True)
class ActionResult:
    """The outcome of one drain or resume. `ok` only when the scheduler confirmed it."""

    ok: bool
    answer: str = ""


class SchedulerBackend(Protocol):
    """A scheduler that can take nodes out of service and put them back."""

    name: str

    async def node_state(self, node: str) -> NodeState:
        """The node's current state and reason; `error` set (never raised) when unreadable."""
        ...

    async def drain(self, node: str, reason: str) -> ActionResult:
        """Stop placing work on the node, with `reason` (already cut to what the scheduler
        accepts by the caller)."""
        ...

    async def resume(self, node: str) -> ActionResult:
        """Put the node back in service."""
        ...
