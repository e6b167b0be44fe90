"""Every deleter honours every stream cursor on the store (issue 12, class 2).

The collector saves how far each destination acknowledged in `<store>/.collector/`; the
collector's retention, `flow health cleanup` and `MetricsStore.cleanup` must all keep what a
destination has not received, and drop it only when asked, saying how much.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import orjson
import pytest

from flow.cli.main import main
from flow.health.storage import MetricsStore, StreamPosition
from flow.health.streaming.cursor import CursorFile, CursorState
from storage.builders import MINUTE, T0, Clock, make_store, series

DAY = timedelta(days=1)


def save_cursor(root: Path, position: StreamPosition, name: str = "stream-cursor.json",
                destination: str = "https://metrics.example/ingest") -> Path:
    path = root / ".collector" / name
    CursorFile(path, fsync=False).save(CursorState(destination=destination, position=position.to_dict()))
    return path


def four_days(tmp_path: Path) -> tuple[Path, MetricsStore]:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + 10 * DAY), retention_days=2)
    for d in range(4):
        store.write_snapshots(series(T0 + d * DAY, 5))
    return root, store


def delivered_through(store: MetricsStore, last_day: date) -> StreamPosition:
    """A position that has read every day up to `last_day` and nothing after."""
    end = store.end_position("task-a")
    return StreamPosition(task_id="task-a", days=tuple((d, o) for d, o in end.days if d <= last_day))


def test_the_api_keeps_days_a_cursor_has_not_delivered(tmp_path: Path) -> None:
    root, store = four_days(tmp_path)
    save_cursor(root, delivered_through(store, date(2026, 11, 21)))
    result = store.cleanup()
    assert [p.name for p in result.deleted] == ["2026-11-20.jsonl", "2026-11-21.jsonl"]
    assert [p.name for p in result.kept] == ["2026-11-22.jsonl", "2026-11-23.jsonl"]
    assert result.undelivered == (
        "task-a 2026-11-22: not yet delivered to https://metrics.example/ingest",
        "task-a 2026-11-23: not yet delivered to https://metrics.example/ingest")


def test_a_day_half_delivered_is_kept_and_a_fully_delivered_one_goes(tmp_path: Path) -> None:
    root, store = four_days(tmp_path)
    end = store.end_position("task-a")
    half = tuple((d, o // 2 if d == date(2026, 11, 22) else o) for d, o in end.days)
    save_cursor(root, StreamPosition(task_id="task-a", days=half))
    result = store.cleanup()
    assert [p.name for p in result.kept] == ["2026-11-22.jsonl"]
    assert len(result.deleted) == 3


def test_every_cursor_counts_and_other_tasks_are_not_held(tmp_path: Path) -> None:
    root, store = four_days(tmp_path)
    store.write_snapshots(series(T0, 3, task_id="task-b"))
    save_cursor(root, store.end_position("task-a"))  # the endpoint has everything
    save_cursor(root, delivered_through(store, date(2026, 11, 20)), name="stream-cursor-dd.json",
                destination="datadog")  # a sink is behind
    result = store.cleanup()
    assert [p.name for p in result.kept] == ["2026-11-21.jsonl", "2026-11-22.jsonl", "2026-11-23.jsonl"]
    assert all("datadog" in u for u in result.undelivered)
    assert store.task_ids() == ["task-a"]  # task-b has no cursor: retention as usual


def test_an_unreadable_cursor_keeps_everything_and_says_so(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    root, store = four_days(tmp_path)
    (root / ".collector").mkdir(mode=0o700)
    (root / ".collector" / "stream-cursor.json").write_bytes(b"{not json")
    with caplog.at_level(logging.WARNING):
        result = store.cleanup()
    assert result.deleted == () and len(result.kept) == 4
    assert "stream-cursor.json cannot be read (not JSON)" in caplog.text


def test_dropping_undelivered_data_is_explicit_logged_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root, store = four_days(tmp_path)
    save_cursor(root, delivered_through(store, date(2026, 11, 20)))
    with caplog.at_level(logging.WARNING):
        dry = store.cleanup(drop_undelivered=True, dry_run=True)
    assert dry.dropped_records == 15 and (root / "task-a/2026-11-21.jsonl").exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = store.cleanup(drop_undelivered=True)
    assert [p.name for p in result.dropped_undelivered] == [
        "2026-11-21.jsonl", "2026-11-22.jsonl", "2026-11-23.jsonl"]
    assert result.dropped_records == 15 and len(result.deleted) == 4
    assert "task-a 2026-11-21: dropping 5 undelivered record(s)" in caplog.text
    assert "https://metrics.example/ingest has not acknowledged" in caplog.text


def test_a_legacy_single_day_cursor_protects_from_its_day_on(tmp_path: Path) -> None:
    root, store = four_days(tmp_path)
    path = root / ".collector" / "stream-cursor.json"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(orjson.dumps({"version": 1, "destination": "x", "position": {
        "task_id": "task-a", "day": "2026-11-22", "offset": 0}}))
    result = store.cleanup()
    assert [p.name for p in result.kept] == ["2026-11-22.jsonl", "2026-11-23.jsonl"]


def test_flow_health_cleanup_keeps_undelivered_days(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The reproduction: `flow health cleanup` deleted days the collector itself keeps."""
    home = tmp_path / "home"
    monkeypatch.setenv("FLOW_HOME", str(home))
    root = home / "metrics"
    store = MetricsStore(root, retention_days=7, compress_after_days=1, auto_cleanup=False)
    old = T0 - 30 * DAY
    store.write_snapshots(series(old, 4))
    save_cursor(root, StreamPosition.start("task-a"))  # nothing delivered yet
    assert main(["health", "cleanup", "--retention-days", "1"]) == 0
    out = capsys.readouterr().out
    assert "not yet delivered to https://metrics.example/ingest" in out
    assert store.days("task-a") == [old.date()]
    assert main(["health", "cleanup", "--retention-days", "1", "--drop-undelivered", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["dropped_records"] == 4
    assert store.days("task-a") == []


def test_a_day_written_after_the_cursor_passed_it_is_kept(tmp_path: Path) -> None:
    """A late write into a day already delivered (a clock stepped back) makes it undelivered."""
    root, store = four_days(tmp_path)
    save_cursor(root, store.end_position("task-a"))
    store.write_snapshots(series(T0 + DAY + 10 * MINUTE, 1))
    result = store.cleanup()
    assert [p.name for p in result.kept] == ["2026-11-21.jsonl"]
