"""Where the store keeps what: one directory per task, one file per UTC day.

```
<metrics_dir>/                       0700
  .last-cleanup                      stamp: when the writer last ran cleanup (its mtime)
  <task dir>/                        0700, the task id made safe as one path part
    .lock                            0600, flock: writers, the compressor, readers opening a day
    2026-11-27.jsonl.gz              a sealed day (gzip, possibly several members)
    2026-11-28.jsonl                 0600, today: one snapshot per line, append-only
```
A query for one task over a window opens only that task's directory and only the days the
window touches, whatever the number of other tasks and days.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

__all__ = [
    "CLEANUP_STAMP",
    "GZ_SUFFIX",
    "LOCK_NAME",
    "PLAIN_SUFFIX",
    "DayFiles",
    "day_end",
    "day_of",
    "day_start",
    "list_days",
    "task_dirname",
    "task_dirs",
    "task_id_from_dirname",
    "to_utc",
]

PLAIN_SUFFIX = ".jsonl"
GZ_SUFFIX = ".jsonl.gz"
LOCK_NAME = ".lock"
CLEANUP_STAMP = ".last-cleanup"

# Characters kept as they are in a task directory name; everything else becomes %XX (UTF-8),
# so the mapping is reversible and no name can be "", "." or ".." or contain "/".
_SAFE = frozenset(string.ascii_letters + string.digits + "_-.")
# Long ids would break NAME_MAX (255 bytes); past this they are cut and get a hash. "~" is
# always escaped by the encoder, so a hashed name never equals an encoded one.
_MAX_NAME = 120
_DAY_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def task_dirname(task_id: str) -> str:
    """The directory name for a task id: safe as one path part (no traversal, no hidden name).

    Raises:
        ValueError: the task id is empty.
    """
    if not task_id:
        raise ValueError("empty task id")
    out: list[str] = []
    for i, ch in enumerate(task_id):
        if ch in _SAFE and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    name = "".join(out)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(task_id.encode("utf-8")).hexdigest()[:16]
        name = f"{name[:_MAX_NAME - 17]}~{digest}"
    return name


def task_id_from_dirname(name: str) -> str | None:
    """The task id a directory name stands for; None for a hashed (long) or foreign name."""
    if "~" in name or name.startswith(".") or not name:
        return None
    raw = bytearray()
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "%":
            try:
                raw.append(int(name[i + 1 : i + 3], 16))
            except ValueError:
                return None
            i += 3
        elif ch in _SAFE:
            raw.extend(ch.encode("ascii"))
            i += 1
        else:
            return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def to_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already (as format_time does)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def day_of(moment: datetime) -> date:
    return to_utc(moment).date()


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def day_end(day: date) -> datetime:
    """The first moment after the day: the newest record a day file can hold is before this."""
    return day_start(day) + timedelta(days=1)


def _parse_day(stem: str) -> date | None:
    m = _DAY_RE.match(stem)
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


@dataclass(frozen=True)
class DayFiles:
    """The files of one task's day. Either or both may exist: `.jsonl.gz` holds what was
    compressed, `.jsonl` what was appended since (normally only today's file)."""

    task_dir: Path
    day: date

    @property
    def plain(self) -> Path:
        return self.task_dir / f"{self.day.isoformat()}{PLAIN_SUFFIX}"

    @property
    def gz(self) -> Path:
        return self.task_dir / f"{self.day.isoformat()}{GZ_SUFFIX}"

    def tmp(self, tag: str) -> Path:
        """A temp name for a compressed file being built; hidden, so never listed as a day."""
        return self.task_dir / f".{self.day.isoformat()}{GZ_SUFFIX}.tmp-{tag}"


def list_days(task_dir: Path) -> list[date]:
    """The days that have a file in a task directory, oldest first ([] when there is none)."""
    days: set[date] = set()
    try:
        names = os.listdir(task_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        if name.endswith(GZ_SUFFIX):
            stem = name[: -len(GZ_SUFFIX)]
        elif name.endswith(PLAIN_SUFFIX):
            stem = name[: -len(PLAIN_SUFFIX)]
        else:
            continue
        day = _parse_day(stem)
        if day is not None:
            days.add(day)
    return sorted(days)



def task_dirs(root: Path) -> list[Path]:
    """The task directories under the metrics directory, sorted ([] when there is none)."""
    try:
        with os.scandir(root) as it:
            return sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
