"""Every scenario shows up where real GPUd shows it: states, blobs, metrics and events."""

from __future__ import annotations

import time

import httpx
import pytest

from flow.health.sim import GARBAGE_BODY, SCENARIOS, SimNode
from sim.sim_helpers import blob, get_json, metric_values, state_of

GPU_SCENARIOS = [s for s in SCENARIOS if not s.startswith("gpud-")]
VALID_HEALTH = {"Healthy", "Unhealthy", "Degraded", "Initializing"}
VALID_ACTIONS = {"IGNORE_NO_ACTION_REQUIRED", "REBOOT_SYSTEM", "HARDWARE_INSPECTION",
                 "CHECK_USER_APP_AND_GPU"}


@pytest.mark.parametrize("scenario", GPU_SCENARIOS)
def test_every_gpu_scenario_serves_gpud_shaped_states(
    scenario: str, by_scenario: dict[str, SimNode], client: httpx.Client
) -> None:
    node = by_scenario[scenario]
    states = get_json(client, node, "/v1/states")
    names = [e["component"] for e in states]
    assert names == sorted(names)
    assert "accelerator-nvidia-temperature" in names and "cpu" in names
    assert "docker" not in names  # registered but unsupported: left out, not an empty list
    for entry in states:
        for st in entry["states"]:
            assert st["health"] in VALID_HEALTH
            assert isinstance(st["reason"], str) and st["reason"]
            assert "time" in st
            for action in st.get("suggested_actions", {}).get("repair_actions", []):
                assert action in VALID_ACTIONS
            if "extra_info" in st:
                assert isinstance(st["extra_info"]["data"], str)
    xid = state_of(states, "accelerator-nvidia-error-xid")
    assert xid["name"] == "error_xid" and xid["time"] is None and "component" not in xid


def _temps(client: httpx.Client, node: SimNode) -> list[int]:
    st = state_of(get_json(client, node, "/v1/states"), "accelerator-nvidia-temperature")
    return [t["current_celsius_gpu_core"] for t in blob(st)["temperatures"]]


def test_healthy_node_is_healthy_everywhere(by_scenario: dict[str, SimNode], client: httpx.Client) -> None:
    node = by_scenario["healthy"]
    states = get_json(client, node, "/v1/states")
    assert {st["health"] for e in states for st in e["states"]} == {"Healthy"}
    assert all(t < 75 for t in _temps(client, node))
    utils = metric_values(get_json(client, node, "/v1/metrics", since="10m"),
                          "accelerator_nvidia_utilization_gpu_util_percent")
    assert utils and all(10 <= u <= 95 for u in utils)
    assert get_json(client, node, "/v1/events", startTime=int(time.time()) - 3 * 3600)[0]["events"] is None


def test_hot_node_reads_above_85c_in_blob_and_metrics(by_scenario: dict[str, SimNode],
                                                        client: httpx.Client) -> None:
    node = by_scenario["hot"]
    assert all(t > 85 for t in _temps(client, node))
    temps = metric_values(get_json(client, node, "/v1/metrics", since="30m"),
                          "accelerator_nvidia_temperature_current_celsius")
    assert len(temps) >= 2 * 29 and all(t > 85 for t in temps)


def test_warm_node_reads_between_75_and_85c(by_scenario: dict[str, SimNode], client: httpx.Client) -> None:
    assert all(75 < t < 85 for t in _temps(client, by_scenario["warm"]))


def test_throttled_node_has_hw_slowdown_and_power_brake(by_scenario: dict[str, SimNode],
                                                         client: httpx.Client) -> None:
    node = by_scenario["throttled"]
    states = get_json(client, node, "/v1/states")
    st = state_of(states, "accelerator-nvidia-hw-slowdown")
    assert st["health"] == "Unhealthy"
    assert "exceeded threshold" in st["reason"]
    assert st["suggested_actions"]["repair_actions"] == ["HARDWARE_INSPECTION"]
    for ev in blob(st)["clock_events"]:
        assert ev["hw_slowdown"] and ev["hw_slowdown_power_brake"]
        assert ev["reasons_bitmask"] & 0x88 == 0x88
        assert ev["hw_slowdown_reasons"]
    metrics = get_json(client, node, "/v1/metrics", components="accelerator-nvidia-hw-slowdown", since="5m")
    assert set(metric_values(metrics, "accelerator_nvidia_clock_hw_slowdown_power_brake")) == {1}


def test_ecc_node_has_uncorrected_errors_but_gpud_keeps_it_healthy(
    by_scenario: dict[str, SimNode], client: httpx.Client
) -> None:
    node = by_scenario["ecc"]
    st = state_of(get_json(client, node, "/v1/states"), "accelerator-nvidia-ecc")
    assert st["health"] == "Healthy"  # GPUd never changes health on ECC counts
    data = blob(st)
    bad = [e for e in data["ecc_errors"] if e["volatile"]["total"]["uncorrected"] > 0]
    assert [e["uuid"] for e in bad] == [node.gpu_uuids[0]]
    assert list(bad[0]["aggregate"]) == ["total", "l1_cache", "l2_cache", "dram", "sram",
                                         "gpu_device_memory", "gpu_texture_memory", "shared_memory",
                                         "gpu_register_file"]
    values = metric_values(get_json(client, node, "/v1/metrics", since="5m"),
                           "accelerator_nvidia_ecc_volatile_total_uncorrected")
    assert max(values) > 0


def test_xid_fatal_is_an_unhealthy_state_and_a_fatal_event(by_scenario: dict[str, SimNode],
                                                            client: httpx.Client) -> None:
    node = by_scenario["xid-fatal"]
    st = state_of(get_json(client, node, "/v1/states"), "accelerator-nvidia-error-xid")
    assert st["health"] == "Unhealthy"
    assert st["reason"].startswith("XID 79 (GPU has fallen off the bus) detected on GPU PCI:0000:18:00")
    assert st["reason"].endswith(f"UUID:{node.gpu_uuids[0]}")
    assert st["suggested_actions"]["repair_actions"] == ["REBOOT_SYSTEM"]

    now = int(time.time())
    events = get_json(client, node, "/v1/events", components="accelerator-nvidia-error-xid",
                      startTime=now - 3600)
    (entry,) = events
    (ev,) = entry["events"]
    assert ev["type"] == "Fatal" and ev["name"] == "error_xid"
    assert ev["component"] == "accelerator-nvidia-error-xid"
    assert "XID 79" in ev["message"]
    assert now - 3600 <= _unix(ev["time"]) <= now

    # Without startTime GPUd starts at "now": no events.
    (entry,) = get_json(client, node, "/v1/events", components="accelerator-nvidia-error-xid")
    assert entry["events"] is None
    # A window that starts after the incident has none either.
    (entry,) = get_json(client, node, "/v1/events", components="accelerator-nvidia-error-xid",
                        startTime=_unix(ev["time"]) + 1)
    assert entry["events"] is None

    metrics = get_json(client, node, "/v1/metrics", components="accelerator-nvidia-error-xid", since="5m")
    xids = [m for e in metrics for m in e["metrics"]]
    assert xids and all(m["labels"] == {"uuid": node.gpu_uuids[0], "xid": "79"} for m in xids)


def test_xid_app_is_a_warning_event_and_a_check_app_action(by_scenario: dict[str, SimNode],
                                                            client: httpx.Client) -> None:
    node = by_scenario["xid-app"]
    st = state_of(get_json(client, node, "/v1/states"), "accelerator-nvidia-error-xid")
    # GPUd only escalates Critical/Fatal XIDs; a Warning one keeps the state Healthy with its reason.
    assert st["health"] == "Healthy"
    assert st["reason"].startswith("XID 13 (Graphics Engine Exception)")
    assert st["suggested_actions"]["repair_actions"] == ["CHECK_USER_APP_AND_GPU"]
    (entry,) = get_json(client, node, "/v1/events", components="accelerator-nvidia-error-xid",
                        startTime=int(time.time()) - 3600)
    assert [e["type"] for e in entry["events"]] == ["Warning"]


@pytest.mark.parametrize(("scenario", "flag", "action", "text"), [
    ("row-remap-pending", "remapping_pending", "REBOOT_SYSTEM",
     "needs reset (detected pending row remapping)"),
    ("row-remap-failed", "remapping_failed", "HARDWARE_INSPECTION",
     "qualifies for RMA (row remapping failed, remapped due to 8 uncorrectable error(s))"),
])
def test_row_remap_scenarios(scenario: str, flag: str, action: str, text: str,
                             by_scenario: dict[str, SimNode], client: httpx.Client) -> None:
    node = by_scenario[scenario]
    st = state_of(get_json(client, node, "/v1/states"), "accelerator-nvidia-remapped-rows")
    assert st["health"] == "Unhealthy"
    assert st["reason"] == f"0000:18:00.0 {text}"
    assert st["suggested_actions"]["repair_actions"] == [action]
    rows = {r["uuid"]: r for r in blob(st)["remapped_rows"]}
    assert rows[node.gpu_uuids[0]][flag] is True
    assert rows[node.gpu_uuids[1]][flag] is False
    name = "accelerator_nvidia_remapped_rows_" + flag
    assert 1 in metric_values(get_json(client, node, "/v1/metrics", since="5m"), name)


def test_nvlink_errors_climb_on_gpu0(by_scenario: dict[str, SimNode], client: httpx.Client) -> None:
    node = by_scenario["nvlink-errors"]
    st = state_of(get_json(client, node, "/v1/states"), "accelerator-nvidia-nvlink")
    links = {g["uuid"]: g for g in blob(st)["nvlinks"]}
    assert len(links[node.gpu_uuids[0]]["states"]) == 18
    assert sum(s["crc_errors"] for s in links[node.gpu_uuids[0]]["states"]) > 0
    assert sum(s["crc_errors"] for s in links[node.gpu_uuids[1]]["states"]) == 0
    metrics = get_json(client, node, "/v1/metrics", components="accelerator-nvidia-nvlink", since="30m")
    crc = [(m["unix_seconds"], m["value"]) for e in metrics for m in e["metrics"]
           if m["name"] == "accelerator_nvidia_nvlink_crc_errors"
           and m["labels"]["uuid"] == node.gpu_uuids[0]]
    values = [v for _, v in sorted(crc)]
    assert values == sorted(values) and values[-1] > values[0]  # a counter that keeps climbing


def test_memory_pressure_is_above_95_percent(by_scenario: dict[str, SimNode], client: httpx.Client) -> None:
    node = by_scenario["memory-pressure"]
    st = state_of(get_json(client, node, "/v1/states"), "accelerator-nvidia-memory")
    assert st["health"] == "Healthy"  # GPUd does not judge memory usage
    for mem in blob(st)["memories"]:
        assert float(mem["used_percent"]) > 95
        assert mem["total_bytes"] == mem["used_bytes"] + mem["free_bytes"] + mem["reserved_bytes"]
    pcts = metric_values(get_json(client, node, "/v1/metrics", since="5m"),
                         "accelerator_nvidia_memory_used_percent")
    assert pcts and min(pcts) > 95


def test_idle_node_is_below_10_percent(by_scenario: dict[str, SimNode], client: httpx.Client) -> None:
    node = by_scenario["idle"]
    st = state_of(get_json(client, node, "/v1/states"), "accelerator-nvidia-utilization")
    assert all(u["gpu_used_percent"] < 10 for u in blob(st)["utilizations"])
    procs = state_of(get_json(client, node, "/v1/states"), "accelerator-nvidia-processes")
    assert all(p["running_processes"] is None for p in blob(procs)["processes"])
    utils = metric_values(get_json(client, node, "/v1/metrics", since="30m"),
                          "accelerator_nvidia_utilization_gpu_util_percent")
    assert utils and max(utils) < 10


def test_gpud_down_refuses_connections(by_scenario: dict[str, SimNode], client: httpx.Client) -> None:
    with pytest.raises(httpx.ConnectError):
        client.get(by_scenario["gpud-down"].url + "/healthz")


def test_gpud_slow_does_not_answer_within_a_short_deadline(by_scenario: dict[str, SimNode]) -> None:
    node = by_scenario["gpud-slow"]
    assert node.slow_delay_s == 30.0
    started = time.monotonic()
    with httpx.Client(verify=False, timeout=0.5) as c, pytest.raises(httpx.ReadTimeout):
        c.get(node.url + "/healthz")
    assert time.monotonic() - started < 10  # generous slack: the client deadline is what ended it


def test_gpud_garbage_answers_200_with_a_body_that_is_not_gpuds(by_scenario: dict[str, SimNode],
                                                                 client: httpx.Client) -> None:
    for path in ("/healthz", "/v1/states", "/v1/metrics"):
        r = client.get(by_scenario["gpud-garbage"].url + path)
        assert r.status_code == 200
        assert r.content == GARBAGE_BODY
        with pytest.raises(ValueError):
            r.json()


def _unix(rfc3339: str) -> int:
    import calendar
    return calendar.timegm(time.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ"))


def _uuids_in(value: object) -> set[str]:
    """Every GPU UUID anywhere in a decoded JSON value (blob fields, metric labels)."""
    if isinstance(value, dict):
        return set().union(*(_uuids_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_uuids_in(v) for v in value))
    return {value} if isinstance(value, str) and value.startswith("GPU-") else set()


def _read_gpus(client: httpx.Client, node: SimNode) -> tuple[list[dict[str, str]], set[str], set[str]]:
    """machine-info's GPU list, the UUIDs the metrics name and the UUIDs the state blobs name."""
    listed = get_json(client, node, "/machine-info")["gpuInfo"]["gpus"]
    metrics = get_json(client, node, "/v1/metrics", since="10m")
    in_metrics = _uuids_in([m.get("labels", {}) for entry in metrics for m in entry["metrics"]])
    in_blobs: set[str] = set()
    for entry in get_json(client, node, "/v1/states"):
        for st in entry["states"]:
            if "extra_info" in st and entry["component"] != "accelerator-nvidia-error-xid":
                in_blobs |= _uuids_in(blob(st))
    return listed, in_metrics, in_blobs


def test_gpu_missing_is_absent_from_every_answer(
    by_scenario: dict[str, SimNode], client: httpx.Client
) -> None:
    # As after a reboot without the GPU: NVML enumerates one fewer and the driver numbers the rest.
    listed, in_metrics, in_blobs = _read_gpus(client, by_scenario["gpu-missing"])
    assert [g["minorID"] for g in listed] == ["0"]
    assert in_metrics == in_blobs == {g["uuid"] for g in listed}
    healthy, _, _ = _read_gpus(client, by_scenario["healthy"])
    assert len(healthy) == 2


def test_gpu_silent_is_listed_but_never_read(by_scenario: dict[str, SimNode], client: httpx.Client) -> None:
    # Lost after GPUd started: machine-info (NVML's list at start) still names it, no reading does.
    listed, in_metrics, in_blobs = _read_gpus(client, by_scenario["gpu-silent"])
    assert [g["minorID"] for g in listed] == ["0", "1"]
    answering, lost = listed[0]["uuid"], listed[1]["uuid"]
    assert in_metrics == in_blobs == {answering}
    assert lost not in in_metrics | in_blobs
