"""Window reads: the lines of one task's days inside [start, end), in time order.

Only the task's directory and the days the window touches are opened. A line whose timestamp
prefix (`lines.fast_timestamp`) falls outside the window is skipped without decoding; any other
line is decoded, and one that is not a snapshot object is skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from flow.errors import StorageError
from flow.health.storage.layout import DayFiles, day_of, list_days, task_id_from_dirname
from flow.health.storage.lines import (
    MAX_LINE_BYTES,
    TS_END,
    TS_PREFIX,
    OpenDay,
    ReadCounters,
    decode_record,
    gz_chunks,
    iter_day_lines,
    open_day,
    plain_chunks,
    time_key,
    well_formed_time_key,
)

__all__ = ["day_window", "dir_records", "dir_task_id"]


def _scan(
    buf: bytes, hi: int, counters: ReadCounters, where: str, start_key: bytes, end_key: bytes | None
) -> Iterator[tuple[bytes, bytes]]:
    """(key, line) of the lines in `buf[:hi]` (whole lines) inside the window.

    A line with the timestamp prefix is judged by it and, when outside the window, skipped
    without being copied: a 1 h query over today's file touches only the last hour's lines.
    """
    prefix_len = len(TS_PREFIX)
    pos = 0
    while pos < hi:
        nl = buf.find(b"\n", pos, hi)
        if nl < 0:
            nl = hi
        if nl - pos > MAX_LINE_BYTES:
            counters.corrupt(f"{where}: a line over {MAX_LINE_BYTES} bytes")
        elif (nl - pos > TS_END and buf.startswith(TS_PREFIX, pos)
                and buf[pos + TS_END - 1 : pos + TS_END + 1] == b'Z"'
                and well_formed_time_key(key := buf[pos + prefix_len : pos + TS_END])):
            if key >= start_key and (end_key is None or key < end_key):
                yield key, buf[pos:nl]
        elif nl > pos:  # an empty line is the newline that closed a torn one: nothing to count
            data = buf[pos:nl]
            rec = decode_record(data)
            if rec is None:
                counters.corrupt(f"{where}: a line that is not a snapshot")
            elif rec[1] >= start_key and (end_key is None or rec[1] < end_key):
                yield rec[1], data
        pos = nl + 1


def _window_lines(
    day: OpenDay, counters: ReadCounters, start_key: bytes, end_key: bytes | None
) -> Iterator[tuple[bytes, bytes]]:
    parts: list[tuple[Iterator[bytes], str]] = []
    if day.gz is not None:
        parts.append((gz_chunks(day.gz, counters, str(day.files.gz)), str(day.files.gz)))
    if day.plain is not None:
        parts.append((plain_chunks(day.plain, 0), str(day.files.plain)))
    for chunks, where in parts:
        rest = b""
        skipping = False  # inside a line over MAX_LINE_BYTES: dropped as it comes, then counted
        for chunk in chunks:
            if skipping:
                nl = chunk.find(b"\n")
                if nl < 0:
                    continue
                counters.corrupt(f"{where}: a line over {MAX_LINE_BYTES} bytes")
                chunk = chunk[nl + 1 :]
                skipping = False
            buf = rest + chunk if rest else chunk
            cut = buf.rfind(b"\n") + 1
            yield from _scan(buf, cut, counters, where, start_key, end_key)
            rest = buf[cut:]
            if len(rest) > MAX_LINE_BYTES:
                rest, skipping = b"", True
        if skipping:
            counters.corrupt(f"{where}: a line over {MAX_LINE_BYTES} bytes")
        elif rest:  # a last line with no newline: whole if it decodes, else torn (and counted)
            yield from _scan(rest, len(rest), counters, where, start_key, end_key)


def day_window(
    files: DayFiles, counters: ReadCounters, start_key: bytes, end_key: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The day's (timestamp key, line) inside [start, end), time-ordered, still encoded:
    decoding them one at a time keeps memory to the raw bytes of one day's window."""
    with open_day(files) as od:
        batch = list(_window_lines(od, counters, start_key, end_key))
    keys = [key for key, _ in batch]
    if any(a > b for a, b in pairwise(keys)):
        # Late or clock-skewed writes; the sort is stable, so ties keep file order.
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
        try:
            window = day_window(files, counters, start_key, end_key)
        except StorageError as exc:
            counters.skipped_file(exc.message)  # one unreadable day never hides the others
            continue
        for key, data in window:
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
