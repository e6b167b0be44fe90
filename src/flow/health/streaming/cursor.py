"""The durable stream cursor: how far into the local store the endpoint has acknowledged.

One small JSON file per destination, rewritten atomically (temp file, fsync, rename) with
mode 0600 after every acknowledged batch:

```
{"version": 1, "destination": "https://metrics.example.com/ingest", "position": {...},
 "delivered": 1234, "last_id": "<record id>", "last_timestamp": "2025-01-01T00:00:00.000Z",
 "updated": "2025-01-01T00:00:05.123Z"}
```
`position` is the store's own resume token (opaque here). A crash between the endpoint's 2xx
and the rename resends that one batch: at-least-once, duplicates limited to one batch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from flow.errors import StorageError
from flow.fs import ensure_private_dir
from flow.health.snapshot import format_time, utcnow

__all__ = ["CURSOR_VERSION", "CursorFile", "CursorState"]


CURSOR_VERSION = 1


@dataclass(kw_only=True)
class CursorState:
    destination: str
    position: Any = None
    delivered: int = 0
    last_id: str | None = None
    last_timestamp: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CURSOR_VERSION,
            "destination": self.destination,
            "position": self.position,
            "delivered": self.delivered,
            "last_id": self.last_id,
            "last_timestamp": self.last_timestamp,
            "updated": format_time(utcnow()),
            **self.extra,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CursorState:
        delivered = d.get("delivered")
        return cls(
            destination=str(d.get("destination") or ""),
            position=d.get("position"),
            delivered=delivered if isinstance(delivered, int) and not isinstance(delivered, bool) else 0,
            last_id=d.get("last_id") if isinstance(d.get("last_id"), str) else None,
            last_timestamp=d.get("last_timestamp") if isinstance(d.get("last_timestamp"), str) else None,
        )


class CursorFile:
    """Loads and saves one `CursorState` at `path` (created 0600, directory 0700)."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self._fsync = fsync
        #: Set by `load()` when the file existed but could not be read as a cursor.
        self.was_corrupt = False

    def load(self) -> CursorState | None:
        """The saved state, or None when there is none or it is corrupt (`was_corrupt` tells)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot read the stream cursor: {exc.strerror}",
                               path=self.path) from None
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, Mapping) or obj.get("version") != CURSOR_VERSION:
            self.was_corrupt = True
            return None
        return CursorState.from_dict(obj)

    def save(self, state: CursorState) -> None:
        """Write atomically: a reader (or a restart after kill -9) sees the old or the new state.

        Raises:
            StorageError: the directory or file cannot be written.
        """
        data = orjson.dumps(state.to_dict())
        directory = self.path.parent
        try:
            ensure_private_dir(directory)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)  # mode 0600
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    if self._fsync:
                        handle.flush()
                        os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot write the stream cursor: {exc.strerror}",
                               path=self.path) from None
