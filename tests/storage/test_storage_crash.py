"""Crash safety: torn and corrupt lines, concurrent writers (real processes), concurrent
compression, and private permissions."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from flow.health.storage import compact
from storage.builders import MINUTE, T0, Clock, data_files, make_store, series, snap

DAY_FILE = "task-a/2026-11-20.jsonl"


def test_a_torn_last_line_is_skipped_counted_and_never_glued_onto(tmp_path: Path) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + timedelta(hours=1)))
    first = series(T0, 3)
    store.write_snapshots(first)
    path = root / DAY_FILE
    # A process killed mid-write leaves half a line and no newline.
    with open(path, "ab") as f:
        f.write(snap(T0 + 3 * MINUTE).to_json()[:100])
    assert list(store.read_snapshots("task-a", start=T0)) == first
    assert store.corrupt_lines_skipped == 1
    later = series(T0 + 10 * MINUTE, 2)
    store.write_snapshots(later)  # starts with a newline: the torn line stays a line of its own
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3 + 1 + 2 + 1
    assert list(store.read_snapshots("task-a", start=T0)) == first + later
    assert store.corrupt_lines_skipped == 2  # the torn line, read a second time


@pytest.mark.parametrize("bad", [
    b"not json at all",
    b"\xff\xfe\x00 invalid utf-8",
    b"[1, 2, 3]",
    b'{"schema":1,"no_timestamp":true}',
    b'{"schema":1,"timestamp":"yesterday-ish"}',
    b'{"schema":1,"timestamp":"2026-11-20T00:00:30.000Z", "task_id": "task-a", "gpus": [oops',
    b"{}",
])
def test_a_corrupt_line_is_skipped_and_counted_and_reading_goes_on(tmp_path: Path, bad: bytes) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + timedelta(hours=1)))
    written = series(T0, 4)
    store.write_snapshots(written[:2])
    with open(root / DAY_FILE, "ab") as f:
        f.write(bad + b"\n")
    store.write_snapshots(written[2:])
    assert list(store.read_snapshots("task-a", start=T0)) == written
    assert store.corrupt_lines_skipped == 1
    assert store.stats().corrupt_lines == 1
    assert store.stats().snapshots == 4


def test_a_truncated_gzip_file_gives_what_it_holds(tmp_path: Path) -> None:
    root = tmp_path / "m"
    clock = Clock(T0 + timedelta(days=2))
    store = make_store(root, clock)
    written = series(T0, 200)
    store.write_snapshots(written)
    store.cleanup()
    gz = root / "task-a/2026-11-20.jsonl.gz"
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) * 2 // 3])
    got = list(store.read_snapshots("task-a", start=T0))
    assert 0 < len(got) < 200
    assert got == written[: len(got)]
    assert store.corrupt_lines_skipped >= 1
    # Garbage that is not gzip at all: counted, no exception.
    gz.write_bytes(b"this is not gzip")
    assert list(store.read_snapshots("task-a", start=T0)) == []


WRITER = textwrap.dedent("""
    import sys
    from datetime import datetime, timedelta, timezone
    from flow.health.snapshot import GpuReading, GpudStatus, Snapshot
    from flow.health.storage import MetricsStore

    root, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = MetricsStore(root, 7, 1, auto_cleanup=False)
    t0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
    # Big lines (well past PIPE_BUF) so that an interleaved write would show.
    gpus = tuple(GpuReading(index=i, uuid=name * 200, temp_c=50.0) for i in range(8))
    sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.readline()
    for i in range(count):
        s = Snapshot(timestamp=t0 + timedelta(seconds=i), task_id="task-a", node=name,
                     task_name=str(i), gpud=GpudStatus(reachable=True), gpus=gpus)
        if i % 10 == 0:
            store.write_snapshots([s])
        else:
            store.write_snapshot(s)
""")


def test_two_writer_processes_interleave_whole_lines_only(tmp_path: Path) -> None:
    root = tmp_path / "m"
    count = 300
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(root), name, str(count)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for name in ("A", "B")
    ]
    for p in procs:  # both ready, then both released at once
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        assert p.wait(timeout=120) == 0
    lines = (root / DAY_FILE).read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [orjson.loads(line) for line in lines[:-1]]  # every line is one whole object
    assert len(records) == 2 * count
    for name in ("A", "B"):
        mine = [int(r["task_name"]) for r in records if r["node"] == name]
        assert mine == list(range(count))  # none lost, each writer's order kept
    store = make_store(root, Clock(T0 + timedelta(hours=1)))
    assert len(list(store.read_snapshots("task-a", start=T0))) == 2 * count
    assert store.corrupt_lines_skipped == 0


def test_readers_see_every_line_exactly_once_while_days_are_compressed(tmp_path: Path) -> None:
    root = tmp_path / "m"
    clock = Clock(T0 + timedelta(days=200))
    store = make_store(root, clock, retention_days=300)
    # Many small days: many swaps of .jsonl for .jsonl.gz while the reader keeps opening them.
    written = [s for d in range(150) for s in series(T0 + timedelta(days=d), 2)]
    store.write_snapshots(written)
    counts: list[int] = []
    stop = threading.Event()

    def read_forever() -> None:
        reader = make_store(root, clock, retention_days=300)
        while not stop.is_set():
            counts.append(sum(1 for _ in reader.read_records("task-a", start=T0)))

    thread = threading.Thread(target=read_forever)
    thread.start()
    try:
        result = store.cleanup()
    finally:
        stop.set()
        thread.join()
    assert len(result.compressed) == 150
    assert counts and set(counts) == {len(written)}
    assert list(store.read_snapshots("task-a", start=T0)) == written


def test_a_reader_opening_a_day_mid_swap_waits_for_the_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pause the compressor between renaming the new .gz in and unlinking the .jsonl: a reader
    that opened both then would read the day twice. The shared lock makes it wait instead."""
    root = tmp_path / "m"
    clock = Clock(T0 + timedelta(days=2))
    store = make_store(root, clock)
    written = series(T0, 20)
    store.write_snapshots(written)
    swapped, release = threading.Event(), threading.Event()

    class PausingOs:
        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        def replace(self, src: object, dst: object) -> None:
            os.replace(src, dst)  # type: ignore[call-overload]
            swapped.set()
            release.wait(10)

    monkeypatch.setattr(compact, "os", PausingOs())
    compressor = threading.Thread(target=store.cleanup)
    compressor.start()
    assert swapped.wait(10)
    got: list[int] = []
    reader = threading.Thread(
        target=lambda: got.append(len(list(make_store(root, clock).read_snapshots("task-a", start=T0)))))
    reader.start()
    reader.join(0.3)  # it is waiting for the lock (if it is not, the count below shows it)
    release.set()
    compressor.join()
    reader.join()
    assert got == [len(written)]
    assert data_files(root) == ["task-a/2026-11-20.jsonl.gz"]


def test_a_late_writer_during_compression_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + timedelta(days=3)))
    early = series(T0, 500)
    store.write_snapshots(early)
    late = series(T0 + timedelta(hours=12), 200)
    writer = threading.Thread(target=lambda: [store.write_snapshot(s) for s in late])
    writer.start()
    store.cleanup()
    writer.join()
    store.cleanup()
    assert data_files(root) == ["task-a/2026-11-20.jsonl.gz"]
    assert list(store.read_snapshots("task-a", start=T0)) == sorted(early + late, key=lambda s: s.timestamp)


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o077])
def test_directories_are_0700_and_files_0600(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "m"
    clock = Clock(T0 + timedelta(days=2))
    old = os.umask(umask)
    try:
        store = make_store(root, clock, auto_cleanup=True)
        store.write_snapshots(series(T0, 5) + series(T0 + timedelta(days=2), 5))
    finally:
        os.umask(old)
    assert (root / "task-a/2026-11-20.jsonl.gz").exists()  # the writer's own cleanup ran
    modes = {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}
    assert modes == {
        ".": 0o700,
        ".last-cleanup": 0o600,
        "task-a": 0o700,
        "task-a/.lock": 0o600,
        "task-a/2026-11-20.jsonl.gz": 0o600,
        "task-a/2026-11-22.jsonl": 0o600,
    }


def test_an_existing_open_file_is_tightened_to_0600(tmp_path: Path) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + timedelta(hours=1)))
    store.write_snapshot(snap(T0))
    os.chmod(root / DAY_FILE, 0o644)
    store.write_snapshot(snap(T0 + MINUTE))
    assert stat.S_IMODE((root / DAY_FILE).stat().st_mode) == 0o600


def test_compressed_files_are_valid_gzip(tmp_path: Path) -> None:
    root = tmp_path / "m"
    store = make_store(root, Clock(T0 + timedelta(days=2)))
    written = series(T0, 30)
    store.write_snapshots(written)
    store.cleanup()
    with gzip.open(root / "task-a/2026-11-20.jsonl.gz") as f:
        assert f.read() == b"".join(s.to_json() + b"\n" for s in written)
