"""The metric vocabulary: names, units, labels, and what becomes (and never becomes) a sample."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path

from flow.health.sinks.vocabulary import (
    ALL_METRICS,
    GPU_LABELS,
    METRICS,
    NODE_LABELS,
    MetricType,
    latest_per_node,
    metric_families,
    snapshot_families,
    spec,
)
from flow.health.snapshot import HealthStatus, XidError

from .snapshots import snapshot

_NAME = re.compile(r"^flow_[a-z0-9_]+$")


def _samples(snap, name):  # type: ignore[no-untyped-def]
    for family in snapshot_families(snap):
        if family.spec.name == name:
            return [(s.label_dict, s.value) for s in family.samples]
    return []


def test_names_follow_prometheus_conventions() -> None:
    names = [m.name for m in ALL_METRICS]
    assert len(names) == len(set(names))
    for metric in ALL_METRICS:
        assert _NAME.match(metric.name), metric.name
        assert metric.name.endswith("_total") == (metric.type is MetricType.COUNTER), metric.name
        if metric.unit:
            assert metric.family_name.endswith("_" + metric.unit), metric.name
        assert metric.help and metric.source


def test_every_metric_has_a_sample_for_a_fully_reported_node() -> None:
    snap = snapshot(
        xids=(XidError(code=79, gpu_index=1, xid_class="fatal"),),
        gpu_changes={"throttle_reasons": ("hw_slowdown",)},
    )
    produced = {f.spec.name for f in snapshot_families(snap)}
    assert produced == {m.name for m in METRICS}


def test_labels_per_scope_and_their_values() -> None:
    snap = snapshot(gpus=2)
    node_sample = _samples(snap, "flow_node_health_score")
    assert node_sample == [
        (
            {
                "task_id": "task-abc123",
                "task_name": "task-abc123-name",
                "node": "gpu-node-1",
                "instance_type": "8xH100",
            },
            100.0,
        )
    ]
    temps = _samples(snap, "flow_gpu_temperature_celsius")
    assert [tuple(labels) for labels, _ in temps] == [GPU_LABELS, GPU_LABELS]
    assert [(labels["gpu"], labels["model"], value) for labels, value in temps] == [
        ("0", "NVIDIA H100 80GB HBM3", 60.0),
        ("1", "NVIDIA H100 80GB HBM3", 60.0),
    ]
    assert temps[0][0]["uuid"].startswith("GPU-00000000")
    assert spec("flow_node_health_score").label_names == NODE_LABELS


def test_units_are_converted_once() -> None:
    snap = snapshot(gpus=1)
    assert _samples(snap, "flow_gpu_graphics_clock_hertz")[0][1] == 1980e6
    assert _samples(snap, "flow_node_scrape_duration_seconds")[0][1] == 0.0125
    assert _samples(snap, "flow_gpu_memory_total_bytes")[0][1] == 80 * 1024**3
    assert _samples(snap, "flow_node_snapshot_timestamp_seconds")[0][1] == snap.timestamp.timestamp()


def test_an_unreported_reading_is_no_sample_never_zero() -> None:
    snap = snapshot(
        gpus=1,
        gpu_changes={
            "temp_c": None,
            "power_w": None,
            "util_gpu_pct": None,
            "clock_graphics_mhz": None,
            "ecc_volatile_uncorrected": None,
        },
    )
    assert _samples(snap, "flow_gpu_temperature_celsius") == []
    assert _samples(snap, "flow_gpu_power_watts") == []
    # No reading says NVML answered, so "no throttle reasons" is not exported as "not throttled".
    assert _samples(snap, "flow_gpu_throttle_active") == []
    ecc = {(labels["type"], labels["scope"]) for labels, _ in _samples(snap, "flow_gpu_ecc_errors_total")}
    assert ("uncorrected", "volatile") not in ecc and ("corrected", "volatile") in ecc


def test_nan_and_infinity_never_become_samples() -> None:
    snap = snapshot(gpus=1, gpu_changes={"temp_c": math.nan, "power_w": math.inf})
    assert _samples(snap, "flow_gpu_temperature_celsius") == []
    assert _samples(snap, "flow_gpu_power_watts") == []
    values = [s.value for f in snapshot_families(snap) for s in f.samples]
    assert all(math.isfinite(v) for v in values)


def test_status_is_a_labelled_gauge_with_one_active_status() -> None:
    hot = snapshot(temp_c=90.0)
    assert hot.status is HealthStatus.CRITICAL
    statuses = {labels["status"]: value for labels, value in _samples(hot, "flow_node_status")}
    assert statuses == {"healthy": 0.0, "degraded": 0.0, "critical": 1.0, "unknown": 0.0}
    reasons = {
        (labels["code"], labels["severity"]): value
        for labels, value in _samples(hot, "flow_node_health_reasons")
    }
    assert reasons[("temp_critical", "critical")] == 2.0  # both GPUs


def test_unreachable_node_is_unknown_without_score() -> None:
    down = snapshot(reachable=False)
    assert _samples(down, "flow_node_health_score") == []
    assert _samples(down, "flow_node_scrape_success")[0][1] == 0.0
    assert _samples(down, "flow_node_scrape_state")[0][0]["state"] == "timeout"
    statuses = {labels["status"]: value for labels, value in _samples(down, "flow_node_status")}
    assert statuses["unknown"] == 1.0
    unscored = snapshot(scored=False)
    assert {labels["status"]: v for labels, v in _samples(unscored, "flow_node_status")}["unknown"] == 1.0


def test_xids_are_counted_by_gpu_and_code() -> None:
    snap = snapshot(
        xids=(
            XidError(code=79, gpu_index=1, xid_class="fatal"),
            XidError(code=79, gpu_index=1, xid_class="fatal", source="event"),
            XidError(code=13, gpu="00000000:0A:00.0", xid_class="application"),  # found by bus id: GPU 0
            XidError(code=31, xid_class="application"),  # no GPU named
        )
    )
    xids = {
        (labels["gpu"], labels["code"], labels["xid_class"]): (labels["uuid"], value)
        for labels, value in _samples(snap, "flow_gpu_xid_errors")
    }
    assert xids[("1", "79", "fatal")][1] == 2.0
    assert xids[("0", "13", "application")] == ("GPU-00000000-aaaa-bbbb-cccc-000000000000", 1.0)
    assert xids[("", "31", "application")] == ("", 1.0)


def test_throttle_reasons_known_ones_zero_and_extra_ones_one() -> None:
    snap = snapshot(gpus=1, gpu_changes={"throttle_reasons": ("sw_power_cap", "gpu_idle")})
    active = {labels["reason"]: value for labels, value in _samples(snap, "flow_gpu_throttle_active")}
    assert active["sw_power_cap"] == 1.0 and active["gpu_idle"] == 1.0
    assert active["hw_slowdown"] == 0.0 and active["hw_thermal_slowdown"] == 0.0


def test_metric_families_merge_snapshots_and_latest_per_node_keeps_newest() -> None:
    old = snapshot(node="a", temp_c=50.0)
    new = snapshot(node="a", temp_c=70.0, when=old.timestamp + timedelta(seconds=30))
    other = snapshot(node="b")
    assert [s.node for s in latest_per_node([new, other, old])] == ["a", "b"]
    assert latest_per_node([old, new, other])[0] is new
    families = {f.spec.name: f for f in metric_families([old, other])}
    assert len(families["flow_node_health_score"].samples) == 2


def test_docs_list_every_metric_with_its_type() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    for metric in ALL_METRICS:
        assert f"| `{metric.name}` | {metric.type.value} |" in doc, metric.name
