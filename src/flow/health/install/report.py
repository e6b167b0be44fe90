"""Reading what an install or uninstall script printed: its steps, its result, its log tail.

The scripts print `[flow] STEP: STATUS: MESSAGE` per step, `[flow] log| LINE` for the failing
step's log lines, and end with `[flow] result: changed|unchanged|failed`. A node whose output
has no result line (SSH dropped, sudo refused, the shell died) counts as failed, and its
stderr stands in for the log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flow.health.install.shell import RESULT_STATUSES, STEP_STATUSES

__all__ = ["OUTCOMES", "NodeReport", "StepReport", "parse_report"]

#: A node's outcome in the result table: nothing to do, something changed, or it failed.
OUTCOMES = ("ok", "changed", "failed")

_STEP_RE = re.compile(
    r"^\[flow\] (?P<step>[a-z0-9-]+): (?P<status>" + "|".join(STEP_STATUSES) + r"): (?P<message>.*)$"
)
_LOG_RE = re.compile(r"^\[flow\] log\| ?(?P<line>.*)$")
_RESULT_RE = re.compile(r"^\[flow\] result: (?P<result>" + "|".join(RESULT_STATUSES) + r")\s*$")
_TAIL_LINES = 20


@dataclass(frozen=True)
class StepReport:
    step: str
    status: str
    message: str


@dataclass(frozen=True, kw_only=True)
class NodeReport:
    """One node's run. `outcome` is one of OUTCOMES; `failed_step` and `log_tail` explain a failure."""

    node: str
    outcome: str
    steps: tuple[StepReport, ...] = ()
    failed_step: str | None = None
    message: str = ""
    log_tail: tuple[str, ...] = field(default_factory=tuple)
    exit_status: int | None = None

    @property
    def changed_steps(self) -> tuple[StepReport, ...]:
        return tuple(s for s in self.steps if s.status == "changed")


def parse_report(node: str, exit_status: int | None, stdout: str, stderr: str = "") -> NodeReport:
    """Turn one node's script output into a NodeReport."""
    steps: list[StepReport] = []
    log_tail: list[str] = []
    result: str | None = None
    for line in stdout.splitlines():
        if match := _STEP_RE.match(line):
            steps.append(StepReport(match["step"], match["status"], match["message"]))
        elif match := _LOG_RE.match(line):
            log_tail.append(match["line"])
        elif match := _RESULT_RE.match(line):
            result = match["result"]
    failed = next((s for s in steps if s.status == "failed"), None)
    if result in ("changed", "unchanged") and exit_status == 0 and failed is None:
        return NodeReport(
            node=node,
            outcome="changed" if result == "changed" else "ok",
            steps=tuple(steps),
            message=f"{len([s for s in steps if s.status == 'changed'])} step(s) changed"
            if result == "changed" else "unchanged",
            exit_status=exit_status,
        )
    if failed is not None:
        message = failed.message
        step: str | None = failed.step
    else:
        step = steps[-1].step if steps and result is None else None
        message = (
            f"the script stopped without a result (exit status {exit_status})"
            if exit_status is not None else "the script did not run"
        )
    if not log_tail:
        log_tail = [line for line in stderr.splitlines() if line.strip()][-_TAIL_LINES:]
        if not log_tail:
            log_tail = [line for line in stdout.splitlines() if line.strip()][-_TAIL_LINES:]
    return NodeReport(
        node=node,
        outcome="failed",
        steps=tuple(steps),
        failed_step=step,
        message=message,
        log_tail=tuple(log_tail[-_TAIL_LINES:]),
        exit_status=exit_status,
    )
