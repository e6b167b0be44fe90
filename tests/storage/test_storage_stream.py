"""The resumable read for the collector's cursor: positions survive restarts and compression."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import orjson
import pytest

from flow.health.snapshot import Snapshot
from flow.health.storage import MetricsStore, StreamPosition
from storage.builders import MINUTE, T0, Clock, make_store, series, snap

DAY = timedelta(days=1)


def drain(store: MetricsStore, position: StreamPosition, limit: int | None = None
          ) -> tuple[list[Snapshot], StreamPosition]:
    got: list[Snapshot] = []
    at = position
    for snapshot, after in store.iter_from(position):
        got.append(snapshot)
        at = after
        if limit is not None and len(got) >= limit:
            break
    return got, at


def test_resume_reads_every_snapshot_exactly_once_in_write_order(tmp_path: Path) -> None:
    store = make_store(tmp_path / "m", Clock(T0 + 3 * DAY))
    written = series(T0, 30) + series(T0 + DAY, 30) + series(T0 + 2 * DAY, 30)
    store.write_snapshots(written)
    position = StreamPosition.start("task-a")
    delivered: list[Snapshot] = []
    while True:
        batch, position = drain(store, position, limit=7)
        if not batch:
            break
        delivered.extend(batch)
        position = StreamPosition.from_dict(orjson.loads(orjson.dumps(position.to_dict())))
    assert delivered == written
    sizes = [(day, (store.task_dir("task-a") / f"{day}.jsonl").stat().st_size)
             for day in (date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22))]
    assert position == StreamPosition(task_id="task-a", days=tuple(sizes))
    store.write_snapshot(snap(T0 + 2 * DAY + timedelta(hours=1)))
    assert drain(store, position)[0] == [snap(T0 + 2 * DAY + timedelta(hours=1))]


def test_a_position_survives_compression_of_its_day(tmp_path: Path) -> None:
    clock = Clock(T0 + timedelta(hours=20))
    store = make_store(tmp_path / "m", clock)
    written = series(T0, 50)
    store.write_snapshots(written)
    first, position = drain(store, StreamPosition.start("task-a"), limit=20)
    clock.now = T0 + 3 * DAY
    assert len(store.cleanup().compressed) == 1  # the day is now .jsonl.gz
    rest, position = drain(store, position)
    assert first + rest == written
    # Late lines for the compressed day go to a new .jsonl next to the .gz: found too.
    late = snap(T0 + timedelta(hours=23))
    store.write_snapshot(late)
    assert drain(store, position)[0] == [late]


def test_a_line_still_being_written_is_left_for_next_time(tmp_path: Path) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + timedelta(hours=1)))
    store.write_snapshots(series(T0, 2))
    path = root / "task-a/2026-11-20.jsonl"
    whole = snap(T0 + 2 * MINUTE).to_json() + b"\n"
    with open(path, "ab") as f:
        f.write(whole[:50])  # the writer is mid-line
    got, position = drain(store, StreamPosition.start("task-a"))
    assert len(got) == 2 and store.corrupt_lines_skipped == 0
    with open(path, "ab") as f:
        f.write(whole[50:])  # ... and finishes it
    assert drain(store, position)[0] == [snap(T0 + 2 * MINUTE)]


def test_a_torn_line_in_an_older_day_is_skipped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + 2 * DAY))
    store.write_snapshots(series(T0, 2))
    with open(root / "task-a/2026-11-20.jsonl", "ab") as f:
        f.write(b'{"schema":1,"timestamp":"2026-11')  # killed mid-write; then the day ended
    store.write_snapshots(series(T0 + DAY, 2))
    got, position = drain(store, StreamPosition.start("task-a"))
    assert [s.timestamp for s in got] == [T0, T0 + MINUTE, T0 + DAY, T0 + DAY + MINUTE]
    # Any day can still be written (a clock step), so its unfinished tail is not judged yet...
    assert store.corrupt_lines_skipped == 0
    assert [d for d, _ in position.days] == [date(2026, 11, 20), date(2026, 11, 21)]
    # ... and holds nothing back: the next write to that day ends it, and it is counted then.
    store.write_snapshot(snap(T0 + 3 * MINUTE))
    assert drain(store, position)[0] == [snap(T0 + 3 * MINUTE)]
    assert store.corrupt_lines_skipped == 1


def test_raw_lines_are_the_stored_bytes(tmp_path: Path) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + timedelta(hours=1)))
    written = series(T0, 3)
    store.write_snapshots(written[:1])
    with open(root / "task-a/2026-11-20.jsonl", "ab") as f:
        f.write(b"garbage\n")
    store.write_snapshots(written[1:])
    raw = list(store.iter_raw_from(StreamPosition.start("task-a")))
    assert [data for data, _ in raw] == [s.to_json() for s in written]
    assert store.corrupt_lines_skipped == 1
    # The position after the second raw line resumes at the third.
    assert [d for d, _ in store.iter_raw_from(raw[1][1])] == [written[2].to_json()]


def test_an_unknown_task_or_a_deleted_day_reads_what_is_left(tmp_path: Path) -> None:
    store = make_store(tmp_path / "m", Clock(T0 + 10 * DAY), retention_days=2)
    store.write_snapshots(series(T0, 3) + series(T0 + 9 * DAY, 3))
    assert drain(store, StreamPosition.start("task-zzz"))[0] == []
    stale = StreamPosition(task_id="task-a", days=((date(2026, 11, 20), 10),))
    store.cleanup()  # 2026-11-20 is past retention and not protected: gone
    assert [s.timestamp for s in drain(store, stale)[0]] == [T0 + 9 * DAY + i * MINUTE for i in range(3)]


@pytest.mark.parametrize("raw", [
    {},
    {"task_id": ""},
    {"task_id": "t", "day": "2026-13-01", "offset": 0},
    {"task_id": "t", "day": "2026-11-20", "offset": -1},
    {"task_id": "t", "day": "2026-11-20", "offset": "12"},
    {"task_id": "t", "days": {"2026-11-20": -1}},
    {"task_id": "t", "days": {"20 Nov": 5}},
    {"task_id": "t", "days": ["2026-11-20", 5]},
])
def test_malformed_positions_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        StreamPosition.from_dict(raw)


def test_positions_print_and_round_trip() -> None:
    a = StreamPosition(task_id="t", days=((date(2026, 11, 20), 5), (date(2026, 11, 21), 0)))
    assert str(a) == "t@2026-11-20+5,2026-11-21+0"
    assert str(StreamPosition.start("t")) == "t@start"
    assert StreamPosition.from_dict(orjson.loads(orjson.dumps(a.to_dict()))) == a
    assert a.offset(date(2026, 11, 20)) == 5 and a.offset(date(2026, 11, 19)) is None


def test_a_single_day_cursor_of_the_earlier_format_resumes_where_it_stood(tmp_path: Path) -> None:
    store = make_store(tmp_path / "m", Clock(T0 + 2 * DAY))
    store.write_snapshots(series(T0, 3) + series(T0 + DAY, 3))
    day2 = store.task_dir("task-a") / "2026-11-21.jsonl"
    one_line = len(snap(T0 + DAY).to_json()) + 1
    legacy = StreamPosition.from_dict({"task_id": "task-a", "day": "2026-11-21", "offset": one_line})
    assert day2.stat().st_size > one_line
    got, position = drain(store, legacy)
    assert [s.timestamp for s in got] == [T0 + DAY + MINUTE, T0 + DAY + 2 * MINUTE]
    assert position.floor is None and position.offset(date(2026, 11, 20)) is not None
