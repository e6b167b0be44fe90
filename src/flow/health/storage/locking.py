"""Private directories and the per-task lock.

One `flock` per task directory (`.lock`) orders the three things that must not overlap:
writers appending (exclusive, one batch at a time), the compressor swapping a day's files
(exclusive, only for the swap) and a reader opening a day's files (shared, only while it opens
them: once open, a `.jsonl.gz` never changes and a `.jsonl` only grows, so reading needs no lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from flow.fs import DIR_MODE, ensure_private_dir
from flow.health.storage.layout import LOCK_NAME

__all__ = ["DIR_MODE", "FILE_MODE", "ensure_private_dir", "task_lock"]

FILE_MODE = 0o600


@contextlib.contextmanager
def task_lock(task_dir: Path, *, shared: bool = False, create: bool = True) -> Iterator[bool]:
    """Hold the task's lock; yields True, or False when `create` is off and there is no lock.

    A lock file can be unlinked while someone waits on it (cleanup removes an emptied task
    directory under the lock), so after acquiring it we check the path still names the same
    file and start over if not; otherwise two holders could hold two different locks.
    """
    path = task_dir / LOCK_NAME
    while True:
        try:
            if create:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            else:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                yield False
                return
            ensure_private_dir(task_dir)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            held = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        try:
            now: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_ino, now.st_dev) != (held.st_ino, held.st_dev):
            os.close(fd)
            if not create:
                yield False
                return
            continue
        try:
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the flock
        return
