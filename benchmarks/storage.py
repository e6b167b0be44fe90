"""Benchmark the metrics store: write throughput, one task's 24 h read and summary, and the
same summary done the naive way (read every line of every file, keep the task's).

    .venv/bin/python benchmarks/storage.py                       # 200 tasks x 3 days, 1/min
    .venv/bin/python benchmarks/storage.py --tasks 40 --days 1   # a quick run

Two stores are built, of `--small-tasks` and of `--tasks` tasks, and the same task's queries
are timed on both in turn, to show that one task's query does not grow with the fleet while the
naive scan does. Snapshots are realistic 8-GPU records built with the Snapshot model and
scored with score_snapshot: a pool of varied templates is encoded once, then each line is the
template's bytes with its timestamp and task spliced in (the build would otherwise spend most
of its time building dataclasses). Days before today are compressed as the store does it.
Figures are with a warm page cache. See docs/storage.md for recorded results.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import orjson

from flow.health.scoring import score_snapshot
from flow.health.snapshot import (
    ComponentState,
    DiskUsage,
    GpudStatus,
    GpuReading,
    HealthStatus,
    HostMetrics,
    Snapshot,
    XidError,
    format_time,
    parse_time,
)
from flow.health.storage import MetricsAggregator, MetricsStore, Sample, summarize_task

T = TypeVar("T")
GIB = 1024**3
TS_HOLDER = "2000-01-01T00:00:00.000Z"
TASK_HOLDER = "@@TASK@@"
# "Now" for the whole run: mid-day, so the 24 h window spans yesterday's and today's files.
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
TEMPLATES = 48

COMPONENTS = (
    "accelerator-nvidia-clock-speed", "accelerator-nvidia-ecc", "accelerator-nvidia-error-xid",
    "accelerator-nvidia-hw-slowdown", "accelerator-nvidia-memory", "accelerator-nvidia-nvlink",
    "accelerator-nvidia-power", "accelerator-nvidia-temperature", "accelerator-nvidia-utilization",
    "cpu", "disk", "memory",
)


# -- realistic snapshots -----------------------------------------------------------------------

def make_template(k: int) -> Snapshot:
    """One of a pool of 8-GPU snapshots: mostly healthy, some hot, idle, throttled, ECC, XID."""
    rng = random.Random(k)
    profile = rng.choices(["healthy", "hot", "idle", "throttled", "ecc", "memory", "xid"],
                          weights=[60, 10, 10, 5, 5, 5, 5])[0]
    gpus = []
    for i in range(8):
        temp = rng.uniform(38, 70) + (rng.uniform(10, 22) if profile == "hot" and i < 3 else 0)
        util = rng.uniform(0, 5) if profile == "idle" else rng.uniform(60, 99)
        mem_total = 80 * GIB
        mem_used = int(mem_total * (rng.uniform(0.91, 0.99) if profile == "memory" and i == 0
                                    else rng.uniform(0.2, 0.85)))
        ecc = rng.randrange(1, 40) if profile == "ecc" and i == 1 else 0
        gpus.append(GpuReading(
            index=i, uuid=f"GPU-{k:04x}{i:04x}-7d3e-4a1b-9c2f-{rng.getrandbits(48):012x}",
            bus_id=f"0000:{0x18 + i * 0x10:02x}:00.0", model="NVIDIA H100 80GB HBM3",
            temp_c=round(temp, 1), temp_hbm_c=round(temp + rng.uniform(2, 8), 1), slowdown_temp_c=90.0,
            mem_max_temp_c=95.0, power_w=round(rng.uniform(90, 690), 1), power_limit_w=700.0,
            mem_used_bytes=mem_used, mem_total_bytes=mem_total, util_gpu_pct=round(util, 1),
            util_mem_pct=round(util * rng.uniform(0.3, 0.7), 1),
            clock_graphics_mhz=float(rng.choice([1410, 1755, 1980])), clock_mem_mhz=2619.0,
            throttle_reasons=("hw_slowdown",) if profile == "throttled" and i == 2 else (),
            ecc_volatile_corrected=ecc, ecc_volatile_uncorrected=0,
            ecc_aggregate_corrected=ecc + 3, ecc_aggregate_uncorrected=0,
            remapped_rows_uncorrectable=0, remap_pending=False, remap_failed=False,
            nvlink_replay_errors=0, nvlink_recovery_errors=0, nvlink_crc_errors=0,
            processes=0 if profile == "idle" else 1,
        ))
    xids = ((XidError(code=79, gpu="0000:48:00.0", gpu_index=3, message="GPU has fallen off the bus",
                      time=NOW - timedelta(hours=rng.randrange(1, 60)), xid_class="fatal"),)
            if profile == "xid" else ())
    components = tuple(
        ComponentState(component=c, name=c, health="Healthy", reason="no issue found",
                       time=NOW - timedelta(seconds=30))
        for c in COMPONENTS
    )
    snapshot = Snapshot(
        timestamp=parse_time(TS_HOLDER), task_id=TASK_HOLDER, task_name=TASK_HOLDER,
        node="gpu-node-" + TASK_HOLDER, instance_type="8xH100-80GB",
        gpud=GpudStatus(reachable=True, version="v0.5.1", api_schema="v0.5+", driver_version="550.54.15",
                        cuda_version="12.4", hostname="gpu-node", gpu_product="NVIDIA H100 80GB HBM3",
                        latency_ms=round(rng.uniform(3, 40), 1)),
        gpus=tuple(gpus),
        host=HostMetrics(cpu_pct=round(rng.uniform(5, 90), 1), load1=1.2, load5=1.1, load15=1.0,
                         mem_total_bytes=2048 * GIB, mem_used_bytes=int(rng.uniform(100, 1500) * GIB),
                         mem_used_pct=40.0,
                         disks=(DiskUsage(mount="/", total_bytes=500 * GIB, used_bytes=120 * GIB,
                                          used_pct=24.0),
                                DiskUsage(mount="/data", total_bytes=8000 * GIB,
                                          used_bytes=int(rng.uniform(100, 7000) * GIB), used_pct=50.0)),
                         net_rx_bytes_per_s=1.5e8, net_tx_bytes_per_s=9.0e7, processes=812),
        components=components,
        xids=xids,
    )
    return snapshot.with_verdict(score_snapshot(snapshot))


class LineFactory:
    """Encoded templates, split around the timestamp and task id, spliced per line."""

    def __init__(self, count: int = TEMPLATES) -> None:
        self.templates = [make_template(k) for k in range(count)]
        encoded = [t.to_json() for t in self.templates]
        self.statuses = [t.status for t in self.templates]
        self.healthy = [k for k, s in enumerate(self.statuses) if s is HealthStatus.HEALTHY]
        self.heads: list[bytes] = []
        self.tails: list[list[bytes]] = []  # the rest, cut at each task-id placeholder
        for data in encoded:
            head, tail = data.split(TS_HOLDER.encode(), 1)
            self.heads.append(head)
            self.tails.append(tail.split(TASK_HOLDER.encode()))

    def for_task(self, task_id: str) -> list[bytes]:
        """Per template: everything after the timestamp, with this task's id in place."""
        return [task_id.encode().join(parts) for parts in self.tails]

    def sequence(self, rng: random.Random, n: int) -> list[int]:
        """Which template each minute uses: long healthy runs, episodes of the others."""
        out: list[int] = []
        current = rng.choice(self.healthy)
        for _ in range(n):
            if rng.random() < 0.03:
                current = (rng.choice(self.healthy) if rng.random() < 0.7
                           else rng.randrange(len(self.templates)))
            out.append(current)
        return out


# -- building the store ------------------------------------------------------------------------

def task_name(i: int) -> str:
    return f"task-{i:04d}"


def timestamps(days: int, interval_s: int) -> list[str]:
    n = days * 86400 // interval_s
    return [format_time(NOW - timedelta(seconds=interval_s * (n - i))) for i in range(n)]


_BUILD: dict[str, Any] = {}


def _build_task(i: int) -> int:
    """Write one task's days with the store's bulk writer, then compress its past days."""
    factory: LineFactory = _BUILD["factory"]
    stamps: list[str] = _BUILD["stamps"]
    store: MetricsStore = _BUILD["store"]
    task = task_name(i)
    tails = factory.for_task(task)
    heads = factory.heads
    seq = factory.sequence(random.Random(i), len(stamps))
    by_day: dict[str, list[bytes]] = {}
    for ts, k in zip(stamps, seq, strict=True):
        by_day.setdefault(ts[:10], []).append(b"".join((heads[k], ts.encode(), tails[k])))
    for day, lines in by_day.items():
        store.write_lines(task, datetime.fromisoformat(day).date(), lines)
    store.cleanup(NOW, task_id=task)
    return sum(len(lines) for lines in by_day.values())


def build(store: MetricsStore, factory: LineFactory, stamps: list[str], tasks: range, jobs: int) -> int:
    _BUILD.update(factory=factory, stamps=stamps, store=store)
    if jobs <= 1:
        return sum(map(_build_task, tasks))
    # Several writer processes on one store at once: what the store is built to allow.
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return sum(pool.imap_unordered(_build_task, tasks, chunksize=4))


# -- the measurements --------------------------------------------------------------------------

def timed(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    """Median seconds of `repeat` runs, and the last result. As timeit does, the garbage
    collector is off while timing: its passes land on whichever call happens to trigger them."""
    times: list[float] = []
    result: T
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return statistics.median(times), result


def naive_summary(root: Path, task_id: str, hours: float) -> Any:
    """The same summary without the layout: read every line of every file, keep the task's."""
    end = NOW
    start = end - timedelta(hours=hours)
    found: list[tuple[datetime, Sample]] = []
    for path in sorted(root.rglob("*.jsonl*")):
        opener: Callable[..., Any] = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            for line in f:
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(obj, dict) or obj.get("task_id") != task_id:
                    continue
                t = parse_time(obj["timestamp"])
                if start <= t <= end:
                    found.append((t, Sample.from_record(obj)))
    found.sort(key=lambda pair: pair[0])
    return summarize_task(task_id, [s for _, s in found], window_start=start, window_end=end)


def api_write_throughput(root: Path, factory: LineFactory, count: int) -> tuple[float, float]:
    """snapshots/s through write_snapshot (one call each, as the collector writes) and
    write_snapshots (one batch), with real Snapshot objects: encoding included."""
    snapshots = [
        replace(factory.templates[k % len(factory.templates)], timestamp=NOW - timedelta(seconds=count - k),
                task_id="task-api", task_name="task-api")
        for k in range(count)
    ]
    single = MetricsStore(root / "single", 7, 1, auto_cleanup=False)
    t0 = time.perf_counter()
    for s in snapshots:
        single.write_snapshot(s)
    one_by_one = count / (time.perf_counter() - t0)
    batch = MetricsStore(root / "batch", 7, 1, auto_cleanup=False)
    t0 = time.perf_counter()
    batch.write_snapshots(snapshots)
    batched = count / (time.perf_counter() - t0)
    return one_by_one, batched


def measure(stores: dict[int, MetricsStore], task: str, repeat: int) -> dict[int, dict[str, float]]:
    """Median times per store size, the sizes measured in turn within each round so that a
    change in machine load hits them alike."""
    times: dict[int, dict[str, list[float]]] = {n: {"read": [], "summary": [], "fleet": []} for n in stores}
    counts: dict[int, dict[str, float]] = {n: {} for n in stores}
    start = NOW - timedelta(hours=24)
    for store in stores.values():  # warm up: page cache, first-call costs
        MetricsAggregator(store).get_task_summary(task, 24, now=NOW)
    for _ in range(repeat):
        for size, store in stores.items():
            agg = MetricsAggregator(store)
            read_s, got = timed(lambda s=store: sum(1 for _ in s.read_snapshots(task, start, NOW)), 1)
            summary_s, summary = timed(lambda a=agg: a.get_task_summary(task, 24, now=NOW), 1)
            fleet_s, fleet = timed(lambda a=agg: a.get_fleet_summary(1, now=NOW), 1)
            times[size]["read"].append(read_s)
            times[size]["summary"].append(summary_s)
            times[size]["fleet"].append(fleet_s)
            counts[size] = {"read_n": float(got), "summary_n": float(summary.snapshots),
                            "fleet_n": float(fleet.totals.tasks)}
    return {size: {**{f"{k}_s": statistics.median(v) for k, v in times[size].items()}, **counts[size]}
            for size in stores}


def naive(store: MetricsStore, task: str) -> float:
    seconds, result = timed(lambda: naive_summary(store.root, task, 24), 1)
    expected = MetricsAggregator(store).get_task_summary(task, 24, now=NOW)
    if result.to_dict() != expected.to_dict():
        raise SystemExit("naive and store summaries differ: the benchmark is wrong")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks in the big store (default 200)")
    parser.add_argument("--small-tasks", type=int, default=20,
                        help="tasks in the smaller store (default 20)")
    parser.add_argument("--days", type=int, default=3, help="days of history per task (default 3)")
    parser.add_argument("--interval-s", type=int, default=60, help="seconds between snapshots (default 60)")
    parser.add_argument("--compress-after-days", type=int, default=0,
                        help="0 (default) compresses yesterday too, so the 24 h query reads a .gz")
    parser.add_argument("--repeat", type=int, default=5, help="runs per timed query (median)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="build processes")
    parser.add_argument("--api-writes", type=int, default=2000,
                        help="snapshots for the write_snapshot(s) throughput test")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive scans")
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the built store")
    args = parser.parse_args(argv)
    if not 0 < args.small_tasks <= args.tasks or args.days < 1 or args.interval_s < 1:
        parser.error("need 0 < --small-tasks <= --tasks, --days >= 1, --interval-s >= 1")

    base = Path(tempfile.mkdtemp(prefix="flow-storage-bench-", dir=args.dir))
    try:
        return run(args, base)
    finally:
        if args.keep:
            print(f"kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def run(args: argparse.Namespace, base: Path) -> int:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; store in {base}")
    t0 = time.perf_counter()
    factory = LineFactory()
    stamps = timestamps(args.days, args.interval_s)
    counts: dict[str, int] = {}
    for s in factory.statuses:
        counts[s.value] = counts.get(s.value, 0) + 1
    line_bytes = statistics.mean(len(h) + len(TS_HOLDER) + len(t) + 1
                                 for h, t in zip(factory.heads, factory.for_task(task_name(0)), strict=True))
    print(f"templates: {len(factory.templates)} 8-GPU snapshots {counts}, ~{line_bytes / 1024:.1f} KiB "
          f"a line; built in {time.perf_counter() - t0:.1f} s")

    one_by_one, batched = api_write_throughput(base / "api", factory, args.api_writes)
    print(f"write_snapshot (one call each): {one_by_one:,.0f} snapshots/s; "
          f"write_snapshots (batch): {batched:,.0f} snapshots/s  [{args.api_writes} snapshots]")

    store = MetricsStore(base / "metrics", 7, args.compress_after_days, auto_cleanup=False,
                         clock=lambda: NOW)
    task = task_name(0)
    stores: dict[int, MetricsStore] = {}
    for size in sorted({args.small_tasks, args.tasks}):
        store = MetricsStore(base / f"metrics-{size}", 7, args.compress_after_days, auto_cleanup=False,
                             clock=lambda: NOW)
        t0 = time.perf_counter()
        n = build(store, factory, stamps, range(size), args.jobs)
        elapsed = time.perf_counter() - t0
        stats = store.stats(scan=False)
        print(f"built {size} tasks x {args.days} d at 1/{args.interval_s}s: {n:,} snapshots in "
              f"{elapsed:.1f} s "
              f"({n / elapsed:,.0f} snapshots/s: bulk write_lines + compression, {args.jobs} processes); "
              f"{stats.files} files ({stats.compressed_files} .gz), {stats.bytes / 2**20:,.0f} MiB")
        stores[size] = store

    results = measure(stores, task, args.repeat)
    for size, store in stores.items():
        if not args.no_naive:
            results[size]["naive_s"] = naive(store, task)
    print(f"\nqueries for {task} (median of {args.repeat}; naive: once)")
    print(f"  {'tasks':>5}  {'snapshots':>10}  {'read_snapshots 24h':>18}  {'get_task_summary 24h':>20}  "
          f"{'get_fleet_summary 1h':>20}  {'naive summary':>13}  {'naive/store':>11}")
    for size, r in results.items():
        naive_s = f"{r['naive_s']:.2f} s" if "naive_s" in r else "-"
        ratio = f"{r['naive_s'] / r['summary_s']:.0f}x" if "naive_s" in r else "-"
        print(f"  {size:>5}  {size * len(stamps):>10,}  {r['read_s'] * 1000:15.1f} ms  "
              f"{r['summary_s'] * 1000:17.1f} ms  {r['fleet_s'] * 1000:17.1f} ms  {naive_s:>13}  {ratio:>11}")
    if len(results) == 2:
        small, big = (results[n] for n in sorted(results))
        print(f"  one task's 24 h summary, {max(results)} vs {min(results)} tasks: "
              f"x{big['summary_s'] / small['summary_s']:.2f} (flat is x1.00); read_snapshots: "
              f"x{big['read_s'] / small['read_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
