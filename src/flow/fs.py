"""Files on the operator's and the node's disks: private directories for what the product writes
(metrics, cursors, keys, inventories), whatever the umask, and bounded reads of regular files
for what it reads (settings, inventories, secrets, cursors), which never block on a FIFO.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["DIR_MODE", "RefusedFile", "ensure_private_dir", "file_kind", "read_regular"]

DIR_MODE = 0o700


def ensure_private_dir(path: Path) -> None:
    """Create `path` and every missing parent with mode exactly 0700; existing directories
    are left as they are (a `FLOW_METRICS_DIR` the user made keeps its mode).

    `Path.mkdir(parents=True, mode=0o700)` gives the *parents* the umask's mode (0755 under
    umask 022): `~/.flow` would then be world-readable. This creates each level itself.

    Raises:
        OSError: it cannot be created, or it exists and is not a directory.
    """
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(f"{path} exists and is not a directory") from None
        return
    except FileNotFoundError:
        ensure_private_dir(path.parent)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            return
    # mkdir's mode is filtered by the umask (a umask of 077 is fine, one of 0277 is not).
    os.chmod(path, DIR_MODE)


class RefusedFile(Exception):
    """A file `read_regular` would not read. `reason` is one of "not_regular" (`detail`: what
    it is instead, "a FIFO"), "not_private" (`detail`: its mode, "0644") or "too_large"
    (`detail`: the limit in bytes). Callers turn it into a message naming their setting."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, for a message ("a directory", "a FIFO")."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"


def read_regular(path: Path, max_bytes: int, *, private: bool = False) -> bytes | None:
    """The bytes of the regular file `path` (at most `max_bytes`), or None when it does not exist.

    Opened with O_NONBLOCK and checked with fstat before anything is read, so a FIFO (which
    would wait for a writer forever), a device (which may stream forever) or a directory is
    refused at once. With `private`, a file readable or writable by group or others is refused.

    Raises:
        RefusedFile: not a regular file, not private, or larger than `max_bytes`.
        OSError: it cannot be opened or read (permissions, I/O error).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedFile("not_regular", file_kind(info.st_mode))
        if private and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise RefusedFile("not_private", f"{stat.S_IMODE(info.st_mode):04o}")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:
        raise RefusedFile("too_large", str(max_bytes))
    return b"".join(chunks)
