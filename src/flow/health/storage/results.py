"""Plain results of the store's maintenance calls: what cleanup did, what the store holds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flow.health.snapshot import format_time

__all__ = ["CleanupResult", "StoreStats"]


@dataclass(frozen=True, kw_only=True)
class CleanupResult:
    """What one `cleanup()` did (or, with `dry_run`, would do).

    `compressed` lists the `.jsonl` files that became `.jsonl.gz`; `deleted` the files removed
    for being past retention; `kept` the files past retention that `protect`/`keep_since`
    saved; `undelivered` says, per task and day kept, which stream cursors have not delivered
    it. `dropped_undelivered` lists the files deleted although undelivered (only when asked,
    `drop_undelivered=True`), holding `dropped_records` records. `bytes_freed` counts deleted
    bytes plus what compression saved (a dry run cannot know the latter, so it counts
    deletions only). `errors` name files that could not be
    handled; cleanup carries on with the rest.
    """

    now: datetime
    compressed: tuple[Path, ...] = ()
    deleted: tuple[Path, ...] = ()
    kept: tuple[Path, ...] = ()
    bytes_freed: int = 0
    errors: tuple[str, ...] = ()
    dry_run: bool = False
    undelivered: tuple[str, ...] = ()
    dropped_undelivered: tuple[Path, ...] = ()
    dropped_records: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.compressed or self.deleted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": format_time(self.now),
            "dry_run": self.dry_run,
            "compressed": [str(p) for p in self.compressed],
            "deleted": [str(p) for p in self.deleted],
            "kept": [str(p) for p in self.kept],
            "bytes_freed": self.bytes_freed,
            "errors": list(self.errors),
            "undelivered": list(self.undelivered),
            "dropped_undelivered": [str(p) for p in self.dropped_undelivered],
            "dropped_records": self.dropped_records,
        }


@dataclass(frozen=True, kw_only=True)
class StoreStats:
    """What the store holds. `snapshots`, `corrupt_lines`, `oldest` and `newest` come from a
    scan of every line; they are None when the scan was skipped (`scan=False`)."""

    root: Path
    tasks: int = 0
    files: int = 0
    plain_files: int = 0
    compressed_files: int = 0
    bytes: int = 0
    snapshots: int | None = None
    corrupt_lines: int | None = None
    oldest: datetime | None = None
    newest: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "tasks": self.tasks,
            "files": self.files,
            "plain_files": self.plain_files,
            "compressed_files": self.compressed_files,
            "bytes": self.bytes,
            "snapshots": self.snapshots,
            "corrupt_lines": self.corrupt_lines,
            "oldest": format_time(self.oldest) if self.oldest else None,
            "newest": format_time(self.newest) if self.newest else None,
        }
