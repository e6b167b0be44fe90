"""The stream cursor file: atomic, private, tolerant of a corrupt file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from flow.health.streaming.cursor import CursorFile, CursorState


def test_save_then_load_round_trips_with_mode_0600(tmp_path: Path) -> None:
    cursor = CursorFile(tmp_path / "state" / "stream-cursor.json")
    cursor.save(CursorState(destination="https://x/ingest", position={"day": "2025-03-01", "offset": 42},
                            delivered=7, last_id="abc", last_timestamp="2025-03-01T00:00:00.000Z"))
    assert stat.S_IMODE(os.stat(cursor.path).st_mode) == 0o600
    loaded = cursor.load()
    assert loaded is not None
    assert loaded.position == {"day": "2025-03-01", "offset": 42}
    assert (loaded.destination, loaded.delivered, loaded.last_id) == ("https://x/ingest", 7, "abc")
    assert [p.name for p in cursor.path.parent.iterdir()] == ["stream-cursor.json"]  # no temp left


def test_missing_cursor_is_none_and_not_corrupt(tmp_path: Path) -> None:
    cursor = CursorFile(tmp_path / "c.json")
    assert cursor.load() is None
    assert not cursor.was_corrupt


def test_corrupt_cursor_is_none_and_flagged(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b'{"version": 1, "position": ')  # torn write from another tool
    cursor = CursorFile(path)
    assert cursor.load() is None
    assert cursor.was_corrupt
