"""Every GPUd response sample in tests/data/gpud read by the pure adapter (no I/O)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from flow.health.gpud import SCHEMA_V04, SCHEMA_V05, snapshot_from_responses
from flow.health.scoring import score_snapshot
from flow.health.snapshot import HealthStatus, Snapshot
from gpud.servers import load

GPU0 = "GPU-3f9c1a52-8e47-4b0d-a6d2-5c71e09b4f18"  # bus 0000:18:00.0, busy
GPU1 = "GPU-b84e07d3-19ca-4f65-9e2b-0d6a3c58e7a1"  # bus 0000:2a:00.0, idle


def h100(**kwargs: Any) -> Snapshot:
    return snapshot_from_responses(load("v1_states_h100_constructed.json"), task_id="t", **kwargs)


def blob_of(states: list[dict[str, Any]], component: str) -> dict[str, Any]:
    entry = next(e for e in states if e["component"] == component)
    return dict(json.loads(entry["states"][0]["extra_info"]["data"]))


def set_blob(states: list[dict[str, Any]], component: str, data: Any) -> None:
    entry = next(e for e in states if e["component"] == component)
    entry["states"][0]["extra_info"]["data"] = data if isinstance(data, str) else json.dumps(data)


def test_h100_states_give_every_reading_of_both_gpus() -> None:
    snap = h100()
    assert [g.uuid for g in snap.gpus] == [GPU0, GPU1]  # bus id order without machine-info
    g0, g1 = snap.gpus
    assert (g0.index, g0.bus_id, g0.model) == (0, "0000:18:00.0", "NVIDIA H100 80GB HBM3")
    assert (g0.temp_c, g0.temp_hbm_c, g0.slowdown_temp_c, g0.mem_max_temp_c) == (61, 68, 89, 95)
    assert (g0.power_w, g0.power_limit_w) == (512.347, 700.0)  # mW -> W
    assert (g0.mem_used_bytes, g0.mem_total_bytes) == (66574090240, 85520809984)
    assert (g0.util_gpu_pct, g0.util_mem_pct) == (87, 41)
    assert (g0.clock_graphics_mhz, g0.clock_mem_mhz) == (1980, 2619)
    assert (g0.ecc_volatile_corrected, g0.ecc_volatile_uncorrected) == (0, 0)
    assert (g0.ecc_aggregate_corrected, g0.ecc_aggregate_uncorrected) == (0, 0)
    assert (g0.remapped_rows_uncorrectable, g0.remap_pending, g0.remap_failed) == (0, False, False)
    assert (g0.nvlink_replay_errors, g0.nvlink_recovery_errors, g0.nvlink_crc_errors) == (0, 0, 0)
    assert g0.processes == 1 and g0.throttle_reasons == ()
    assert g1.processes == 0  # running_processes is null on an idle GPU
    assert g1.throttle_reasons == ("gpu_idle",)  # reasons_bitmask 1


def test_h100_states_give_host_metrics_components_and_no_errors() -> None:
    snap = h100()
    assert snap.host is not None
    host = snap.host
    assert (host.cpu_pct, host.load1, host.load5, host.load15) == (18.42, 11.37, 10.85, 9.96)
    assert (snap.host.mem_total_bytes, snap.host.mem_used_bytes, snap.host.mem_used_pct) == (
        540893806592, 78123456512, 14.44)
    [root] = snap.host.disks
    assert (root.mount, root.total_bytes, root.used_bytes) == ("/", 1888587489280, 229144502272)
    assert root.used_pct == pytest.approx(100 * 229144502272 / (229144502272 + 1565013612544))
    assert len(snap.components) == 17 and {c.health for c in snap.components} == {"Healthy"}
    xid_state = next(c for c in snap.components if c.component == "accelerator-nvidia-error-xid")
    assert (xid_state.name, xid_state.time) == ("error_xid", None)
    assert snap.read_errors == () and snap.xids == ()
    assert snap.gpud.reachable and snap.gpud.state == "ok" and snap.gpud.api_schema == SCHEMA_V05
    assert snap.verdict is None  # unscored: the caller scores
    verdict = score_snapshot(snap)
    assert verdict.status is HealthStatus.HEALTHY
    assert [r.code for r in verdict.reasons] == ["util_low"]  # GPU 1 is idle


def test_machine_info_minor_ids_order_the_gpus_and_fill_the_status() -> None:
    info = load("machine_info_from_test.json")
    info["bootID"] = "boot-1"
    info["gpuInfo"]["gpus"] = [
        {"uuid": GPU0, "busID": "00000000:18:00.0", "minorID": "1"},
        {"uuid": GPU1, "busID": "00000000:2A:00.0", "minorID": "0"},
    ]
    snap = h100(machine_info=info)
    assert [(g.index, g.uuid) for g in snap.gpus] == [(0, GPU1), (1, GPU0)]
    assert snap.gpus[0].bus_id == "0000:2a:00.0"  # NVML's 8-digit domain, GPUd's 4: one GPU
    assert len(snap.gpus) == 2
    assert snap.gpus[0].model == "NVIDIA A100-SXM4-40GB"  # machine-info's product wins
    status = snap.gpud
    assert (status.version, status.driver_version, status.cuda_version, status.boot_id) == (
        "1.0.0", "470.82.01", "11.7.0", "boot-1")
    assert status.gpu_product == "NVIDIA A100-SXM4-40GB"


def test_machine_info_alone_lists_its_gpu_with_no_readings() -> None:
    snap = snapshot_from_responses([], None, None, load("machine_info_from_test.json"), task_id="t")
    [gpu] = snap.gpus
    assert (gpu.index, gpu.uuid, gpu.temp_c, gpu.model) == (0, "GPU-abc123", None, "NVIDIA A100-SXM4-40GB")
    assert snap.read_errors == ()


def test_xid_state_from_the_docs_gives_a_fatal_xid() -> None:
    snap = snapshot_from_responses(load("v1_states_xid_unhealthy_docs.json"), task_id="t")
    [xid] = snap.xids
    assert (xid.code, xid.gpu, xid.gpu_index, xid.source, xid.xid_class) == (
        74, "PCI:0000:04:00", None, "state", "fatal")
    assert "NVLINK Error" in xid.message
    [state] = snap.components
    assert (state.health, state.repair_actions) == ("Unhealthy", ("REBOOT_SYSTEM",))


def test_plugin_only_states_give_a_component_and_no_gpus() -> None:
    snap = snapshot_from_responses(load("v1_states_plugin_only_docs.json"), task_id="t")
    [state] = snap.components
    assert (state.component, state.name, state.health) == ("echo", "check", "Healthy")
    assert state.reason == "no data yet"
    assert snap.gpus == () and snap.read_errors == ()
    assert score_snapshot(snap).status is HealthStatus.UNKNOWN  # GPUd answered, but no GPU data


def test_metrics_from_gpud_test_with_unknown_names_are_ignored() -> None:
    snap = snapshot_from_responses([], None, load("v1_metrics_from_test.json"), task_id="t")
    assert snap.gpus == () and snap.host is None and snap.read_errors == ()
    assert snap.gpud.api_schema == SCHEMA_V05


def test_constructed_metrics_fill_gpu_and_host_readings() -> None:
    snap = snapshot_from_responses([], None, load("v1_metrics_constructed.json"), task_id="t")
    [gpu] = snap.gpus
    assert (gpu.uuid, gpu.temp_c, gpu.slowdown_temp_c, gpu.power_w) == (
        "GPU-46a3bbe2-3e87-3dde-b464-a03eba0c21d7", 34, 87, 71.0)
    assert snap.host is not None and snap.host.load1 == 0.42
    assert [(d.mount, d.used_bytes) for d in snap.host.disks] == [("/", 53687091200)]
    assert snap.xids == ()  # the xid counter metric is not an XID report


def test_blob_readings_win_over_metrics_and_metrics_fill_the_gaps() -> None:
    metrics = [{"component": "accelerator-nvidia-temperature", "metrics": [
        {"unix_seconds": 1748797140000, "name": "accelerator_nvidia_temperature_current_celsius",
         "labels": {"uuid": GPU0}, "value": 99},
    ]}, {"component": "accelerator-nvidia-gpm", "metrics": [
        {"unix_seconds": 1748797140000, "name": "accelerator_nvidia_clock_hw_slowdown",
         "labels": {"uuid": GPU0}, "value": 1},
    ]}]
    states = load("v1_states_h100_constructed.json")
    set_blob(states, "accelerator-nvidia-hw-slowdown", {})  # no clock events in the blob
    snap = snapshot_from_responses(states, None, metrics, task_id="t")
    assert snap.gpus[0].temp_c == 61
    assert snap.gpus[0].throttle_reasons == ("hw_slowdown",)


def test_the_newest_metric_sample_wins() -> None:
    rows = [{"unix_seconds": ts, "name": "accelerator_nvidia_temperature_current_celsius",
             "labels": {"uuid": GPU0}, "value": value}
            for ts, value in ((1748797200000, 70), (1748797260000, 72), (1748797140000, 60))]
    metrics = [{"component": "accelerator-nvidia-temperature", "metrics": rows}]
    snap = snapshot_from_responses([], None, metrics, task_id="t")
    assert snap.gpus[0].temp_c == 72


def test_info_and_healthz_bodies_in_the_wrong_place_are_read_errors() -> None:
    snap = snapshot_from_responses(load("v1_info_from_test.json"), load("healthz.json"), task_id="t")
    assert [e.component for e in snap.read_errors] == ["test-comp", "events"]
    assert snap.gpud.reachable


# --- tolerance: what GPUd may send, or a broken GPUd may send -----------------------------------

def test_a_malformed_blob_costs_only_that_components_readings() -> None:
    states = load("v1_states_h100_constructed.json")
    set_blob(states, "accelerator-nvidia-temperature", "{not json")
    snap = snapshot_from_responses(states, task_id="t")
    [error] = snap.read_errors
    assert error.component == "accelerator-nvidia-temperature" and "not JSON" in error.message
    assert snap.gpus[0].temp_c is None and snap.gpus[0].power_w == 512.347
    assert any(c.component == "accelerator-nvidia-temperature" for c in snap.components)  # verdict kept


@pytest.mark.parametrize("data, words", [
    ([1, 2], "not an object"),
    ({"temperatures": {"uuid": GPU0}}, "not an array"),
    ({"temperatures": ["GPU-x"]}, "not an array of objects"),
])
def test_blobs_of_the_wrong_shape_are_read_errors(data: Any, words: str) -> None:
    states = load("v1_states_h100_constructed.json")
    set_blob(states, "accelerator-nvidia-temperature", data)
    snap = snapshot_from_responses(states, task_id="t")
    assert [e.component for e in snap.read_errors] == ["accelerator-nvidia-temperature"]
    assert words in snap.read_errors[0].message


def test_extra_info_data_that_is_not_a_string_is_a_read_error() -> None:
    states = load("v1_states_h100_constructed.json")
    entry = next(e for e in states if e["component"] == "accelerator-nvidia-power")
    entry["states"][0]["extra_info"]["data"] = {"powers": []}
    snap = snapshot_from_responses(states, task_id="t")
    assert [e.component for e in snap.read_errors] == ["accelerator-nvidia-power"]
    assert snap.gpus[0].power_w is None and snap.gpus[0].temp_c == 61


def test_a_state_without_blob_is_no_error() -> None:
    """Before the first check, or behind an NVML gate, GPUd sends no extra_info at all."""
    states = load("v1_states_h100_constructed.json")
    entry = next(e for e in states if e["component"] == "accelerator-nvidia-memory")
    entry["states"] = [{"time": None, "component": entry["component"], "name": entry["component"],
                        "health": "Healthy", "reason": "no data yet"}]
    snap = snapshot_from_responses(states, task_id="t")
    assert snap.read_errors == () and snap.gpus[0].mem_used_bytes is None


def test_a_machine_without_nvml_has_host_metrics_and_no_gpus() -> None:
    states = [e for e in load("v1_states_h100_constructed.json")
              if not e["component"].startswith("accelerator-nvidia-")]
    snap = snapshot_from_responses(states, task_id="t")
    assert snap.gpus == () and snap.host is not None and snap.host.cpu_pct == 18.42
    assert snap.read_errors == ()
    verdict = score_snapshot(snap)
    assert verdict.status is HealthStatus.UNKNOWN and verdict.reasons[0].code == "no_gpu_data"


def test_unknown_fields_and_components_are_ignored() -> None:
    states = load("v1_states_h100_constructed.json")
    for entry in states:
        entry["future_field"] = {"x": 1}
        entry["states"][0]["new_key"] = [1, 2, 3]
    blob = blob_of(states, "accelerator-nvidia-temperature")
    blob["temperatures"][0]["new_sensor_celsius"] = 12
    set_blob(states, "accelerator-nvidia-temperature", blob)
    states.append({"component": "accelerator-nvidia-quantum-flux", "states": [
        {"time": None, "name": "q", "health": "Healthy", "extra_info": {"data": "[[["}}]})
    snap = snapshot_from_responses(states, task_id="t")
    assert snap.read_errors == () and snap.gpus[0].temp_c == 61 and len(snap.components) == 18


def test_unsupported_readings_are_none_not_zero() -> None:
    states = load("v1_states_h100_constructed.json")
    util = blob_of(states, "accelerator-nvidia-utilization")
    util["utilizations"][1].update(gpu_used_percent=0, memory_used_percent=0, supported=False)
    set_blob(states, "accelerator-nvidia-utilization", util)
    power = blob_of(states, "accelerator-nvidia-power")
    power["powers"][1].update(get_power_usage_supported=False, enforced_limit_milli_watts=0)
    set_blob(states, "accelerator-nvidia-power", power)
    temps = blob_of(states, "accelerator-nvidia-temperature")
    temps["temperatures"][1].update(hbm_temperature_supported=False, current_celsius_hbm=0,
                                    threshold_celsius_slowdown=0)
    set_blob(states, "accelerator-nvidia-temperature", temps)
    ecc = blob_of(states, "accelerator-nvidia-ecc")
    ecc["ecc_modes"][1]["enabled_current"] = False
    set_blob(states, "accelerator-nvidia-ecc", ecc)
    g1 = snapshot_from_responses(states, task_id="t").gpus[1]
    assert (g1.util_gpu_pct, g1.util_mem_pct, g1.power_w) == (None, None, None)
    assert g1.power_limit_w == 700.0  # the management limit stands in, as in GPUd's used_percent
    assert (g1.temp_hbm_c, g1.slowdown_temp_c, g1.temp_c) == (None, None, 34)
    assert g1.ecc_volatile_uncorrected is None and g1.ecc_aggregate_corrected is None


def test_fault_readings_come_through() -> None:
    states = load("v1_states_h100_constructed.json")
    ecc = blob_of(states, "accelerator-nvidia-ecc")
    ecc["ecc_errors"][0]["volatile"]["total"] = {"corrected": 7, "uncorrected": 2}
    ecc["ecc_errors"][0]["aggregate"]["total"] = {"corrected": 70, "uncorrected": 3}
    set_blob(states, "accelerator-nvidia-ecc", ecc)
    rows = blob_of(states, "accelerator-nvidia-remapped-rows")
    rows["remapped_rows"][0].update(remapped_due_to_uncorrectable_errors=4, remapping_pending=True)
    set_blob(states, "accelerator-nvidia-remapped-rows", rows)
    nvlink = blob_of(states, "accelerator-nvidia-nvlink")
    nvlink["nvlinks"][0]["states"][3].update(replay_errors=5, crc_errors=9)
    nvlink["nvlinks"][0]["states"][7].update(recovery_errors=1, crc_errors=1)
    set_blob(states, "accelerator-nvidia-nvlink", nvlink)
    events = blob_of(states, "accelerator-nvidia-hw-slowdown")
    events["clock_events"][0].update(reasons_bitmask=0x8 | 0x80 | 0x4, hw_slowdown=True,
                                     hw_slowdown_power_brake=True)
    set_blob(states, "accelerator-nvidia-hw-slowdown", events)
    g0 = snapshot_from_responses(states, task_id="t").gpus[0]
    assert (g0.ecc_volatile_corrected, g0.ecc_volatile_uncorrected) == (7, 2)
    assert (g0.ecc_aggregate_corrected, g0.ecc_aggregate_uncorrected) == (70, 3)
    assert (g0.remapped_rows_uncorrectable, g0.remap_pending, g0.remap_failed) == (4, True, False)
    assert (g0.nvlink_replay_errors, g0.nvlink_recovery_errors, g0.nvlink_crc_errors) == (5, 1, 10)
    assert g0.throttle_reasons == ("sw_power_cap", "hw_slowdown", "hw_power_brake_slowdown")


def test_per_gpu_array_order_does_not_move_gpu_indices() -> None:
    """GPUd walks a Go map for most components: the record order changes between answers."""
    states = load("v1_states_h100_constructed.json")
    for component in ("accelerator-nvidia-temperature", "accelerator-nvidia-power"):
        blob = blob_of(states, component)
        key = next(iter(blob))
        blob[key].reverse()
        set_blob(states, component, blob)
    shuffled = snapshot_from_responses(states, task_id="t")
    assert [(g.uuid, g.temp_c) for g in shuffled.gpus] == [(GPU0, 61), (GPU1, 34)]


# --- v0.4 -------------------------------------------------------------------------------------

def as_v04_states(states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The H100 sample in v0.4's State shape: no time/component, a `healthy` bool (omitempty)."""
    out = []
    for entry in copy.deepcopy(states):
        converted = []
        for state in entry["states"]:
            state.pop("time", None)
            state.pop("component", None)
            if state.get("health") == "Healthy":
                state["healthy"] = True
            converted.append(state)
        out.append({"component": entry["component"], "states": converted})
    return out


def as_v04_metrics(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """v0.5 metric rows as v0.4 wrote them: metric_name, metric_secondary_name, real seconds."""
    out = []
    for entry in metrics:
        rows = [{"unix_seconds": row["unix_seconds"] // 1000, "metric_name": row["name"],
                 "metric_secondary_name": next(iter(row["labels"].values())), "value": row["value"]}
                for row in entry["metrics"]]
        out.append({"component": entry["component"], "metrics": rows})
    return out


def test_v04_states_and_metrics_are_read() -> None:
    states = as_v04_states(load("v1_states_h100_constructed.json"))
    for entry in states:  # v0.4 had no blobs in this shape for these; readings come from metrics
        for state in entry["states"]:
            state.pop("extra_info", None)
    states.append({"component": "accelerator-nvidia-error", "states": [
        {"name": "error", "health": "Unhealthy",
         "reason": "XID 79(GPU has fallen off the bus) detected on PCI:0000:18:00"}]})
    metrics = as_v04_metrics(load("v1_metrics_constructed.json"))
    snap = snapshot_from_responses(states, None, metrics, task_id="t")
    assert snap.gpud.api_schema == SCHEMA_V04 and snap.read_errors == ()
    [gpu] = snap.gpus
    assert (gpu.uuid, gpu.temp_c, gpu.slowdown_temp_c, gpu.power_w) == (
        "GPU-46a3bbe2-3e87-3dde-b464-a03eba0c21d7", 34, 87, 71.0)
    assert snap.host is not None and snap.host.load1 == 0.42
    assert [(x.code, x.gpu) for x in snap.xids] == [(79, "PCI:0000:18:00")]


def test_v04_healthy_bool_decides_health_when_health_is_missing() -> None:
    states = [{"component": "accelerator-nvidia-temperature", "states": [
        {"name": "temperature", "healthy": True, "reason": "ok"}]},
        {"component": "accelerator-nvidia-memory", "states": [
            {"name": "memory_usage", "reason": "bad"}]}]  # healthy:false is omitted (omitempty)
    snap = snapshot_from_responses(states, task_id="t")
    assert snap.gpud.api_schema == SCHEMA_V04
    assert [c.health for c in snap.components] == ["Healthy", "Unhealthy"]


def test_v04_blobs_under_their_old_keys_are_read() -> None:
    sample = load("v1_states_h100_constructed.json")
    temps = blob_of(sample, "accelerator-nvidia-temperature")["temperatures"]
    clocks = blob_of(sample, "accelerator-nvidia-hw-slowdown")["clock_events"]
    for record in clocks:
        record["hw_slowdown_thermal"] = record.pop("hw_thermal_slowdown")
    clocks[0]["hw_slowdown_thermal"] = True
    states = [
        {"component": "accelerator-nvidia-temperature", "states": [{"name": "temperature", "healthy": True,
         "extra_info": {"data": json.dumps({"usages_smi": [], "usages_nvml": temps}), "encoding": "json"}}]},
        {"component": "accelerator-nvidia-clock", "states": [{"name": "hw_slowdown", "healthy": True,
         "extra_info": {"data": json.dumps({"hw_slowdown_smi": {"errors": []}, "clock_events_nvml": clocks}),
                        "encoding": "json"}}]},
    ]
    snap = snapshot_from_responses(states, task_id="t")
    assert [(g.temp_c, g.throttle_reasons) for g in snap.gpus] == [
        (61, ("hw_thermal_slowdown",)), (34, ("gpu_idle",))]
