"""Rotation, compression and retention with an injected clock; the writer's hourly cleanup."""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from pathlib import Path

import orjson

from storage.builders import T0, Clock, data_files, make_store, series, snap

DAY = timedelta(days=1)


def fill_days(store_root: Path, days: int, per_day: int = 5) -> None:
    store = make_store(store_root, Clock(T0))
    store.write_snapshots([s for d in range(days) for s in series(T0 + d * DAY, per_day)])


def test_compression_after_n_days_and_deletion_after_m(tmp_path: Path) -> None:
    root = tmp_path / "m"
    fill_days(root, 5)  # 2026-11-20 .. 2026-11-24
    clock = Clock(T0 + 4 * DAY + timedelta(hours=6))  # 2026-11-24 06:00
    store = make_store(root, clock, retention_days=3, compress_after_days=1)
    result = store.cleanup()
    # Ages (now minus the end of the file's day): 11-20: 3.25 d, 11-21: 2.25 d, 11-22: 1.25 d,
    # 11-23: 0.25 d, 11-24 (today): negative.
    assert [p.name for p in result.deleted] == ["2026-11-20.jsonl"]
    assert [p.name for p in result.compressed] == ["2026-11-21.jsonl", "2026-11-22.jsonl"]
    assert result.bytes_freed > 0 and not result.errors and not result.dry_run
    assert data_files(root) == [
        "task-a/2026-11-21.jsonl.gz", "task-a/2026-11-22.jsonl.gz",
        "task-a/2026-11-23.jsonl", "task-a/2026-11-24.jsonl",
    ]
    assert not store.cleanup().changed  # idempotent
    clock.advance(DAY)
    result = store.cleanup()
    assert [p.name for p in result.deleted] == ["2026-11-21.jsonl.gz"]
    assert [p.name for p in result.compressed] == ["2026-11-23.jsonl"]
    assert len(list(store.read_snapshots("task-a", start=T0))) == 3 * 5


def test_todays_file_is_never_compressed(tmp_path: Path) -> None:
    root = tmp_path / "m"
    fill_days(root, 2)
    store = make_store(root, Clock(T0 + DAY + timedelta(hours=23, minutes=59)), compress_after_days=0)
    result = store.cleanup()
    assert [p.name for p in result.compressed] == ["2026-11-20.jsonl"]
    assert data_files(root) == ["task-a/2026-11-20.jsonl.gz", "task-a/2026-11-21.jsonl"]


def test_dry_run_reports_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "m"
    fill_days(root, 4)
    before = data_files(root)
    sizes = sum(p.stat().st_size for p in root.rglob("2026-11-20.jsonl"))
    store = make_store(root, Clock(T0 + 3 * DAY + timedelta(hours=1)), retention_days=2)
    result = store.cleanup(dry_run=True)
    assert result.dry_run
    assert [p.name for p in result.deleted] == ["2026-11-20.jsonl"]
    assert [p.name for p in result.compressed] == ["2026-11-21.jsonl"]
    assert result.bytes_freed == sizes
    assert data_files(root) == before
    assert orjson.loads(orjson.dumps(result.to_dict()))["dry_run"] is True


def test_protect_and_keep_since_keep_undelivered_days(tmp_path: Path) -> None:
    root = tmp_path / "m"
    fill_days(root, 4)
    store = make_store(root, Clock(T0 + 10 * DAY), retention_days=2)
    result = store.cleanup(protect=lambda task, day: day >= date(2026, 11, 22))
    assert [p.name for p in result.deleted] == ["2026-11-20.jsonl", "2026-11-21.jsonl"]
    assert [p.name for p in result.kept] == ["2026-11-22.jsonl", "2026-11-23.jsonl"]
    # keep_since: nothing holding data newer than the cutoff goes.
    result = store.cleanup(keep_since=T0 + 3 * DAY + timedelta(hours=1))
    assert [p.name for p in result.deleted] == ["2026-11-22.jsonl"]
    assert [p.name for p in result.kept] == ["2026-11-23.jsonl"]


def test_protect_receives_the_task_id(tmp_path: Path) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + 10 * DAY), retention_days=2)
    store.write_snapshots([snap(T0, "task/one"), snap(T0, "task-two")])
    seen: list[tuple[str, date]] = []
    store.cleanup(protect=lambda task, day: seen.append((task, day)) or task == "task/one")
    assert sorted(seen) == [("task-two", date(2026, 11, 20)), ("task/one", date(2026, 11, 20))]
    assert store.task_ids() == ["task/one"]


def test_a_task_dir_emptied_by_retention_is_removed_and_writers_carry_on(tmp_path: Path) -> None:
    root = tmp_path / "m"
    fill_days(root, 1)
    store = make_store(root, Clock(T0 + 30 * DAY))
    store.cleanup()
    assert not (root / "task-a").exists()
    store.write_snapshot(snap(T0 + 30 * DAY))
    assert data_files(root) == ["task-a/2026-12-20.jsonl"]


def test_stale_temp_files_of_a_dead_compressor_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "m"
    fill_days(root, 1)
    stale = root / "task-a/.2026-11-20.jsonl.gz.tmp-123-456"
    fresh = root / "task-a/.2026-11-20.jsonl.gz.tmp-789-012"
    stale.write_bytes(b"half a gzip")
    fresh.write_bytes(b"someone is writing this")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    make_store(root, Clock(T0 + timedelta(hours=1))).cleanup()
    assert not stale.exists() and fresh.exists()


def test_the_writer_cleans_up_by_itself_at_most_once_an_hour(tmp_path: Path) -> None:
    root = tmp_path / "m"
    clock = Clock(T0 + 2 * DAY)
    store = make_store(root, clock, auto_cleanup=True, compress_after_days=0)
    store.write_snapshots(series(T0, 3))  # an old day: compressed by the write's own cleanup
    assert store.last_auto_cleanup is not None
    assert data_files(root) == ["task-a/2026-11-20.jsonl.gz"]

    clock.advance(timedelta(minutes=30))
    store.write_snapshots(series(T0 + DAY, 3))
    assert "task-a/2026-11-21.jsonl" in data_files(root)  # not yet: within the hour
    # Another process (a fresh store) honours the same hour through the stamp file.
    other = make_store(root, clock, auto_cleanup=True, compress_after_days=0)
    other.write_snapshot(snap(clock.now))
    assert other.last_auto_cleanup is None
    assert "task-a/2026-11-21.jsonl" in data_files(root)

    clock.advance(timedelta(minutes=31))
    store.write_snapshot(snap(clock.now))
    assert "task-a/2026-11-21.jsonl.gz" in data_files(root)


def test_a_failing_auto_cleanup_does_not_fail_the_write(tmp_path: Path) -> None:
    root = tmp_path / "m"
    clock = Clock(T0 + 2 * DAY)
    store = make_store(root, clock, auto_cleanup=True)
    store.write_snapshot(snap(T0))
    (root / ".last-cleanup").unlink()
    (root / ".last-cleanup").mkdir()  # the stamp cannot be written
    clock.advance(timedelta(hours=2))
    store.write_snapshot(snap(T0 + timedelta(seconds=1)))
    assert len(list(store.read_snapshots("task-a", start=T0))) == 2


def test_stats_count_files_bytes_snapshots_and_span(tmp_path: Path) -> None:
    root = tmp_path / "m"
    fill_days(root, 3, per_day=4)
    store = make_store(root, Clock(T0 + 2 * DAY + timedelta(hours=1)))
    store.cleanup()
    stats = store.stats()
    assert (stats.tasks, stats.files, stats.plain_files, stats.compressed_files) == (1, 3, 2, 1)
    assert stats.bytes == sum(p.stat().st_size for p in root.rglob("*.jsonl*"))
    assert (stats.snapshots, stats.corrupt_lines) == (12, 0)
    assert stats.oldest == T0 and stats.newest == T0 + 2 * DAY + timedelta(minutes=3)
    quick = store.stats(scan=False)
    assert (quick.files, quick.bytes, quick.snapshots, quick.oldest) == (3, stats.bytes, None, None)
    assert orjson.loads(orjson.dumps(stats.to_dict()))["snapshots"] == 12


def test_cleanup_of_one_task_leaves_the_others(tmp_path: Path) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + 3 * DAY))
    store.write_snapshots(series(T0, 2, "task-a") + series(T0, 2, "task-b"))
    result = store.cleanup(task_id="task-b")
    assert [p.parent.name for p in result.compressed] == ["task-b"]
    assert data_files(root) == ["task-a/2026-11-20.jsonl", "task-b/2026-11-20.jsonl.gz"]
    assert not store.cleanup(task_id="task-unknown").changed
