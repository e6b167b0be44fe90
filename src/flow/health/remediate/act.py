"""Carrying out a plan: each action through the scheduler backend, each one in the audit log.

Dry run (the default) asks the scheduler nothing and changes nothing; it records what would
have been done (`dry-run`). With `apply`, a drain or resume is `applied` only when the backend
confirms it, else `failed` with the scheduler's answer. Drains the brake stopped are `refused`.
Each record is appended as soon as its action ends, so the log holds what was done even when
a later action hangs or the run is interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from flow.health.remediate.audit import ActionRecord, AuditLog
from flow.health.remediate.backend import ActionResult, SchedulerBackend
from flow.health.remediate.marker import make_reason
from flow.health.remediate.plan import PlanItem

__all__ = ["Outcome", "carry_out", "reason_text"]


@dataclass(frozen=True)
class Outcome:
    """What became of one planned action."""

    item: PlanItem
    record: ActionRecord

    @property
    def mode(self) -> str:
        return self.record.mode


def reason_text(item: PlanItem, now: datetime, manual: str | None = None) -> str:
    """The scheduler reason for a drain: `manual` text, else the first drain reason."""
    if manual is not None:
        return make_reason(manual, now)
    first = item.reasons[0].message if item.reasons else item.note
    return make_reason(first, now)


async def carry_out(
    items: Sequence[PlanItem],
    backend: SchedulerBackend,
    audit: AuditLog,
    *,
    apply: bool,
    user: str,
    now: datetime,
    manual_reason: str | None = None,
) -> list[Outcome]:
    """Act on every item whose action is not `none` (see the module doc), in order."""
    outcomes: list[Outcome] = []
    for item in items:
        if item.action == "none":
            continue
        reason = reason_text(item, now, manual_reason) if item.action == "drain" else ""
        why, answer = "", ""
        if item.refused:
            mode, why = "refused", item.note
        elif not apply:
            mode = "dry-run"
        else:
            result: ActionResult
            if item.action == "drain":
                result = await backend.drain(item.node, reason)
            else:
                result = await backend.resume(item.node)
            mode = "applied" if result.ok else "failed"
            answer = result.answer
            if not result.ok:
                why = f"{backend.name} did not confirm the {item.action}"
        record = ActionRecord(
            time=now, node=item.node, action=item.action, mode=mode, scheduler=backend.name,
            task_id=item.task_id, task_name=item.task_name, host=item.host, status=item.status,
            score=item.score, reasons=tuple({"code": r.code, "message": r.message} for r in item.reasons),
            reason=reason, why=why, user=user, answer=answer)
        audit.append([record])
        outcomes.append(Outcome(item, record))
    return outcomes
