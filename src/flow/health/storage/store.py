"""MetricsStore: snapshots as JSONL, one file per task per UTC day, under the metrics directory.

Writes are crash-safe appends: each batch for one task's day is whole lines written with one
`os.write` on an `O_APPEND` descriptor under the task's lock, after a newline if a crash left
the file ending mid-line. Reads open only the files of the asked task and days, skip lines
outside the window by their timestamp prefix before decoding, and skip (and count) lines that
are not snapshots. The directory layout is in `layout.py`; docs/storage.md has the whole story.
"""

from __future__ import annotations

import heapq
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

from flow.config import Config, load_config
from flow.errors import ConfigError, StorageError
from flow.health.snapshot import Snapshot, utcnow
from flow.health.storage.cursors import stored_cursors
from flow.health.storage.layout import (
    CLEANUP_STAMP,
    DayFiles,
    day_of,
    list_days,
    task_dirname,
    task_dirs,
    to_utc,
)
from flow.health.storage.lines import MAX_LINE_BYTES, ReadCounters, decode_record, fast_timestamp
from flow.health.storage.locking import FILE_MODE, ensure_private_dir, task_lock
from flow.health.storage.maintenance import Protect, run_cleanup, scan_stats
from flow.health.storage.reader import dir_records, dir_task_id
from flow.health.storage.results import CleanupResult, StoreStats
from flow.health.storage.stream import DayLengths, StreamPosition, iter_lines_from

__all__ = ["AUTO_CLEANUP_INTERVAL", "DEFAULT_WINDOW", "MetricsStore", "encode_snapshot"]

log = logging.getLogger(__name__)

DEFAULT_WINDOW = timedelta(hours=24)
AUTO_CLEANUP_INTERVAL = timedelta(hours=1)
# One os.write per batch up to this size; bigger batches go in several writes of whole lines
# (still under the lock, so no other writer can come between them).
_MAX_WRITE_BYTES = 8 * 1024 * 1024


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """One JSONL line (with its newline). Pure. orjson never emits a raw newline."""
    return snapshot.to_json() + b"\n"


def _check_days(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is not allowed; allowed: an integer >= {minimum}")
    return value


class MetricsStore:
    """Local snapshot history. Safe to share between processes (the collector and a CLI).

    `path`, `retention_days` and `compress_after_days` default to the configuration
    (`FLOW_METRICS_DIR` or `$FLOW_HOME/metrics`, `health.retention_days`,
    `health.compress_after_days`). A day file is compressed once its day ended
    `compress_after_days` ago and deleted once it ended `retention_days` ago; today's file is
    never compressed. Writes run `cleanup()` by themselves at most once an hour
    (`auto_cleanup=False` turns that off). `clock` is injectable for tests. `durable=True`
    fsyncs each append (survives power loss, costs a disk flush per batch).

    Raises:
        ConfigError: a bad setting or argument.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        retention_days: int | None = None,
        compress_after_days: int | None = None,
        *,
        config: Config | None = None,
        clock: Callable[[], datetime] = utcnow,
        auto_cleanup: bool = True,
        durable: bool = False,
    ) -> None:
        if path is None or retention_days is None or compress_after_days is None:
            config = config or load_config()
            path = path if path is not None else config.metrics_dir
            if retention_days is None:
                retention_days = config.health.retention_days
            if compress_after_days is None:
                compress_after_days = config.health.compress_after_days
        self.root = Path(path).expanduser()
        self.retention_days = _check_days("retention_days", retention_days, 1)
        self.compress_after_days = _check_days("compress_after_days", compress_after_days, 0)
        self.auto_cleanup = auto_cleanup
        self.durable = durable
        self._clock = clock
        self._counters = ReadCounters()
        self._lengths = DayLengths()
        self._root_ready = False
        self._next_auto_cleanup: datetime | None = None
        self.last_auto_cleanup: CleanupResult | None = None

    def __repr__(self) -> str:
        return (f"MetricsStore({str(self.root)!r}, retention_days={self.retention_days}, "
                f"compress_after_days={self.compress_after_days})")

    def now(self) -> datetime:
        return to_utc(self._clock())

    @property
    def corrupt_lines_skipped(self) -> int:
        """Lines this store's reads skipped because they were not snapshots (torn or damaged)."""
        return self._counters.corrupt_lines

    @property
    def unreadable_files(self) -> list[str]:
        """Why day files were skipped by reads (each could not be opened), for a note."""
        return list(self._counters.unreadable)

    @property
    def corrupt_examples(self) -> list[str]:
        """Where the first few skipped lines were (file and offset), for a diagnostic."""
        return list(self._counters.examples)

    # -- layout ------------------------------------------------------------------------------

    def task_dir(self, task_id: str) -> Path:
        """The directory of a task (whether or not it exists). Raises ValueError on ''."""
        return self.root / task_dirname(task_id)

    def task_ids(self) -> list[str]:
        """The tasks that have at least one day file, sorted."""
        return sorted(dir_task_id(d) for d in task_dirs(self.root) if list_days(d))

    def days(self, task_id: str) -> list[date]:
        """The UTC days for which a task has data, oldest first."""
        return list_days(self.task_dir(task_id))

    # -- writing -----------------------------------------------------------------------------

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Append one snapshot. Raises StorageError when it cannot be written."""
        self.write_snapshots((snapshot,))

    def write_snapshots(self, snapshots: Iterable[Snapshot]) -> int:
        """Append snapshots (each to its task's file for the UTC day of its timestamp).

        All are validated before anything is written; returns how many were written.

        Raises:
            StorageError: a snapshot has no task id, or the store cannot be written.
        """
        groups: dict[tuple[str, date], list[bytes]] = {}
        count = 0
        for snapshot in snapshots:
            if not snapshot.task_id:
                raise StorageError(f"snapshot at {snapshot.timestamp} has no task_id; not written",
                                   path=self.root)
            groups.setdefault((snapshot.task_id, day_of(snapshot.timestamp)), []).append(
                encode_snapshot(snapshot))
            count += 1
        for (task_id, day), lines in groups.items():
            self._append(task_id, day, lines)
        if count:
            self._maybe_auto_cleanup()
        return count

    def write_lines(self, task_id: str, day: date, lines: Iterable[bytes]) -> int:
        """Append already encoded snapshot lines (`Snapshot.to_json()`, with or without the
        newline) to one task's day: the bulk path for imports and benchmarks.

        Each line must start with the schema/timestamp prefix of that day (this keeps the
        layout's promise that a day file holds only that day).

        Raises:
            ValueError: a line is not a one-line snapshot of that day.
            StorageError: the store cannot be written.
        """
        if not task_id:
            raise ValueError("empty task id")
        want = day.isoformat().encode("ascii")
        out: list[bytes] = []
        for line in lines:
            body = line[:-1] if line.endswith(b"\n") else line
            ts = fast_timestamp(body)
            if ts is None or ts[:10] != want or b"\n" in body:
                raise ValueError(f"not a one-line snapshot of {day}: {body[:80]!r}")
            out.append(body + b"\n")
        if out:
            self._append(task_id, day, out)
            self._maybe_auto_cleanup()
        return len(out)

    def _append(self, task_id: str, day: date, lines: list[bytes]) -> None:
        task_dir = self.task_dir(task_id)
        path = DayFiles(task_dir, day).plain
        try:
            if not self._root_ready:
                ensure_private_dir(self.root)
                self._root_ready = True
            with task_lock(task_dir):
                # O_NOFOLLOW: a day file swapped for a symlink (by anyone who can write the
                # task directory) must not redirect our appends to another file.
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                             FILE_MODE)
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    raise StorageError(f"{path}: not a regular file; metrics not written", path=path)
                try:
                    self._append_fd(fd, lines)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise StorageError(f"{path}: cannot write metrics: {exc.strerror or exc}",
                               path=path) from exc

    def _append_fd(self, fd: int, lines: list[bytes]) -> None:
        info = os.fstat(fd)
        if info.st_mode & 0o777 != FILE_MODE and info.st_uid == os.geteuid():
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits we want, or added none
        head = b""
        if info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
            head = b"\n"  # a crash tore the last line: never glue a new line onto it
        batch: list[bytes] = [head] if head else []
        size = len(head)
        for line in lines:
            if batch and size + len(line) > _MAX_WRITE_BYTES:
                _write_all(fd, b"".join(batch))
                batch, size = [], 0
            batch.append(line)
            size += len(line)
        if batch:
            _write_all(fd, b"".join(batch))
        if self.durable:
            os.fsync(fd)

    def _maybe_auto_cleanup(self) -> None:
        """Run cleanup at most once an hour across all processes sharing the store: the stamp
        file's mtime says when it last ran, so a short-lived CLI does not rescan every time."""
        if not self.auto_cleanup:
            return
        now = self.now()
        if self._next_auto_cleanup is not None and now < self._next_auto_cleanup:
            return
        stamp = self.root / CLEANUP_STAMP
        try:
            last = os.stat(stamp).st_mtime
        except FileNotFoundError:
            last = None
        except OSError:
            return
        interval = AUTO_CLEANUP_INTERVAL.total_seconds()
        if last is not None and abs(now.timestamp() - last) < interval:
            self._next_auto_cleanup = now + timedelta(seconds=interval - abs(now.timestamp() - last))
            return
        self._next_auto_cleanup = now + AUTO_CLEANUP_INTERVAL
        try:
            fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            os.close(fd)
            os.utime(stamp, (now.timestamp(), now.timestamp()))
            self.last_auto_cleanup = self.cleanup(now)
        except (OSError, StorageError) as exc:
            # Housekeeping must never cost the write that triggered it.
            log.warning("metrics cleanup failed: %s", exc)

    # -- reading -----------------------------------------------------------------------------

    def _window(self, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime | None]:
        if start is None:
            start = (to_utc(end) if end is not None else self.now()) - DEFAULT_WINDOW
        return to_utc(start), to_utc(end) if end is not None else None

    def read_records(
        self, task_id: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        """Like `read_snapshots`, but yields the decoded JSON objects (`Snapshot.to_dict()`
        shape) without building Snapshot objects: the fast path for aggregations."""
        start, end = self._window(start, end)
        if task_id is not None:
            if not task_id:
                return iter(())
            records = dir_records(self.task_dir(task_id), task_id, start, end, self._counters)
            return (obj for _, obj in records)
        streams = [dir_records(d, None, start, end, self._counters) for d in task_dirs(self.root)]
        return (obj for _, obj in heapq.merge(*streams, key=itemgetter(0)))

    def read_snapshots(
        self, task_id: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[Snapshot]:
        """Snapshots with `start <= timestamp < end`, in time order (one task, or all tasks
        merged). Default window: the last 24 hours (from `end` when only `end` is given).

        Only the task's files for the days the window touches are opened. Lines that are not
        snapshots are skipped and counted (`corrupt_lines_skipped`); this never raises on bad
        data. Without a task, each task's current day window is held in memory as raw lines.
        A day file that cannot be opened (permissions, not a file) is skipped and named in
        `unreadable_files`; the other days are still read.
        """
        for obj in self.read_records(task_id, start, end):
            snapshot = self._snapshot(obj)
            if snapshot is not None:
                yield snapshot

    def _snapshot(self, obj: dict[str, Any]) -> Snapshot | None:
        try:
            return Snapshot.from_dict(obj)
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError):
            self._counters.corrupt(f"task {obj.get('task_id')!r}: not a snapshot")
            return None

    # -- streaming ---------------------------------------------------------------------------

    def _lines_from(self, position: StreamPosition) -> Iterator[tuple[bytes, StreamPosition]]:
        try:
            task_dir = self.task_dir(position.task_id)
        except ValueError:
            return iter(())
        return iter_lines_from(task_dir, position, self._counters, self._lengths)

    def iter_raw_from(
        self, position: StreamPosition, *, with_skipped: bool = False
    ) -> Iterator[tuple[bytes, StreamPosition]]:
        """Each stored line not yet read at `position` that is a JSON object with a timestamp,
        as raw bytes, with the position just past it. See `iter_from`.

        With `with_skipped`, a line that is not a snapshot is yielded as `b""` with the position
        past it (so that a reader's position can move past damage it has counted).
        """
        for data, pos in self._lines_from(position):
            if not _looks_whole(data) and decode_record(data) is None:
                self._counters.corrupt(f"{pos.task_id}: a line that is not a snapshot"
                                       if data else f"{pos.task_id}: a line over {MAX_LINE_BYTES} bytes")
                if with_skipped:
                    yield b"", pos
                continue
            yield data, pos

    def iter_from(self, position: StreamPosition) -> Iterator[tuple[Snapshot, StreamPosition]]:
        """Resume reading one task's log where `position` stands (`StreamPosition.start(id)`
        for the beginning): each snapshot with the position just past it.

        Day by day, each day in file order from its own mark, so lines written into an earlier
        day after a later one (a clock stepped back, or one that ran ahead) are still read, once.
        Positions survive compression; a line still being written (no newline yet) is left for
        next time; lines that are not snapshots are skipped and counted. Save the position of
        the last snapshot delivered and pass it to the next call.
        """
        for data, pos in self._lines_from(position):
            rec = decode_record(data)
            snapshot = self._snapshot(rec[0]) if rec is not None else None
            if snapshot is None:
                if rec is None:
                    self._counters.corrupt(f"{pos.task_id}: a line that is not a snapshot")
                continue
            yield snapshot, pos

    def end_position(self, task_id: str) -> StreamPosition:
        """The position after every whole line stored for the task now (a new reader that
        should see only what is written from now on starts here)."""
        try:
            task_dir = self.task_dir(task_id)
        except ValueError:
            return StreamPosition.start(task_id)
        marks = tuple((day, self._lengths.whole_lines_length(DayFiles(task_dir, day)))
                      for day in list_days(task_dir))
        return StreamPosition(task_id=task_id, days=marks)

    def undelivered_bytes(self, position: StreamPosition, day: date) -> int:
        """Bytes of the task's `day` (whole lines) that `position` has not read yet."""
        read = position.read_through(day)
        if read == -1:
            return 0
        length = self._lengths.whole_lines_length(DayFiles(self.task_dir(position.task_id), day))
        return max(0, length - (read or 0))

    # -- maintenance -------------------------------------------------------------------------

    def cleanup(
        self,
        now: datetime | None = None,
        *,
        task_id: str | None = None,
        protect: Protect | None = None,
        keep_since: datetime | None = None,
        dry_run: bool = False,
        drop_undelivered: bool = False,
    ) -> CleanupResult:
        """Compress day files whose day ended `compress_after_days` ago (never today's) and
        delete those whose day ended `retention_days` ago.

        Every stream cursor on the store (`<root>/.collector/stream-cursor*.json`, see
        `cursors.py`) is honoured: a file a destination has not acknowledged in full is kept
        and named in `undelivered`; a cursor that cannot be read keeps every file. Only
        `drop_undelivered=True` deletes such files anyway, logging each with its record count
        (`dropped_undelivered`, `dropped_records`). `protect(task_id, day)` returning True, or
        a day ending after `keep_since`, also keeps a file. A file that cannot be handled is
        reported in `errors`; the rest still run. `task_id` limits the pass to one task.
        """
        cursors = stored_cursors(self.root)
        for bad in (c for c in cursors if c.position is None):
            log.warning("stream cursor %s cannot be read (%s): retention keeps every file it "
                        "would delete until it can", bad.path, bad.error)

        def holders(task: str, files: DayFiles) -> list[tuple[str, int]]:
            held: list[tuple[str, int]] = []
            for cursor in cursors:
                position = cursor.position
                if position is None:
                    held.append((f"{cursor.path} (unreadable)", 0))
                elif position.task_id == task and self.undelivered_bytes(position, files.day):
                    held.append((cursor.name, max(0, position.read_through(files.day) or 0)))
            return held

        return run_cleanup(
            self.root, now=now if now is not None else self.now(),
            retention_days=self.retention_days, compress_after_days=self.compress_after_days,
            protect=protect, keep_since=keep_since, dry_run=dry_run,
            only=self.task_dir(task_id) if task_id is not None else None,
            holders=holders if cursors else None, drop_undelivered=drop_undelivered,
        )

    def stats(self, *, scan: bool = True) -> StoreStats:
        """Files, bytes and (with `scan`, reading every line) snapshots, corrupt lines and the
        oldest and newest snapshot time."""
        return scan_stats(self.root, scan=scan)


def _looks_whole(data: bytes) -> bool:
    """A line as `encode_snapshot` writes it, checked without decoding: a backlog replay is
    CPU-bound and a full decode was a third of its cost.

    `Snapshot.to_dict()` puts `verdict` last, so a whole line ends with its reasons array
    closing (`]}}`) or with `,"verdict":null}`; neither sequence occurs earlier in a line (the
    other objects are flat). A torn line (a crash mid-append, then the next writer's newline)
    ends anywhere else, and anything that does not look whole goes to the full decode.
    """
    return data.startswith(b'{"schema":') and (data.endswith(b"]}}") or data.endswith(b',"verdict":null}'))


def _write_all(fd: int, data: bytes) -> None:
    # O_APPEND puts each write at the end; a short write (a signal, a full disk) is finished
    # by the next one, and the task's lock keeps every other writer out in between.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
