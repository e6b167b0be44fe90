"""Running the generated scripts on many nodes over SSH, concurrently.

Each script travels on the SSH channel's stdin to `sh -s` (through `sudo -n` when the login
user is not root), so the token it may carry is never in any process's argv. One node's
failure (unreachable, sudo refused, a failed step) becomes that node's report and never stops
the others. The transport is injectable: `run_scripts` takes any `ScriptRunner`, and
`ssh_runner` makes one from a `flow.ssh.SSHPool`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from flow.errors import FlowError
from flow.health.install.report import NodeReport, parse_report
from flow.health.install.status import NodeStatus, parse_status
from flow.ssh import CommandResult, SSHParams, SSHPool

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT_S",
    "REMOTE_COMMAND",
    "ScriptRunner",
    "Target",
    "read_statuses",
    "run_scripts",
    "ssh_runner",
]

DEFAULT_CONCURRENCY = 16
#: A fresh node downloads GPUd, builds a venv and pip-installs: minutes, not seconds.
DEFAULT_TIMEOUT_S = 900.0

#: The remote command: the script arrives on stdin. `sudo -n` never prompts: a user without
#: passwordless sudo fails at once with sudo's own message rather than hanging.
REMOTE_COMMAND = 'if [ "$(id -u)" = 0 ]; then exec sh -s; else exec sudo -n sh -s; fi'


@dataclass(frozen=True, kw_only=True)
class Target:
    """One node to run a script on. `label` names it in the result table."""

    label: str
    params: SSHParams
    script: str


class ScriptRunner(Protocol):
    """Runs `REMOTE_COMMAND` on a node with `script` on stdin; SSH errors raise `FlowError`."""

    def __call__(self, params: SSHParams, script: str, timeout_s: float) -> Awaitable[CommandResult]: ...


def ssh_runner(pool: SSHPool) -> ScriptRunner:
    """A ScriptRunner over `pool`'s connections."""

    async def run(params: SSHParams, script: str, timeout_s: float) -> CommandResult:
        conn = await pool.connect(params)
        return await conn.run(REMOTE_COMMAND, timeout_s=timeout_s, input=script)

    return run


_T = TypeVar("_T")


async def _each(
    targets: Sequence[Target],
    work: Callable[[Target], Awaitable[_T]],
    *,
    concurrency: int,
    on_done: Callable[[_T], None] | None,
) -> list[_T]:
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency!r}; allowed: >= 1")
    gate = asyncio.Semaphore(concurrency)

    async def one(target: Target) -> _T:
        async with gate:
            result = await work(target)
        if on_done is not None:
            on_done(result)
        return result

    return list(await asyncio.gather(*(one(t) for t in targets)))


def _sudo_hint(result: CommandResult) -> str | None:
    if "sudo" in result.stderr and result.exit_status != 0 and "[flow]" not in result.stdout:
        return (
            "sudo -n refused: the SSH user needs passwordless sudo, or log in as root "
            f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no message'})"
        )
    return None


async def run_scripts(
    targets: Sequence[Target],
    *,
    runner: ScriptRunner,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_done: Callable[[NodeReport], None] | None = None,
) -> list[NodeReport]:
    """Run each target's install/uninstall script; one report per target, in target order."""

    async def work(target: Target) -> NodeReport:
        try:
            result = await runner(target.params, target.script, timeout_s)
        except FlowError as exc:
            return NodeReport(node=target.label, outcome="failed", failed_step="connect",
                              message=exc.message)
        report = parse_report(target.label, result.exit_status, result.stdout, result.stderr)
        hint = _sudo_hint(result)
        if hint is not None:
            return NodeReport(node=target.label, outcome="failed", failed_step="sudo", message=hint,
                              log_tail=report.log_tail, exit_status=result.exit_status)
        return report

    return await _each(targets, work, concurrency=concurrency, on_done=on_done)


async def read_statuses(
    targets: Sequence[Target],
    *,
    runner: ScriptRunner,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = 60.0,
) -> list[NodeStatus]:
    """Run the status script on each target; one NodeStatus per target, in target order."""

    async def work(target: Target) -> NodeStatus:
        try:
            result = await runner(target.params, target.script, timeout_s)
        except FlowError as exc:
            return NodeStatus(node=target.label, error=exc.message)
        status = parse_status(target.label, result.stdout)
        hint = _sudo_hint(result)
        if hint is not None or (status.error and result.stderr.strip()):
            detail = hint or result.stderr.strip().splitlines()[-1]
            return NodeStatus(node=target.label, error=detail)
        return status

    return await _each(targets, work, concurrency=concurrency, on_done=None)
