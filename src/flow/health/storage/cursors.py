"""The stream cursors kept on a store, as every deleter must see them.

A collector delivering the store to a destination saves how far the destination acknowledged in
`<metrics_dir>/.collector/stream-cursor*.json` (one file per destination, written by
`flow.health.streaming.cursor`). Whoever deletes day files (the collector's retention,
`flow health cleanup`, `MetricsStore.cleanup`) reads them here and keeps what they have not
delivered. A cursor that cannot be read holds back every file: nothing is dropped on a guess.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from flow.fs import RefusedFile, read_regular
from flow.health.storage.stream import StreamPosition

__all__ = ["CURSOR_DIR", "CURSOR_GLOB_PREFIX", "StoredCursor", "stored_cursors"]

#: Where collectors keep their state, beside the data (the store skips dot-directories).
CURSOR_DIR = ".collector"
CURSOR_GLOB_PREFIX = "stream-cursor"
# A cursor is a few hundred bytes (one mark per retained day); anything far bigger is not one.
_MAX_CURSOR_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class StoredCursor:
    """One cursor file: its destination and position, or `error` when it cannot be read
    (then it protects everything)."""

    path: Path
    destination: str
    position: StreamPosition | None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.destination or self.path.name


def _read(path: Path) -> StoredCursor | None:
    try:
        data = read_regular(path, _MAX_CURSOR_BYTES)
    except RefusedFile as refused:
        return StoredCursor(path, "", None, f"{refused.reason.replace('_', ' ')}: {refused.detail}")
    except OSError as exc:
        return StoredCursor(path, "", None, f"cannot read: {exc.strerror or exc}")
    if data is None:  # removed since it was listed: nothing to honour
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return StoredCursor(path, "", None, "not JSON")
    if not isinstance(obj, Mapping):
        return StoredCursor(path, "", None, "not a JSON object")
    destination = obj.get("destination")
    destination = destination if isinstance(destination, str) else ""
    raw = obj.get("position")
    if not isinstance(raw, Mapping):
        return StoredCursor(path, destination, None, "no position")
    try:
        return StoredCursor(path, destination, StreamPosition.from_dict(raw))
    except ValueError as exc:
        return StoredCursor(path, destination, None, f"bad position: {exc}")


def stored_cursors(root: Path) -> list[StoredCursor]:
    """Every cursor file under `<root>/.collector/`, sorted by path ([] when there is none)."""
    directory = root / CURSOR_DIR
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        return [StoredCursor(directory, "", None, f"cannot list: {exc.strerror or exc}")]
    found = (_read(directory / name) for name in names
             if name.startswith(CURSOR_GLOB_PREFIX) and name.endswith(".json"))
    return [cursor for cursor in found if cursor is not None]
