"""The command backend: a site's own program drains and resumes nodes.

For sites that drain through their own tooling (a ticketing hook, a wrapper around a scheduler
flow has no backend for). The program is `health.remediation.command`, run once per action,
never through a shell, with the node, the action and (for a drain) the reason as separate
arguments:

    COMMAND... NODE drain REASON
    COMMAND... NODE resume

Exit status 0 means done; anything else, or no exit within `command_timeout` seconds (the
program and its children are then killed), is a failure. What it prints (stdout and stderr,
the first `MAX_OUTPUT_BYTES`) is the scheduler's answer in the audit log.

A program cannot be asked what it did, so the command backend reads a node's state from flow's
own audit log: a node whose last applied action was a drain is drained, with the reason flow
gave; any other is in service. A drain made outside flow is therefore invisible to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence

from flow.errors import FlowError
from flow.health.remediate.audit import AuditLog
from flow.health.remediate.backend import ActionResult, NodeState
from flow.text import clean_text

__all__ = ["MAX_OUTPUT_BYTES", "CommandBackend"]

MAX_OUTPUT_BYTES = 16 * 1024


class CommandBackend:
    """`SchedulerBackend` over a configured program (see the module doc)."""

    name = "command"

    def __init__(self, argv: Sequence[str], *, timeout_s: float = 60.0,
                 audit: AuditLog | None = None) -> None:
        if not argv:
            raise ValueError("argv must name a program")
        self.argv = tuple(argv)
        self.timeout_s = timeout_s
        self.audit = audit

    async def node_state(self, node: str) -> NodeState:
        if self.audit is None:
            return NodeState(name=node)
        try:
            records = self.audit.read().records
        except FlowError as exc:  # the Protocol: never raise, say why
            return NodeState(name=node, error=exc.message)
        last = None
        for record in records:
            if record.node == node and record.mode == "applied":
                last = record
        if last is not None and last.action == "drain":
            return NodeState(name=node, states=frozenset({"DRAIN"}), reason=last.reason)
        return NodeState(name=node)

    async def drain(self, node: str, reason: str) -> ActionResult:
        return await self._run(node, "drain", reason)

    async def resume(self, node: str) -> ActionResult:
        return await self._run(node, "resume")

    async def _run(self, *args: str) -> ActionResult:
        argv = [*self.argv, *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            return ActionResult(ok=False, answer=f"cannot run {self.argv[0]}: {exc.strerror or exc}")
        assert proc.stdout is not None
        kept = bytearray()

        async def collect() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                if len(kept) < MAX_OUTPUT_BYTES:
                    kept.extend(chunk[:MAX_OUTPUT_BYTES - len(kept)])
            await proc.wait()

        try:
            await asyncio.wait_for(collect(), self.timeout_s)
        except asyncio.TimeoutError:
            # Its own session: the program and whatever it started go together.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            output = _text(kept)
            return ActionResult(ok=False, answer=f"{self.argv[0]} did not finish within "
                                f"{self.timeout_s:g} s (killed)" + (f": {output}" if output else ""))
        output = _text(kept)
        if proc.returncode == 0:
            return ActionResult(ok=True, answer=output)
        return ActionResult(ok=False, answer=f"{self.argv[0]} exited with status {proc.returncode}"
                            + (f": {output}" if output else ""))


def _text(data: bytes | bytearray) -> str:
    return clean_text(bytes(data).decode("utf-8", "replace").strip(), limit=2000)
