"""The audit log of remediation: `$FLOW_HOME/actions.jsonl`, one JSON object per line.

Every drain and resume flow plans is appended, whatever became of it: `applied` (the scheduler
confirmed it), `dry-run` (planned, nothing changed), `refused` (the brake held), `failed` (the
scheduler refused or could not be reached; nothing is recorded as done). The file is private
(0600, in a 0700 directory) and only ever appended: each batch of lines is written whole with
one `write` on an `O_APPEND` descriptor under an exclusive `flock`, so two `flow` processes never
interleave lines. Reading is bounded (the newest `MAX_READ_BYTES`) and skips, and counts, lines
that are not records (a crash mid-write, a hand edit).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from flow.errors import StorageError
from flow.fs import ensure_private_dir
from flow.health.snapshot import format_time, parse_time
from flow.text import clean_text

__all__ = [
    "ACTIONS",
    "AUDIT_FILE",
    "MAX_LINE_BYTES",
    "MAX_READ_BYTES",
    "MODES",
    "ActionRecord",
    "AuditLog",
    "AuditRead",
]

AUDIT_FILE = "actions.jsonl"
ACTIONS = ("drain", "undrain")
MODES = ("applied", "dry-run", "refused", "failed")
#: The newest part of the log a read looks at; years of a large fleet's actions fit in it.
MAX_READ_BYTES = 32 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024
_ANSWER_CHARS = 2000


@dataclass(frozen=True, kw_only=True)
class ActionRecord:
    """One planned action and what became of it."""

    time: datetime
    node: str  # the scheduler's name of the node
    action: str  # drain | undrain
    mode: str  # applied | dry-run | refused | failed
    scheduler: str  # the backend: slurm | command
    task_id: str = ""
    task_name: str = ""
    host: str = ""  # the node as flow reaches it (user@host:port)
    status: str | None = None  # the verdict's status and score when it was decided
    score: int | None = None
    reasons: tuple[Mapping[str, Any], ...] = ()  # {code, message} of the reasons acted on
    reason: str = ""  # the text sent to the scheduler
    why: str = ""  # why it was refused or failed, in words
    user: str = ""
    answer: str = ""  # what the scheduler said
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": format_time(self.time), "node": self.node, "action": self.action,
            "mode": self.mode, "scheduler": self.scheduler, "task_id": self.task_id,
            "task_name": self.task_name, "host": self.host, "status": self.status,
            "score": self.score, "reasons": [dict(r) for r in self.reasons], "reason": self.reason,
            "why": self.why, "user": self.user, "answer": self.answer, **dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionRecord:
        """Raises ValueError for an object that is not a record (no time, node or action)."""
        if not isinstance(d.get("time"), str) or not isinstance(d.get("node"), str):
            raise ValueError("not an action record")
        action, mode = d.get("action"), d.get("mode")
        if action not in ACTIONS or mode not in MODES:
            raise ValueError("not an action record")
        score = d.get("score")
        reasons = d.get("reasons")
        return cls(
            time=parse_time(d["time"]), node=d["node"], action=str(action), mode=str(mode),
            scheduler=str(d.get("scheduler") or ""), task_id=str(d.get("task_id") or ""),
            task_name=str(d.get("task_name") or ""), host=str(d.get("host") or ""),
            status=d.get("status") if isinstance(d.get("status"), str) else None,
            score=score if isinstance(score, int) and not isinstance(score, bool) else None,
            reasons=tuple(r for r in reasons if isinstance(r, Mapping)) if isinstance(reasons, list) else (),
            reason=str(d.get("reason") or ""), why=str(d.get("why") or ""),
            user=str(d.get("user") or ""), answer=str(d.get("answer") or ""),
        )


@dataclass(frozen=True)
class AuditRead:
    """Records in file order, and how many lines were skipped as damaged."""

    records: tuple[ActionRecord, ...]
    damaged: int = 0


class AuditLog:
    """`$FLOW_HOME/actions.jsonl` (or `path`): append records, read them back."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_home(cls, home: Path) -> AuditLog:
        return cls(home / AUDIT_FILE)

    def append(self, records: Sequence[ActionRecord]) -> None:
        """Append `records` as whole lines. Text from schedulers is cleaned and bounded first.

        Raises:
            StorageError: the log cannot be written (the caller must not claim the action done).
        """
        if not records:
            return
        data = b"".join(orjson.dumps(_clean(r.to_dict())) + b"\n" for r in records)
        try:
            ensure_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except OSError as exc:
            raise StorageError(f"cannot write the audit log {self.path}: {exc.strerror}",
                               path=self.path) from None
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)  # it holds who drained what: the owner's alone
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            raise StorageError(f"cannot write the audit log {self.path}: {exc.strerror}",
                               path=self.path) from None
        finally:
            os.close(fd)  # also drops the lock

    def read(self, *, since: datetime | None = None) -> AuditRead:
        """The records at or after `since` (all when None), from the newest `MAX_READ_BYTES`.

        Raises:
            StorageError: the log exists but cannot be read.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return AuditRead(())
        except OSError as exc:
            raise StorageError(f"cannot read the audit log {self.path}: {exc.strerror}",
                               path=self.path) from None
        try:
            size = os.fstat(fd).st_size
            start = max(0, size - MAX_READ_BYTES)
            with os.fdopen(fd, "rb", closefd=False) as f:
                f.seek(start)
                data = f.read(MAX_READ_BYTES)
        except OSError as exc:
            raise StorageError(f"cannot read the audit log {self.path}: {exc.strerror}",
                               path=self.path) from None
        finally:
            os.close(fd)
        lines = data.split(b"\n")
        if start > 0:
            lines = lines[1:]  # began mid-line: that line is older than the window read
        records: list[ActionRecord] = []
        damaged = 0
        for line in _lines(lines):
            if line is None:
                damaged += 1
                continue
            try:
                obj = orjson.loads(line)
                if not isinstance(obj, Mapping):
                    raise ValueError("not an object")
                record = ActionRecord.from_dict(obj)
            except ValueError:  # orjson.JSONDecodeError is one
                damaged += 1
                continue
            if since is None or record.time >= since:
                records.append(record)
        return AuditRead(tuple(records), damaged)


def _lines(lines: Iterable[bytes]) -> Iterable[bytes | None]:
    for line in lines:
        if not line.strip():
            continue
        yield None if len(line) > MAX_LINE_BYTES else line


def _clean(value: Any) -> Any:
    # Schedulers' answers and node names come from outside: one line each, no terminal escapes.
    if isinstance(value, str):
        return clean_text(value, limit=_ANSWER_CHARS)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
