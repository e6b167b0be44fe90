"""Round trips through plain and compressed files, windows, order, layout and configuration."""

from __future__ import annotations

import gzip
import os
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from flow.errors import ConfigError, StorageError
from flow.health.storage import MetricsStore, task_dirname
from storage.builders import MINUTE, T0, Clock, data_files, make_store, series, snap


def test_round_trip_plain(tmp_path: Path) -> None:
    store = make_store(tmp_path / "m", Clock(T0 + timedelta(hours=2)))
    written = series(T0, 90)
    assert store.write_snapshots(written) == 90
    assert list(store.read_snapshots("task-a")) == written
    assert data_files(tmp_path / "m") == ["task-a/2026-11-20.jsonl"]
    assert store.corrupt_lines_skipped == 0


def test_round_trip_through_compression(tmp_path: Path) -> None:
    clock = Clock(T0 + timedelta(hours=23))
    store = make_store(tmp_path / "m", clock, compress_after_days=0)
    written = series(T0, 1440 + 120)  # a whole day and two hours of the next
    store.write_snapshots(written)
    clock.now = T0 + timedelta(days=1, hours=3)
    result = store.cleanup()
    assert [p.name for p in result.compressed] == ["2026-11-20.jsonl"]
    assert data_files(tmp_path / "m") == ["task-a/2026-11-20.jsonl.gz", "task-a/2026-11-21.jsonl"]
    with gzip.open(tmp_path / "m/task-a/2026-11-20.jsonl.gz") as f:
        assert len(f.read().splitlines()) == 1440
    everything = list(store.read_snapshots("task-a", start=T0))
    assert everything == written
    # The default window is the last 24 h from the store's clock, across both files.
    window = list(store.read_snapshots("task-a"))
    assert window == [s for s in written if s.timestamp >= clock.now - timedelta(hours=24)]
    assert store.corrupt_lines_skipped == 0


def test_late_writes_to_a_compressed_day_are_read_and_folded_in(tmp_path: Path) -> None:
    clock = Clock(T0 + timedelta(days=2))
    store = make_store(tmp_path / "m", clock)
    first = series(T0, 10)
    store.write_snapshots(first)
    store.cleanup()
    late = series(T0 + timedelta(hours=5), 3)
    store.write_snapshots(late)  # the day is already .gz: a new .jsonl appears next to it
    assert data_files(tmp_path / "m") == ["task-a/2026-11-20.jsonl", "task-a/2026-11-20.jsonl.gz"]
    assert list(store.read_snapshots("task-a", start=T0)) == first + late
    store.cleanup()  # folds the late lines in as a second gzip member
    assert data_files(tmp_path / "m") == ["task-a/2026-11-20.jsonl.gz"]
    assert list(store.read_snapshots("task-a", start=T0)) == first + late


def test_reads_are_in_time_order_whatever_the_write_order(tmp_path: Path) -> None:
    store = make_store(tmp_path / "m", Clock(T0 + timedelta(days=3)))
    written = series(T0, 50) + series(T0 + timedelta(days=1), 50)
    shuffled = written[::2] + written[1::2][::-1]
    for s in shuffled:
        store.write_snapshot(s)
    assert list(store.read_snapshots("task-a", start=T0)) == written


def test_window_is_start_inclusive_end_exclusive(tmp_path: Path) -> None:
    store = make_store(tmp_path / "m", Clock(T0 + timedelta(days=1)))
    written = series(T0, 10)
    store.write_snapshots(written)
    got = list(store.read_snapshots("task-a", start=T0 + 2 * MINUTE, end=T0 + 5 * MINUTE))
    assert got == written[2:5]
    # Only `end`: the 24 h before it. Naive datetimes are UTC.
    naive_end = (T0 + 3 * MINUTE).replace(tzinfo=None)
    assert list(store.read_snapshots("task-a", end=naive_end)) == written[:3]
    # A start with sub-millisecond precision: the stored millisecond time is compared exactly.
    assert list(store.read_snapshots("task-a", start=T0 + timedelta(microseconds=1), end=T0 + MINUTE)) == []


def test_all_tasks_merged_in_time_order(tmp_path: Path) -> None:
    store = make_store(tmp_path / "m", Clock(T0 + timedelta(hours=1)))
    a = series(T0, 5, "task-a", step=2 * MINUTE)
    b = series(T0 + MINUTE, 5, "task-b", step=2 * MINUTE)
    store.write_snapshots(a + b)
    merged = list(store.read_snapshots(start=T0))
    assert merged == sorted(a + b, key=lambda s: s.timestamp)
    assert store.task_ids() == ["task-a", "task-b"]


def test_a_query_reads_only_its_task_and_days(tmp_path: Path) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + timedelta(days=3)))
    store.write_snapshots(series(T0, 10, "task-a") + series(T0 + timedelta(days=2), 10, "task-a"))
    store.write_snapshots(series(T0 + timedelta(days=2), 10, "task-b"))
    # Garbage in another task's file and in a day outside the window: a read that opened them
    # would count corrupt lines.
    (root / "task-b/2026-11-22.jsonl").write_bytes(b"garbage\n" * 100)
    (root / "task-a/2026-11-20.jsonl").write_bytes(b"garbage\n" * 100)
    got = list(store.read_snapshots("task-a", start=T0 + timedelta(days=2)))
    assert len(got) == 10
    assert store.corrupt_lines_skipped == 0


def test_lines_without_the_prefix_are_still_read(tmp_path: Path) -> None:
    """The timestamp-prefix fast path is only a shortcut: another key order decodes fully."""
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + timedelta(hours=1)))
    s = snap(T0 + MINUTE)
    reordered = dict(reversed(list(s.to_dict().items())))
    store.write_snapshot(snap(T0))
    with open(root / "task-a/2026-11-20.jsonl", "ab") as f:
        f.write(orjson.dumps(reordered) + b"\n")
    assert list(store.read_snapshots("task-a", start=T0)) == [snap(T0), s]


@pytest.mark.parametrize("task_id", ["../../etc", "..", ".", "a/b", "/abs", ".hidden", "tâche 1", "a\x00b"])
def test_task_ids_are_safe_path_parts(tmp_path: Path, task_id: str) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + timedelta(hours=1)))
    store.write_snapshot(snap(T0, task_id))
    name = task_dirname(task_id)
    assert "/" not in name and "\x00" not in name and not name.startswith(".")
    assert [p.parent.name for p in root.rglob("*.jsonl")] == [name]
    assert store.task_ids() == [task_id]
    assert [s.task_id for s in store.read_snapshots(task_id, start=T0)] == [task_id]


def test_long_task_ids_are_cut_and_hashed(tmp_path: Path) -> None:
    store = make_store(tmp_path / "m", Clock(T0 + timedelta(hours=1)))
    long_a, long_b = "t" * 300 + "a", "t" * 300 + "b"
    store.write_snapshots([snap(T0, long_a), snap(T0, long_b)])
    assert len({task_dirname(long_a), task_dirname(long_b)}) == 2
    assert all(len(task_dirname(t)) <= 120 for t in (long_a, long_b))
    assert store.task_ids() == [long_a, long_b]
    assert len(list(store.read_snapshots(long_b, start=T0))) == 1


def test_a_snapshot_without_task_id_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    store = make_store(tmp_path / "m", Clock(T0))
    with pytest.raises(StorageError, match="no task_id"):
        store.write_snapshots([snap(T0, "task-a"), snap(T0, "")])
    assert data_files(tmp_path / "m") == []


def test_an_unwritable_store_raises_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    store = make_store(tmp_path / "file" / "m", Clock(T0))
    with pytest.raises(StorageError, match="cannot write metrics") as info:
        store.write_snapshot(snap(T0))
    assert info.value.path is not None


def test_an_unreadable_file_is_skipped_and_named(tmp_path: Path) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + timedelta(hours=1)))
    store.write_snapshot(snap(T0))
    (root / "task-a/2026-11-20.jsonl.gz").mkdir()  # in the way, and not readable as a file
    assert list(store.read_snapshots("task-a")) == []
    assert store.unreadable_files == [f"{root / 'task-a/2026-11-20.jsonl.gz'}: cannot read metrics: "
                                      "Is a directory"]


def test_the_store_creates_missing_parents_private(tmp_path: Path) -> None:
    store = make_store(tmp_path / "home" / "metrics", Clock(T0))
    store.write_snapshot(snap(T0))
    assert oct((tmp_path / "home").stat().st_mode & 0o777) == oct(0o700)


def test_write_lines_checks_each_line_belongs_to_the_day(tmp_path: Path) -> None:
    store = make_store(tmp_path / "m", Clock(T0 + timedelta(hours=1)))
    good = snap(T0).to_json()
    assert store.write_lines("task-a", T0.date(), [good, good + b"\n"]) == 2
    with pytest.raises(ValueError, match="one-line snapshot"):
        store.write_lines("task-a", (T0 + timedelta(days=1)).date(), [good])
    with pytest.raises(ValueError, match="one-line snapshot"):
        store.write_lines("task-a", T0.date(), [b'{"not": "a snapshot"}'])
    assert len(list(store.read_snapshots("task-a", start=T0))) == 2


def test_defaults_come_from_configuration(flow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MetricsStore()
    assert (store.root, store.retention_days, store.compress_after_days) == (flow_home / "metrics", 7, 1)
    monkeypatch.setenv("FLOW_METRICS_DIR", str(flow_home / "elsewhere"))
    monkeypatch.setenv("FLOW_METRICS_RETENTION_DAYS", "3")
    monkeypatch.setenv("FLOW_METRICS_COMPRESS_AFTER_DAYS", "2")
    store = MetricsStore()
    assert (store.root, store.retention_days, store.compress_after_days) == (flow_home / "elsewhere", 3, 2)
    assert MetricsStore(retention_days=9).retention_days == 9


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"retention_days": 0}, "retention_days=0"),
    ({"retention_days": "7"}, "retention_days='7'"),
    ({"compress_after_days": -1}, "compress_after_days=-1"),
])
def test_bad_arguments_name_the_value(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"retention_days": 7, "compress_after_days": 1, **kwargs}
    with pytest.raises(ConfigError, match=message):
        MetricsStore(tmp_path, **args)  # type: ignore[arg-type]


def test_a_missing_store_reads_as_empty(tmp_path: Path) -> None:
    store = make_store(tmp_path / "nothing-here", Clock(T0))
    assert list(store.read_snapshots("task-a")) == []
    assert list(store.read_snapshots()) == []
    assert store.task_ids() == []
    assert store.stats().files == 0
    assert not os.path.exists(tmp_path / "nothing-here")
