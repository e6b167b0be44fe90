"""Store-wide maintenance: the cleanup pass (compress, delete, tidy) and the stats scan."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

from flow.errors import StorageError
from flow.health.snapshot import parse_time
from flow.health.storage.compact import compress_day, delete_day, remove_stale_tmp
from flow.health.storage.layout import LOCK_NAME, DayFiles, day_end, list_days, task_dirs, to_utc
from flow.health.storage.lines import ReadCounters, decode_record, iter_day_lines, open_day
from flow.health.storage.locking import task_lock
from flow.health.storage.reader import dir_task_id
from flow.health.storage.results import CleanupResult, StoreStats

__all__ = ["Holders", "Protect", "run_cleanup", "scan_stats"]

log = logging.getLogger(__name__)

#: `protect(task_id, day)` returns True to keep a day file that retention would delete.
Protect = Callable[[str, date], bool]
#: `holders(task_id, files)`: the stream cursors that have not delivered all of that day, each
#: as (its name, the bytes of the day it has read: 0 for none).
Holders = Callable[[str, DayFiles], list[tuple[str, int]]]


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return -1


def run_cleanup(
    root: Path,
    *,
    now: datetime,
    retention_days: int,
    compress_after_days: int,
    protect: Protect | None = None,
    keep_since: datetime | None = None,
    dry_run: bool = False,
    only: Path | None = None,
    holders: Holders | None = None,
    drop_undelivered: bool = False,
) -> CleanupResult:
    """See `MetricsStore.cleanup`. `only`: just this task directory."""
    now = to_utc(now)
    compress_age = timedelta(days=compress_after_days)
    retention_age = timedelta(days=retention_days)
    compressed: list[Path] = []
    deleted: list[Path] = []
    kept: list[Path] = []
    errors: list[str] = []
    undelivered: list[str] = []
    dropped: list[Path] = []
    dropped_records = 0
    freed = 0
    for task_dir in [only] if only is not None else task_dirs(root):
        task_id: str | None = None
        for day in list_days(task_dir):
            files = DayFiles(task_dir, day)
            age = now - day_end(day)
            existing = [p for p in (files.gz, files.plain) if p.exists()]
            if age >= retention_age:
                if keep_since is not None and day_end(day) > to_utc(keep_since):
                    kept.extend(existing)
                    continue
                if protect is not None:
                    task_id = task_id or dir_task_id(task_dir)
                    if protect(task_id, day):
                        kept.extend(existing)
                        continue
                held = []
                if holders is not None:
                    task_id = task_id or dir_task_id(task_dir)
                    held = holders(task_id, files)
                if held:
                    names = ", ".join(sorted({name for name, _ in held}))
                    if not drop_undelivered:
                        kept.extend(existing)
                        undelivered.append(f"{task_id} {day}: not yet delivered to {names}")
                        continue
                    records = _count_records(files, min(read for _, read in held))
                    dropped.extend(existing)
                    dropped_records += records
                    log.warning("%s %s: %s %d undelivered record(s) (%d bytes on disk) that %s "
                                "has not acknowledged, as asked (drop_undelivered)", task_id, day,
                                "would drop" if dry_run else "dropping", records,
                                sum(max(0, _size(p)) for p in existing), names)
                if dry_run:
                    deleted.extend(existing)
                    freed += sum(max(0, _size(p)) for p in existing)
                    continue
                try:
                    for path, size in delete_day(files):
                        deleted.append(path)
                        freed += size
                except OSError as exc:
                    errors.append(f"{files.plain}: cannot delete: {exc.strerror or exc}")
            elif age >= compress_age and day < now.date() and files.plain in existing:
                if dry_run:
                    compressed.append(files.plain)
                    continue
                try:
                    sizes = compress_day(files)
                except OSError as exc:
                    errors.append(f"{files.plain}: cannot compress: {exc.strerror or exc}")
                    continue
                if sizes is not None:
                    compressed.append(files.plain)
                    freed += sizes[0] - sizes[1]
        if not dry_run:
            try:
                remove_stale_tmp(task_dir)
                _remove_if_empty(task_dir)
            except OSError as exc:
                errors.append(f"{task_dir}: {exc.strerror or exc}")
    return CleanupResult(now=now, compressed=tuple(compressed), deleted=tuple(deleted),
                         kept=tuple(kept), bytes_freed=freed, errors=tuple(errors),
                         dry_run=dry_run, undelivered=tuple(undelivered),
                         dropped_undelivered=tuple(dropped), dropped_records=dropped_records)


def _count_records(files: DayFiles, start: int) -> int:
    """The lines of a day's stream from byte `start` (what a cursor has not delivered)."""
    count = 0
    try:
        with open_day(files) as od:
            for line in iter_day_lines(od, ReadCounters(), start_offset=start):
                count += bool(line.data)
    except (OSError, StorageError):
        return count
    return count


def _remove_if_empty(task_dir: Path) -> None:
    """Remove a task directory left with no data (its task ended past retention)."""
    if list_days(task_dir):
        return
    with task_lock(task_dir, create=False) as locked:
        if not locked or list_days(task_dir):
            return
        # Unlink the lock while holding it: a writer waiting on it notices (task_lock checks
        # the path still names the file it locked) and starts over in a new directory.
        os.unlink(task_dir / LOCK_NAME)
        # Something else may be in there (a temp file, a foreign file): then leave it.
        with contextlib.suppress(OSError):
            os.rmdir(task_dir)


def scan_stats(root: Path, *, scan: bool = True) -> StoreStats:
    """See `MetricsStore.stats`."""
    tasks = files = plain = gz = total = 0
    snapshots = 0
    counters = ReadCounters()
    oldest: bytes | None = None
    newest: bytes | None = None
    for task_dir in task_dirs(root):
        days = list_days(task_dir)
        if days:
            tasks += 1
        for day in days:
            day_files = DayFiles(task_dir, day)
            for path, is_gz in ((day_files.gz, True), (day_files.plain, False)):
                size = _size(path)
                if size < 0:
                    continue
                files += 1
                total += size
                gz += is_gz
                plain += not is_gz
            if not scan:
                continue
            with open_day(day_files) as od:
                for line in iter_day_lines(od, counters):
                    if not line.data:
                        continue
                    rec = decode_record(line.data)
                    if rec is None:
                        counters.corrupt(f"{day_files.plain}: offset {line.start}")
                        continue
                    snapshots += 1
                    key = rec[1]
                    oldest = key if oldest is None or key < oldest else oldest
                    newest = key if newest is None or key > newest else newest
    return StoreStats(
        root=root, tasks=tasks, files=files, plain_files=plain, compressed_files=gz, bytes=total,
        snapshots=snapshots if scan else None,
        corrupt_lines=counters.corrupt_lines if scan else None,
        oldest=parse_time(oldest.decode()) if oldest else None,
        newest=parse_time(newest.decode()) if newest else None,
    )
