"""A durable, resumable read position for streaming a task's log (the collector's cursor).

A snapshot goes into the file of the UTC day of its own timestamp, and a node's clock can run
ahead or be stepped back: the day files are not written in day order. So a position is not
"a day and an offset" (everything in an earlier day would look read once a later day was
reached) but **how many bytes of each day's stream have been read**. A day whose stream is
longer than its mark has something new, whichever day it is and whenever it was written.

Deciding that costs a `stat` per file: a day's stream length is the decompressed length of its
`.jsonl.gz` (inflated once per file version and cached in `DayLengths`) plus the size of its
`.jsonl`. Days whose files are gone are dropped from the position.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from flow.errors import StorageError
from flow.health.storage.layout import DayFiles, list_days
from flow.health.storage.lines import ReadCounters, gz_chunks, iter_day_lines, open_day

__all__ = ["DayLengths", "StreamPosition", "iter_lines_from"]

# A position names at most this many days (one per day file of a task): far above any
# retention, and a bound on what a cursor file can make us allocate.
_MAX_DAYS = 100_000
_TAIL_STEP = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class StreamPosition:
    """How far a reader of one task's log has read: for each UTC day, the bytes of that day's
    stream (the decompressed `.jsonl.gz` followed by the `.jsonl`) already consumed.

    Compression copies bytes verbatim, so a mark saved while the day was a `.jsonl` stays right
    after the day is compressed. A day without a mark is unread. `floor` comes only from a
    cursor of the earlier single-day format: days before it without a mark count as read.
    Persist with `to_dict()`, restore with `from_dict()`.
    """

    task_id: str
    days: tuple[tuple[date, int], ...] = ()
    floor: date | None = None

    @classmethod
    def start(cls, task_id: str) -> StreamPosition:
        """Nothing read yet: the whole retained log is ahead."""
        return cls(task_id=task_id)

    def offset(self, day: date) -> int | None:
        """The bytes of `day` already read, or None when the day has no mark."""
        for d, o in self.days:
            if d == day:
                return o
        return None

    def read_through(self, day: date) -> int | None:
        """The mark of `day`, a legacy floor counting as "all of it" (None: nothing read)."""
        offset = self.offset(day)
        if offset is None and self.floor is not None and day < self.floor:
            return -1  # the whole day, whatever its length
        return offset

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task_id": self.task_id,
                               "days": {d.isoformat(): o for d, o in self.days}}
        if self.floor is not None:
            out["floor"] = self.floor.isoformat()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StreamPosition:
        """Read `to_dict()`'s shape, or the earlier `{"task_id", "day", "offset"}` one.

        Raises:
            ValueError: a malformed position.
        """
        task_id = d.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("stream position has no task_id")
        if "days" in d:
            raw = d["days"]
            if not isinstance(raw, Mapping) or len(raw) > _MAX_DAYS:
                raise ValueError("stream position 'days' is not a map of days to byte offsets")
            days = sorted((_day(k), _offset(v)) for k, v in raw.items())
            floor = _day(d["floor"]) if d.get("floor") else None
            return cls(task_id=task_id, days=tuple(days), floor=floor)
        raw_day = d.get("day")
        offset = _offset(d.get("offset", 0))
        if not raw_day:
            return cls(task_id=task_id)
        day = _day(raw_day)
        return cls(task_id=task_id, days=((day, offset),), floor=day)

    def __str__(self) -> str:
        if not self.days:
            return f"{self.task_id}@start"
        marks = ",".join(f"{d.isoformat()}+{o}" for d, o in self.days)
        return f"{self.task_id}@{marks}"


def _day(raw: object) -> date:
    if not isinstance(raw, str):
        raise ValueError(f"stream position day {raw!r} is not YYYY-MM-DD")
    return date.fromisoformat(raw)


def _offset(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ValueError(f"stream position offset={raw!r} is not a byte offset >= 0")
    return raw


def _sig(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class DayLengths:
    """Day stream lengths, with each `.jsonl.gz`'s decompressed length inflated once per file
    version (inode, size, mtime) and remembered."""

    _gz: dict[Path, tuple[tuple[int, int, int], int]] = field(default_factory=dict)

    def gz_length(self, files: DayFiles) -> int:
        sig = _sig(files.gz)
        if sig is None:
            self._gz.pop(files.gz, None)
            return 0
        cached = self._gz.get(files.gz)
        if cached is not None and cached[0] == sig:
            return cached[1]
        total = 0
        try:
            with open(files.gz, "rb") as f:
                for chunk in gz_chunks(f, ReadCounters(), str(files.gz)):
                    total += len(chunk)
        except OSError:
            return 0
        self._gz[files.gz] = (sig, total)
        return total

    def length(self, files: DayFiles) -> int:
        """The day's stream length now (0 for a day with no files)."""
        plain = _sig(files.plain)
        return self.gz_length(files) + (plain[1] if plain else 0)

    def whole_lines_length(self, files: DayFiles) -> int:
        """The day's stream length up to its last newline: a line still being written at the
        end of the `.jsonl` is not counted (a position there would cut it)."""
        base = self.gz_length(files)
        try:
            with open(files.plain, "rb") as f:
                end = os.fstat(f.fileno()).st_size
                pos = end
                while pos > 0:
                    step = min(_TAIL_STEP, pos)
                    chunk = os.pread(f.fileno(), step, pos - step)
                    nl = chunk.rfind(b"\n")
                    if nl >= 0:
                        return base + pos - step + nl + 1
                    pos -= step
                return base
        except (FileNotFoundError, NotADirectoryError):
            return base


def iter_lines_from(
    task_dir: Path, position: StreamPosition, counters: ReadCounters, lengths: DayLengths
) -> Iterator[tuple[bytes, StreamPosition]]:
    """Each non-empty line of the task's log not yet read at `position`, with the position
    past it: day by day, each from its own mark, so a line written into any day (an earlier
    one after a clock step, a later one from a clock that ran ahead) is read exactly once.

    A day whose stream is no longer than its mark is not opened. A last line with no newline
    in a `.jsonl` may still be being written: that day stops before it until next time (a
    crash-torn one gets its newline from the next write to the day, or from compression).
    """
    days = list_days(task_dir)
    present = set(days)
    marks = {d: o for d, o in position.days if d in present}
    for day in days:
        files = DayFiles(task_dir, day)
        read = position.read_through(day)
        if read == -1:  # a legacy floor: everything there now counts as read
            marks[day] = lengths.length(files)
            continue
        offset = read or 0
        if offset and lengths.length(files) <= offset:
            continue
        try:
            opened = open_day(files)
        except StorageError as exc:
            counters.skipped_file(exc.message)  # its mark stays: sent once it can be read
            continue
        with opened as od:
            for line in iter_day_lines(od, counters, start_offset=offset):
                if not line.terminated and line.plain:
                    break
                if line.data or line.too_long:  # an over-long line goes on, to be counted
                    marks[day] = line.end
                    yield line.data, StreamPosition(task_id=position.task_id,
                                                    days=tuple(sorted(marks.items())))
