"""Summaries on hand-built histories with known answers; fast-path samples equal full ones."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow.health.snapshot import GpuReading, HealthStatus, Snapshot, XidError
from flow.health.storage import MetricsAggregator, MetricsStore, Sample
from flow.health.storage.summary import summarize_task
from storage.builders import MINUTE, T0, Clock, gpu, make_store, snap

H, D, C, U = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.CRITICAL, HealthStatus.UNKNOWN
BUS0 = "0000:01:00.0"

#            0    1   2   3   4   5   6   7     8   9   10  11  12
STATUSES = [H, H, D, D, C, H, H, U, D, D, H, C, C]
SCORES = [100, 90, 75, 70, 40, 85, 95, None, 65, 60, 80, 30, 20]
REASONS: dict[int, tuple[str, ...]] = {
    2: ("temp_warning",), 3: ("temp_warning", "mem_warning"), 4: ("ecc_uncorrected",),
    8: ("throttle_hw",), 9: ("throttle_hw",), 11: ("xid_fatal",), 12: ("xid_fatal",),
}
TEMPS = [60, 61, 77, 78, 88, 70, 65, None, 79, 80, 70, 72, 73]
ECC_CORRECTED = [5, 5, 6, 6, 8, 8, 8, None, 0, 2, 2, 3, 3]  # a reset (reboot) at 8
ECC_UNCORRECTED = [0, 0, 0, 0, 1, 1, 1, None, 0, 0, 0, 0, 0]
XIDS: dict[int, tuple[XidError, ...]] = {
    3: (XidError(code=13, gpu_index=0),),
    4: (XidError(code=13, gpu_index=0),),  # same (code, gpu, no time): one XID
    11: (XidError(code=79, gpu=BUS0, time=T0 + 11 * MINUTE),),
    12: (XidError(code=79, gpu=BUS0, time=T0 + 11 * MINUTE),  # still reported: the same one
         XidError(code=79, gpu=BUS0, time=T0 + 12 * MINUTE),  # a new occurrence
         XidError(code=48, gpu="0000:02:00.0", time=T0 + 12 * MINUTE)),
}


def history_snapshot(i: int) -> Snapshot:
    if STATUSES[i] is U:  # GPUd unreachable: no GPU readings at all
        return snap(T0 + i * MINUTE, status=U, score=None, gpus=())
    gpus = (
        GpuReading(index=0, temp_c=TEMPS[i], util_gpu_pct=100.0 if i == 6 else 50.0,
                   ecc_volatile_corrected=ECC_CORRECTED[i], ecc_volatile_uncorrected=ECC_UNCORRECTED[i]),
        # No temperature or utilization, and only lifetime (aggregate) ECC counters.
        GpuReading(index=1, ecc_aggregate_corrected=10 if i < 10 else 12, ecc_aggregate_uncorrected=0),
    )
    return snap(T0 + i * MINUTE, status=STATUSES[i], score=SCORES[i], reasons=REASONS.get(i, ()),
                gpus=gpus, xids=XIDS.get(i, ()))


@pytest.fixture
def store(tmp_path: Path) -> MetricsStore:
    store = make_store(tmp_path / "m", Clock(T0 + 12 * MINUTE))
    store.write_snapshots(history_snapshot(i) for i in range(13))
    store.write_snapshots([snap(T0 - timedelta(hours=2), status=C, reasons=("old",))])  # outside
    store.write_snapshots([snap(T0 + i * MINUTE, "task-b") for i in range(3)])
    store.write_snapshots([snap(T0 - timedelta(days=1), "task-old")])
    return store


def test_task_summary_on_a_known_history(store: MetricsStore) -> None:
    s = MetricsAggregator(store).get_task_summary("task-a", hours=1)
    assert (s.window_start, s.window_end) == (T0 + 12 * MINUTE - timedelta(hours=1), T0 + 12 * MINUTE)
    assert (s.snapshots, s.first_time, s.last_time) == (13, T0, T0 + 12 * MINUTE)
    assert s.task_name == "name-task-a"
    assert (s.status_current, s.score_current) == (C, 20)
    assert (s.score_min, s.score_max, s.score_avg) == (20, 100, 67.5)  # 810 / 12 scored snapshots
    assert s.status_counts == {"healthy": 5, "degraded": 4, "critical": 3, "unknown": 1}
    assert s.status_changes == 7

    periods = [(p.start, p.end, p.duration_s, p.worst_status, p.reasons, p.snapshots, p.ongoing)
               for p in s.unhealthy_periods]
    assert periods == [
        (T0 + 2 * MINUTE, T0 + 5 * MINUTE, 180.0, C, ("temp_warning", "mem_warning", "ecc_uncorrected"),
         3, False),
        (T0 + 8 * MINUTE, T0 + 10 * MINUTE, 120.0, D, ("throttle_hw",), 2, False),
        (T0 + 11 * MINUTE, T0 + 12 * MINUTE, 60.0, C, ("xid_fatal",), 2, True),
    ]
    assert s.unhealthy_s == 360.0

    g0, g1 = s.gpus
    assert (g0.index, g0.samples, g0.max_temp_c, g0.avg_util_gpu_pct) == (0, 12, 88.0, 54.17)
    # 5→6 (+1), 6→8 (+2), reset 8→0 (+0), 0→2 (+2), 2→3 (+1): 6; uncorrected 0→1 once.
    assert (g0.ecc_corrected_increase, g0.ecc_uncorrected_increase) == (6, 1)
    assert (g1.index, g1.max_temp_c, g1.avg_util_gpu_pct) == (1, None, None)
    assert (g1.ecc_corrected_increase, g1.ecc_uncorrected_increase) == (2, 0)  # aggregate fallback
    assert (s.ecc_corrected_increase, s.ecc_uncorrected_increase) == (8, 1)

    assert s.xid_count == 4
    assert s.xid_by_code == {13: 1, 48: 1, 79: 2}


def test_a_narrower_window_counts_only_what_is_inside(store: MetricsStore) -> None:
    s = MetricsAggregator(store).get_task_summary("task-a", hours=0.1, now=T0 + 12 * MINUTE)
    assert s.window_start == T0 + 6 * MINUTE and (s.snapshots, s.first_time) == (7, T0 + 6 * MINUTE)
    assert [p.start for p in s.unhealthy_periods] == [T0 + 8 * MINUTE, T0 + 11 * MINUTE]
    # The first reading inside the window is the baseline: 8 (at 6), reset to 0, 2, 2, 3, 3.
    assert s.gpus[0].ecc_corrected_increase == 3
    assert s.xid_count == 3
    # Before the history: nothing (and no error).
    empty = MetricsAggregator(store).get_task_summary("task-a", hours=1, now=T0 - timedelta(hours=5))
    assert (empty.snapshots, empty.status_current, empty.score_avg, empty.gpus) == (0, U, None, ())


def test_fleet_summary(store: MetricsStore) -> None:
    fleet = MetricsAggregator(store).get_fleet_summary()
    assert [t.task_id for t in fleet.tasks] == ["task-a", "task-b"]  # task-old has no recent data
    totals = fleet.totals
    assert (totals.tasks, totals.snapshots) == (2, 16)
    assert totals.status_current == {"healthy": 1, "degraded": 0, "critical": 1, "unknown": 0}
    assert (totals.tasks_with_unhealthy_periods, totals.unhealthy_periods, totals.status_changes) == (1, 3, 7)
    assert (totals.ecc_corrected_increase, totals.ecc_uncorrected_increase, totals.xid_count) == (8, 1, 4)


def test_a_task_of_several_nodes_is_summarised_node_by_node() -> None:
    # Two nodes, interleaved in time: one steady and healthy with GPU 0 at 0 corrected ECC
    # errors, the other degraded throughout with GPU 0 at 5. Read as one sequence, the counter
    # would "reset" and rise again at every step and the status flap at every snapshot.
    samples = []
    for i in range(6):
        at = T0 + i * MINUTE
        samples.append(Sample.from_snapshot(snap(at, gpus=(gpu(0, ecc_corrected=0),), seq=1)))
        samples.append(Sample.from_snapshot(snap(at + timedelta(seconds=1), status=D,
                                                 reasons=("throttle_hw",),
                                                 gpus=(gpu(0, ecc_corrected=5),), seq=2)))
    s = summarize_task("task-a", samples, window_start=T0, window_end=T0 + 6 * MINUTE)
    assert (s.status_changes, s.ecc_corrected_increase) == (0, 0)
    assert [(g.node, g.index, g.samples) for g in s.gpus] == [("node-1", 0, 6), ("node-2", 0, 6)]
    [period] = s.unhealthy_periods
    assert (period.node, period.snapshots, period.ongoing, period.worst_status) == ("node-2", 6, True, D)
    # The task is as well as its worst node now; its score the lowest of theirs.
    assert (s.status_current, s.score_current) == (D, 70)


def test_summaries_serialise_to_plain_json(store: MetricsStore) -> None:
    agg = MetricsAggregator(store)
    task = json.loads(json.dumps(agg.get_task_summary("task-a", 1).to_dict()))
    assert task["unhealthy_periods"][0] == {
        "start": "2026-11-20T00:02:00.000Z", "end": "2026-11-20T00:05:00.000Z", "duration_s": 180.0,
        "worst_status": "critical", "reasons": ["temp_warning", "mem_warning", "ecc_uncorrected"],
        "snapshots": 3, "ongoing": False, "node": "node-0",
    }
    assert task["xid_by_code"] == {"13": 1, "48": 1, "79": 2}
    fleet = json.loads(json.dumps(agg.get_fleet_summary(1).to_dict()))
    assert fleet["totals"]["tasks"] == 2 and len(fleet["tasks"]) == 2


@pytest.mark.parametrize("hours", [0, -1, "24", True, float("nan")])
def test_bad_hours_are_refused(store: MetricsStore, hours: Any) -> None:
    with pytest.raises(ValueError, match="hours="):
        MetricsAggregator(store).get_task_summary("task-a", hours=hours)


def test_the_summary_reads_only_valid_snapshots(store: MetricsStore) -> None:
    path = store.task_dir("task-a") / "2026-11-20.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"schema":1,"timestamp":"2026-11-20T00:12:00.000Z","gpus":[tor')
    s = MetricsAggregator(store).get_task_summary("task-a", hours=1)
    assert s.snapshots == 13 and store.corrupt_lines_skipped == 1


# -- the fast path (decoded objects) gives the same samples as full Snapshots --------------

odd = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False, width=32),
                st.text(max_size=5), st.just("12"), st.just("7.5"), st.lists(st.integers(), max_size=2))
gpu_dict = st.fixed_dictionaries({}, optional={
    k: odd for k in ("index", "temp_c", "util_gpu_pct", "ecc_volatile_corrected", "ecc_volatile_uncorrected",
                     "ecc_aggregate_corrected", "ecc_aggregate_uncorrected")})
xid_dict = st.fixed_dictionaries({}, optional={
    "code": odd, "gpu": odd, "gpu_index": odd,
    "time": st.one_of(odd, st.just("2026-11-20T00:00:01Z"), st.just("2026-11-20T01:00:00+01:00"))})
verdict_dict = st.fixed_dictionaries({}, optional={
    "score": odd, "status": st.one_of(odd, st.sampled_from(["healthy", "degraded", "critical", "unknown"])),
    "reasons": st.one_of(odd, st.lists(st.fixed_dictionaries({}, optional={"code": odd}), max_size=3))})
record = st.fixed_dictionaries(
    {"timestamp": st.sampled_from(["2026-11-20T00:00:00.000Z", "2026-11-20T05:06:07.891+00:00"])},
    optional={"task_name": odd, "gpus": st.one_of(odd, st.lists(gpu_dict, max_size=3)),
              "xids": st.one_of(odd, st.lists(xid_dict, max_size=3)),
              "verdict": st.one_of(odd, verdict_dict)},
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(record)
def test_sample_from_record_equals_sample_from_snapshot(d: dict[str, Any]) -> None:
    try:
        full = Sample.from_snapshot(Snapshot.from_dict(d))
    except (ValueError, TypeError):
        with pytest.raises((ValueError, TypeError)):
            Sample.from_record(d)
        return
    assert Sample.from_record(d) == full


def test_sample_from_a_written_snapshot_round_trips() -> None:
    for i in range(13):
        s = history_snapshot(i)
        assert Sample.from_record(s.to_dict()) == Sample.from_snapshot(s)
