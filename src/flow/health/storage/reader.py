"""Window reads: the lines of one task's days inside [start, end), in time order.

Only the task's directory and the days the window touches are opened. A line whose timestamp
prefix (`lines.fast_timestamp`) falls outside the window is skipped without decoding; any other
line is decoded, and one that is not a snapshot object is skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from flow.health.storage.layout import DayFiles, day_of, list_days, task_id_from_dirname
from flow.health.storage.lines import (
    ReadCounters,
    decode_record,
    fast_timestamp,
    iter_day_lines,
    open_day,
    time_key,
)

__all__ = ["day_window", "dir_records", "dir_task_id"]


def day_window(
    files: DayFiles, counters: ReadCounters, start_key: bytes, end_key: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The day's (timestamp key, line) inside [start, end), time-ordered, still encoded:
    decoding them one at a time keeps memory to the raw bytes of one day's window."""
    batch: list[tuple[bytes, bytes]] = []
    ordered = True
    prev = b""
    with open_day(files) as od:
        for line in iter_day_lines(od, counters):
            data = line.data
            if not data:
                continue  # an empty line is the newline that closed a torn one
            key = fast_timestamp(data)
            if key is None:
                rec = decode_record(data)
                if rec is None:
                    where = files.plain if line.plain else files.gz
                    counters.corrupt(f"{where}: offset {line.start}")
                    continue
                key = rec[1]
            if key < start_key or (end_key is not None and key >= end_key):
                continue
            if key < prev:
                ordered = False
            else:
                prev = key
            batch.append((key, data))
    if not ordered:  # late or clock-skewed writes; the sort is stable, ties keep file order
        batch.sort(key=itemgetter(0))
    return batch


def dir_records(
    task_dir: Path,
    task_id: str | None,
    start: datetime,
    end: datetime | None,
    counters: ReadCounters,
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(timestamp key, decoded object) of a task directory's snapshots in [start, end).

    With `task_id`, objects of another id (sharing the directory on a case-folding filesystem)
    are left out.
    """
    start_key = time_key(start)
    end_key = time_key(end) if end is not None else None
    first = day_of(start)
    last = day_of(end - timedelta(microseconds=1)) if end is not None else None
    for day in list_days(task_dir):
        if day < first or (last is not None and day > last):
            continue
        files = DayFiles(task_dir, day)
        for key, data in day_window(files, counters, start_key, end_key):
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = None
            if not isinstance(obj, dict):
                counters.corrupt(f"{files.plain}: a line in the window is not JSON")
                continue
            if task_id is not None and obj.get("task_id") != task_id:
                continue
            yield key, obj


def dir_task_id(task_dir: Path) -> str:
    """The task id of a directory: from its name, or for a long (hashed) name from its data."""
    task_id = task_id_from_dirname(task_dir.name)
    if task_id is not None:
        return task_id
    for day in reversed(list_days(task_dir)):
        with open_day(DayFiles(task_dir, day)) as od:
            for line in iter_day_lines(od, ReadCounters()):
                rec = decode_record(line.data) if line.data else None
                if rec is not None and isinstance(rec[0].get("task_id"), str):
                    return str(rec[0]["task_id"])
    return task_dir.name
