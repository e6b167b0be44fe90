"""Compressing and deleting one task's day files, safely next to live readers and writers.

Compression is a copy, never an edit: the `.jsonl` is gzipped into a hidden temp file without
holding any lock, then under the task's exclusive lock the bytes appended meanwhile (a late
writer) are added as one more gzip member, the temp file is renamed over `.jsonl.gz` and the
`.jsonl` unlinked. A reader either opened the old pair or opens the new one; a writer waiting on
the lock appends to a fresh `.jsonl`, which a later cleanup folds in as another member.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import zlib
from pathlib import Path

from flow.health.storage.layout import DayFiles
from flow.health.storage.locking import FILE_MODE, task_lock

__all__ = ["COMPRESS_LEVEL", "STALE_TMP_S", "compress_day", "delete_day", "remove_stale_tmp"]

COMPRESS_LEVEL = 6
STALE_TMP_S = 3600.0
_COPY_BYTES = 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _MemberWriter:
    """Writes gzip members to a file and remembers the last byte it compressed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.last = b""

    def member(self, chunks: list[bytes] | None = None, *, source: int | None = None,
               start: int = 0, end: int = 0) -> None:
        comp = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 31)
        if chunks is not None:
            for chunk in chunks:
                self._write(comp.compress(chunk))
                if chunk:
                    self.last = chunk[-1:]
        elif source is not None:
            pos = start
            while pos < end:
                chunk = os.pread(source, min(_COPY_BYTES, end - pos), pos)
                if not chunk:
                    break
                pos += len(chunk)
                self._write(comp.compress(chunk))
                self.last = chunk[-1:]
        self._write(comp.flush())

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]


def compress_day(files: DayFiles) -> tuple[int, int] | None:
    """Fold the day's `.jsonl` into its `.jsonl.gz`; returns (bytes before, bytes after), or
    None when there was nothing to do (no `.jsonl`, or another process compressed it first).

    Raises:
        OSError: reading or writing failed; the day's files are left as they were.
    """
    try:
        src = os.open(files.plain, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    tmp = files.tmp(f"{os.getpid()}-{time.monotonic_ns()}")
    out = -1
    try:
        info = os.fstat(src)
        size = info.st_size
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        writer = _MemberWriter(out)
        if size:
            writer.member(source=src, start=0, end=size)
        with task_lock(files.task_dir):
            try:
                now = os.stat(files.plain)
            except FileNotFoundError:
                return None  # another cleanup got there first
            if (now.st_ino, now.st_dev) != (info.st_ino, info.st_dev):
                return None
            if now.st_size > size:  # appended while we compressed
                writer.member(source=src, start=size, end=now.st_size)
            if writer.last not in (b"", b"\n"):
                # The compressed part must end a line, so that lines appended to a later
                # `.jsonl` for this day never glue onto a torn last line.
                writer.member([b"\n"])
            before = now.st_size
            if os.path.exists(files.gz):
                before += os.path.getsize(files.gz)
                out = _prepend_old(files, tmp, out)
            os.fsync(out)
            after = os.fstat(out).st_size
            os.close(out)
            out = -1
            os.replace(tmp, files.gz)
            os.unlink(files.plain)
            _fsync_dir(files.task_dir)
        return before, after
    finally:
        os.close(src)
        if out != -1:
            os.close(out)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _prepend_old(files: DayFiles, tmp: Path, out: int) -> int:
    """Late writes to an already compressed day: the new file is the old members, then ours
    (gzip readers read concatenated members as one stream)."""
    merged = files.tmp(f"{os.getpid()}-{time.monotonic_ns()}-m")
    fd = os.open(merged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        with open(files.gz, "rb") as old, open(tmp, "rb") as new, os.fdopen(os.dup(fd), "wb") as dst:
            shutil.copyfileobj(old, dst, _COPY_BYTES)
            shutil.copyfileobj(new, dst, _COPY_BYTES)
        os.replace(merged, tmp)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(merged)
        raise
    os.close(out)
    return fd


def delete_day(files: DayFiles) -> list[tuple[Path, int]]:
    """Delete the day's files (under the lock, so a reader sees both or neither).

    Returns the (path, size) of each file deleted.
    """
    done: list[tuple[Path, int]] = []
    with task_lock(files.task_dir):
        for path in (files.gz, files.plain):
            try:
                size = os.path.getsize(path)
                os.unlink(path)
            except FileNotFoundError:
                continue
            done.append((path, size))
    return done


def remove_stale_tmp(task_dir: Path, *, older_than_s: float = STALE_TMP_S) -> int:
    """Remove temp files left by a compressor that died; returns how many."""
    removed = 0
    limit = time.time() - older_than_s
    try:
        names = os.listdir(task_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(".") and ".tmp-" in name:
            path = task_dir / name
            with contextlib.suppress(FileNotFoundError):
                if os.path.getmtime(path) < limit:
                    os.unlink(path)
                    removed += 1
    return removed
