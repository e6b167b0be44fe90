"""A durable, resumable read position for streaming a task's log (the collector's cursor)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from flow.health.storage.layout import DayFiles, list_days
from flow.health.storage.lines import ReadCounters, iter_day_lines, open_day

__all__ = ["StreamPosition", "iter_lines_from"]


@dataclass(frozen=True, order=True, kw_only=True)
class StreamPosition:
    """Where a reader of one task's log stands: a UTC day and a byte offset into that day's
    stream (the decompressed `.jsonl.gz` followed by the `.jsonl`).

    Compression copies bytes verbatim, so a position saved while the day was a `.jsonl` stays
    right after the day is compressed. `day=None` is the start of the task's log. Persist it
    with `to_dict()` and restore it with `from_dict()`.
    """

    task_id: str
    day: date | None = None
    offset: int = 0

    @classmethod
    def start(cls, task_id: str) -> StreamPosition:
        return cls(task_id=task_id)

    def protects(self, task_id: str, day: date) -> bool:
        """A `cleanup(protect=...)` callback: keep this task's days not yet fully read."""
        return task_id == self.task_id and (self.day is None or day >= self.day)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "day": self.day.isoformat() if self.day else None,
            "offset": self.offset,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StreamPosition:
        """Raises ValueError on a malformed position."""
        task_id = d.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(f"stream position has no task_id: {dict(d)!r}")
        raw_day = d.get("day")
        offset = d.get("offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"stream position offset={offset!r} is not a byte offset >= 0")
        return cls(
            task_id=task_id,
            day=date.fromisoformat(str(raw_day)) if raw_day else None,
            offset=offset if raw_day else 0,
        )

    def __str__(self) -> str:
        return f"{self.task_id}@{self.day.isoformat() if self.day else 'start'}+{self.offset}"


def iter_lines_from(
    task_dir: Path, position: StreamPosition, counters: ReadCounters
) -> Iterator[tuple[bytes, StreamPosition]]:
    """Each non-empty line of the task's log after `position`, with the position past it.

    A last line with no newline in the newest file may still be being written, so it is left
    for the next call; in an older file such a line is final (a crash tore it) and is passed
    on for the caller to count. Days before `position.day` are not opened.
    """
    days = list_days(task_dir)
    for i, day in enumerate(days):
        if position.day is not None and day < position.day:
            continue
        offset = position.offset if day == position.day else 0
        newest = i == len(days) - 1
        with open_day(DayFiles(task_dir, day)) as od:
            for line in iter_day_lines(od, counters, start_offset=offset):
                if not line.terminated and newest:
                    return
                if line.data:
                    yield line.data, StreamPosition(task_id=position.task_id, day=day,
                                                    offset=line.end)
