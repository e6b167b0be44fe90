"""Scoring: each documented rule at its boundary, the bands, and properties that must always hold."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flow.config import Thresholds
from flow.health.scoring import score_snapshot, status_for_score
from flow.health.snapshot import (
    ComponentState,
    GpudStatus,
    GpuReading,
    HealthStatus,
    ReadError,
    Severity,
    Snapshot,
    XidError,
)
from flow.health.xid import classify_xid

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
GIB = 1024**3


def gpu(index: int = 0, **changes: object) -> GpuReading:
    base = GpuReading(
        index=index, uuid=f"GPU-{index}", model="NVIDIA H100 80GB HBM3", temp_c=50.0,
        slowdown_temp_c=89.0, power_w=300.0, power_limit_w=700.0, mem_used_bytes=40 * GIB,
        mem_total_bytes=80 * GIB, util_gpu_pct=60.0, ecc_volatile_corrected=0,
        ecc_volatile_uncorrected=0, remap_pending=False, remap_failed=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def snap(*gpus: GpuReading, **changes: object) -> Snapshot:
    s = Snapshot(timestamp=NOW, task_id="task-abc123", node="n1",
                 gpud=GpudStatus(reachable=True), gpus=gpus or (gpu(),))
    return replace(s, **changes)  # type: ignore[arg-type]


def codes(s: Snapshot) -> set[str]:
    return {r.code for r in score_snapshot(s).reasons}


def test_healthy_node_scores_100() -> None:
    v = score_snapshot(snap())
    assert (v.score, v.status, v.reasons) == (100, HealthStatus.HEALTHY, ())


@pytest.mark.parametrize("temp,expected", [
    (75.0, set()), (75.1, {"temp_warning"}), (85.0, {"temp_warning"}), (85.1, {"temp_critical"}),
])
def test_temperature_boundaries(temp: float, expected: set[str]) -> None:
    s = snap(gpu(temp_c=temp, slowdown_temp_c=None))
    assert codes(s) == expected


def test_temperature_critical_makes_the_node_critical_with_a_readable_reason() -> None:
    v = score_snapshot(snap(gpu(), gpu(3, temp_c=87.4, slowdown_temp_c=None)))
    assert v.status is HealthStatus.CRITICAL
    r = v.main_reason
    assert r is not None and r.code == "temp_critical" and r.gpu == 3
    assert r.message == "GPU 3 at 87 °C (critical above 85 °C)" and r.action


@pytest.mark.parametrize("util,expected", [
    (9.9, {"util_low"}), (10.0, set()), (95.0, set()), (95.1, {"util_high"}),
])
def test_utilization_boundaries(util: float, expected: set[str]) -> None:
    assert codes(snap(gpu(util_gpu_pct=util))) == expected


@pytest.mark.parametrize("used_pct,expected", [
    (90.0, set()), (90.5, {"mem_warning"}), (95.0, {"mem_warning"}), (95.5, {"mem_critical"}),
])
def test_memory_boundaries(used_pct: float, expected: set[str]) -> None:
    total = 1000 * GIB
    s = snap(gpu(mem_total_bytes=total, mem_used_bytes=int(total * used_pct / 100)))
    assert codes(s) == expected


@pytest.mark.parametrize("reason", ["hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"])
def test_hardware_throttling_is_a_significant_penalty(reason: str) -> None:
    v = score_snapshot(snap(gpu(throttle_reasons=(reason,))))
    assert {r.code for r in v.reasons} == {"throttle_hw"}
    assert v.score is not None and v.score <= 80


def test_idle_clock_reason_is_never_flagged() -> None:
    assert codes(snap(gpu(throttle_reasons=("gpu_idle", "sw_power_cap")))) == set()


def test_any_ecc_error_is_a_major_penalty() -> None:
    corrected = score_snapshot(snap(gpu(ecc_volatile_corrected=3)))
    uncorrected = score_snapshot(snap(gpu(ecc_volatile_uncorrected=1)))
    assert corrected.score is not None and corrected.score <= 80
    assert uncorrected.status is HealthStatus.CRITICAL
    assert "1 uncorrected ECC errors" in uncorrected.reasons[0].message


def test_row_remap_failed_is_critical_and_pending_degraded() -> None:
    assert score_snapshot(snap(gpu(remap_failed=True))).status is HealthStatus.CRITICAL
    assert score_snapshot(snap(gpu(remap_pending=True))).status is HealthStatus.DEGRADED


def test_near_the_devices_own_slowdown_threshold() -> None:
    # 74 °C is under the fixed warning threshold but within 5 °C of an L4-like 78 °C slowdown.
    v = score_snapshot(snap(gpu(temp_c=74.0, slowdown_temp_c=78.0)))
    assert [r.code for r in v.reasons] == ["thermal_margin"]
    assert v.reasons[0].message == "GPU 0 at 74 °C is 4 °C from its slowdown threshold of 78 °C"


def test_nvlink_errors_count_growth_against_the_previous_snapshot() -> None:
    before = snap(gpu(nvlink_crc_errors=10))
    same = snap(gpu(nvlink_crc_errors=10))
    grown = snap(gpu(nvlink_crc_errors=14))
    assert score_snapshot(same, previous=before).reasons == ()
    v = score_snapshot(grown, previous=before)
    assert [r.code for r in v.reasons] == ["nvlink_errors"] and "grew by 4" in v.reasons[0].message


@pytest.mark.parametrize("code,status,reason_code", [
    (79, HealthStatus.CRITICAL, "xid_fatal"),
    (48, HealthStatus.CRITICAL, "xid_fatal"),
    (13, HealthStatus.HEALTHY, "xid_application"),
    (31, HealthStatus.HEALTHY, "xid_application"),
    (145, HealthStatus.HEALTHY, "xid_warning"),
])
def test_xids_by_catalogue_class(code: int, status: HealthStatus, reason_code: str) -> None:
    xid = XidError(code=code, gpu="0000:18:00.0", gpu_index=1, source="event",
                   xid_class=classify_xid(code).xid_class)
    v = score_snapshot(snap(xids=(xid,)))
    assert v.status is status
    assert v.reasons[0].code == reason_code and v.reasons[0].gpu == 1


def test_application_xid_is_not_a_hardware_fault() -> None:
    assert classify_xid(13).xid_class == "application"
    assert "not hardware" in classify_xid(13).action
    assert classify_xid(79).xid_class == "fatal" and "power-cycle" in classify_xid(79).action
    assert classify_xid(99999).xid_class == "unknown"


def test_same_xid_from_state_and_event_is_one_reason() -> None:
    a = XidError(code=79, gpu="GPU-0", gpu_index=0, source="state")
    b = XidError(code=79, gpu="GPU-0", gpu_index=0, source="event")
    assert len(score_snapshot(snap(xids=(a, b))).reasons) == 1


def test_gpud_component_verdicts() -> None:
    unhealthy = ComponentState(component="accelerator-nvidia-infiniband", name="x",
                               health="Unhealthy", reason="port down",
                               repair_actions=("HARDWARE_INSPECTION",))
    degraded = replace(unhealthy, health="Degraded")
    v = score_snapshot(snap(components=(unhealthy,)))
    assert v.status is HealthStatus.CRITICAL
    # The action in words for the table; GPUd's enum kept beside it for --json and alerts.
    assert v.reasons[0].action == "Have the node's hardware inspected (RMA the part if faulty)"
    assert v.reasons[0].repair_actions == ("HARDWARE_INSPECTION",)
    assert score_snapshot(snap(components=(degraded,))).status is HealthStatus.DEGRADED
    ok = replace(unhealthy, health="Healthy")
    assert score_snapshot(snap(components=(ok,))).score == 100


def test_unreadable_component_costs_little_and_is_named() -> None:
    v = score_snapshot(snap(read_errors=(ReadError(component="accelerator-nvidia-ecc", message="bad"),)))
    assert v.status is HealthStatus.HEALTHY
    assert v.reasons[0].code == "component_unreadable" and "accelerator-nvidia-ecc" in v.reasons[0].message


def test_unreachable_gpud_is_unknown_with_the_reason() -> None:
    s = Snapshot(timestamp=NOW, task_id="t", gpud=GpudStatus(reachable=False, state="timeout",
                                                             error="no answer within 5 s"))
    v = score_snapshot(s)
    assert v.status is HealthStatus.UNKNOWN and v.score is None
    assert v.reasons[0].message == "GPUd unreachable (timeout): no answer within 5 s"
    # The reason's severity agrees with the status: an unjudged node never reads "critical".
    assert v.reasons[0].severity is Severity.UNKNOWN


def test_gpud_without_gpu_data_is_unknown() -> None:
    s = Snapshot(timestamp=NOW, task_id="t", gpud=GpudStatus(reachable=True))
    v = score_snapshot(s)
    assert v.status is HealthStatus.UNKNOWN and v.reasons[0].severity is Severity.UNKNOWN


def test_fewer_gpus_than_expected_is_critical_and_names_the_counts() -> None:
    s = snap(*(gpu(i) for i in range(6)), expected_gpus=8)
    v = score_snapshot(s)
    assert v.status is HealthStatus.CRITICAL
    assert [(r.code, r.severity, r.message) for r in v.reasons] == [
        ("gpu_missing", Severity.CRITICAL, "6 of 8 GPUs visible")]
    assert score_snapshot(replace(s, expected_gpus=6)).score == 100
    assert score_snapshot(replace(s, expected_gpus=None)).score == 100


def test_a_missing_gpu_the_kernel_log_names_is_identified() -> None:
    # An XID for a bus id GPUd does not list: the GPU NVML no longer enumerates.
    lost = XidError(code=79, gpu="0000:5d:00.0", gpu_index=None)
    v = score_snapshot(snap(*(gpu(i) for i in range(7)), expected_gpus=8, xids=(lost,)))
    missing = next(r for r in v.reasons if r.code == "gpu_missing")
    assert missing.message == "7 of 8 GPUs visible; missing: 0000:5d:00.0 (XID 79)"


def test_gpud_listing_no_gpu_on_a_gpu_node_is_critical_not_unknown() -> None:
    s = Snapshot(timestamp=NOW, task_id="t", gpud=GpudStatus(reachable=True), expected_gpus=8)
    v = score_snapshot(s)
    assert v.status is HealthStatus.CRITICAL and v.reasons[0].message == "0 of 8 GPUs visible"
    # A partial answer cannot tell "no GPU" from "not read": unknown, as without an expectation.
    partial = replace(s, read_errors=(ReadError(component="metrics", message="timed out"),))
    assert score_snapshot(partial).status is HealthStatus.UNKNOWN


def test_unreachable_node_never_gets_a_missing_gpu_reason() -> None:
    s = Snapshot(timestamp=NOW, task_id="t", expected_gpus=8,
                 gpud=GpudStatus(reachable=False, state="ssh_refused", error="refused"))
    v = score_snapshot(s)
    assert v.status is HealthStatus.UNKNOWN and [r.code for r in v.reasons] == ["gpud_unreachable"]


def test_a_silent_gpu_is_degraded_and_named() -> None:
    silent = GpuReading(index=3, uuid="GPU-3", bus_id="0000:5d:00.0", model="NVIDIA H100 80GB HBM3",
                        silent=True)
    v = score_snapshot(snap(*(gpu(i) for i in range(3)), silent, expected_gpus=4))
    assert v.status is HealthStatus.DEGRADED
    assert [(r.code, r.gpu, r.message) for r in v.reasons] == [
        ("gpu_silent", 3, "GPU 3 (0000:5d:00.0) is listed by GPUd but reports no readings")]


def test_repair_actions_are_said_in_words_in_gpuds_order() -> None:
    state = ComponentState(component="accelerator-nvidia-error-xid", name="error_xid", health="Unhealthy",
                           reason="XID 79", repair_actions=("REBOOT_SYSTEM", "HARDWARE_INSPECTION"))
    r = score_snapshot(snap(components=(state,))).reasons[0]
    assert r.action == ("Reboot the node (drain it first); then "
                        "have the node's hardware inspected (RMA the part if faulty)")
    assert r.repair_actions == ("REBOOT_SYSTEM", "HARDWARE_INSPECTION")
    newer = replace(state, repair_actions=("SOMETHING_NEWER",))
    assert score_snapshot(snap(components=(newer,))).reasons[0].action == "SOMETHING_NEWER"


@pytest.mark.parametrize("score,status", [
    (100, HealthStatus.HEALTHY), (80, HealthStatus.HEALTHY), (79, HealthStatus.DEGRADED),
    (60, HealthStatus.DEGRADED), (59, HealthStatus.CRITICAL), (0, HealthStatus.CRITICAL),
])
def test_status_bands(score: int, status: HealthStatus) -> None:
    assert status_for_score(score) is status


def test_band_edges_through_penalties() -> None:
    # Penalties are whole points: 80 is the lowest healthy score, 79 the highest degraded.
    t20 = Thresholds(penalties={"ecc_corrected": 20})
    t21 = Thresholds(penalties={"ecc_corrected": 21})
    s = snap(gpu(ecc_volatile_corrected=1))
    assert (score_snapshot(s, t20).score, score_snapshot(s, t20).status) == (80, HealthStatus.HEALTHY)
    assert (score_snapshot(s, t21).score, score_snapshot(s, t21).status) == (79, HealthStatus.DEGRADED)
    t40 = Thresholds(penalties={"ecc_corrected": 40})
    t41 = Thresholds(penalties={"ecc_corrected": 41})
    assert score_snapshot(s, t40).status is HealthStatus.DEGRADED
    assert score_snapshot(s, t41).status is HealthStatus.CRITICAL


def test_eight_hot_gpus_cost_the_same_as_one() -> None:
    one = snap(*(gpu(i, temp_c=80.0 if i == 0 else 50.0) for i in range(8)))
    eight = snap(*(gpu(i, temp_c=80.0) for i in range(8)))
    assert score_snapshot(one).score == score_snapshot(eight).score
    assert len(score_snapshot(eight).reasons) == 8


def test_thresholds_from_config_change_the_verdict() -> None:
    s = snap(gpu(temp_c=72.0, slowdown_temp_c=None))
    assert score_snapshot(s).reasons == ()
    assert [r.code for r in score_snapshot(s, Thresholds(temp_warning_c=70.0)).reasons] == ["temp_warning"]


def test_reasons_are_ordered_most_severe_first() -> None:
    v = score_snapshot(snap(gpu(util_gpu_pct=2.0, temp_c=90.0, slowdown_temp_c=None)))
    assert [r.severity for r in v.reasons] == [Severity.CRITICAL, Severity.INFO]


# Properties.

opt_float = st.none() | st.floats(min_value=-50, max_value=200, allow_nan=False)
opt_count = st.none() | st.integers(min_value=0, max_value=10**6)
gpu_strategy = st.builds(
    GpuReading,
    index=st.integers(0, 7),
    temp_c=opt_float,
    slowdown_temp_c=opt_float,
    util_gpu_pct=st.none() | st.floats(0, 100),
    mem_used_bytes=st.none() | st.integers(0, 200 * GIB),
    mem_total_bytes=st.none() | st.integers(0, 200 * GIB),
    throttle_reasons=st.lists(st.sampled_from(
        ["hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "sw_thermal_slowdown",
         "gpu_idle"]), max_size=3).map(tuple),
    ecc_volatile_corrected=opt_count,
    ecc_volatile_uncorrected=opt_count,
    ecc_aggregate_uncorrected=opt_count,
    remap_pending=st.none() | st.booleans(),
    remap_failed=st.none() | st.booleans(),
    nvlink_crc_errors=opt_count,
    silent=st.booleans(),
)
xid_strategy = st.builds(XidError, code=st.sampled_from([13, 31, 45, 48, 63, 79, 94, 145, 152, 999]),
                         gpu_index=st.none() | st.integers(0, 7))
component_strategy = st.builds(ComponentState, component=st.sampled_from(["cpu", "disk",
                               "accelerator-nvidia-ecc"]), name=st.just("n"),
                               health=st.sampled_from(["Healthy", "Unhealthy", "Degraded", "Initializing"]))
snapshot_strategy = st.builds(
    Snapshot,
    timestamp=st.just(NOW),
    task_id=st.just("task-x"),
    gpud=st.builds(GpudStatus, reachable=st.booleans()),
    gpus=st.lists(gpu_strategy, max_size=8).map(tuple),
    xids=st.lists(xid_strategy, max_size=4).map(tuple),
    components=st.lists(component_strategy, max_size=4).map(tuple),
    expected_gpus=st.none() | st.integers(0, 8),
)
fault_strategy = st.one_of(
    st.builds(lambda t: ("gpu", lambda g: {"temp_c": max(g.temp_c or t, t)}), st.floats(76, 150)),
    st.just(("gpu", lambda g: {"ecc_volatile_uncorrected": (g.ecc_volatile_uncorrected or 0) + 5})),
    st.just(("gpu", lambda g: {"ecc_volatile_corrected": (g.ecc_volatile_corrected or 0) + 5})),
    st.just(("gpu", lambda g: {"remap_failed": True})),
    st.just(("gpu", lambda g: {"remap_pending": True})),
    st.just(("gpu", lambda g: {"throttle_reasons": (*g.throttle_reasons, "hw_slowdown")})),
    st.builds(lambda c: ("xid", c), st.sampled_from([13, 48, 79, 145])),
    st.sampled_from(["Unhealthy", "Degraded"]).map(lambda h: ("component", h)),
)


@settings(max_examples=300, deadline=None)
@given(snapshot_strategy)
def test_score_is_in_range_and_status_matches(s: Snapshot) -> None:
    v = score_snapshot(s)
    if v.status is HealthStatus.UNKNOWN:
        assert v.score is None
    else:
        assert v.score is not None and 0 <= v.score <= 100
        assert v.status is status_for_score(v.score)
    for r in v.reasons:
        assert r.code and r.message


@settings(max_examples=300, deadline=None)
@given(snapshot_strategy, fault_strategy)
def test_adding_a_fault_never_raises_the_score(s: Snapshot, fault: tuple[str, object]) -> None:
    before = score_snapshot(s)
    kind, value = fault
    if kind == "gpu":
        if not s.gpus:
            return
        assert callable(value)
        faulty = replace(s, gpus=(replace(s.gpus[0], **value(s.gpus[0])), *s.gpus[1:]))
    elif kind == "xid":
        assert isinstance(value, int)
        faulty = replace(s, xids=(*s.xids, XidError(code=value, gpu_index=0)))
    else:
        assert isinstance(value, str)
        faulty = replace(s, components=(*s.components, ComponentState(component="pci", name="pci",
                                                                       health=value)))
    after = score_snapshot(faulty)
    if before.score is None:
        assert after.score is None
    else:
        assert after.score is not None and after.score <= before.score


@settings(max_examples=200, deadline=None)
@given(snapshot_strategy)
def test_unreachable_gpud_is_never_healthy(s: Snapshot) -> None:
    unreachable = replace(s, gpud=GpudStatus(reachable=False, state="not_listening"), gpus=())
    assert score_snapshot(unreachable).status is HealthStatus.UNKNOWN


def test_new_uncorrected_errors_on_a_gpu_with_lifetime_ones_never_raise_the_score() -> None:
    # Found by the property test: with an `elif`, GPU 0's lifetime-ECC reason vanished when its
    # volatile count rose, and the node's score went up from 45 to 55.
    other = gpu(1, ecc_volatile_uncorrected=1)
    before = snap(gpu(0, ecc_aggregate_uncorrected=3), other)
    after = snap(gpu(0, ecc_aggregate_uncorrected=4, ecc_volatile_uncorrected=1), other)
    assert score_snapshot(after).score <= score_snapshot(before).score  # type: ignore[operator]
    assert "ecc_aggregate_uncorrected" in {r.code for r in score_snapshot(after).reasons}
