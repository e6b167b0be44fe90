"""`gpud_version="v0.4.4"`: the v0.4 shapes a client must also read."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from flow.health.sim import FleetThread, start_fleet_in_thread
from sim.sim_helpers import get_json, state_of


@pytest.fixture(scope="module")
def old() -> Iterator[FleetThread]:
    handle = start_fleet_in_thread(2, scenario=["healthy", "xid-fatal"], gpud_version="v0.4.4", gpu_count=2)
    try:
        yield handle
    finally:
        handle.stop()


def test_v04_states_have_healthy_bool_and_no_time(old: FleetThread, client: httpx.Client) -> None:
    states = get_json(client, old.nodes[0], "/v1/states")
    comps = {e["component"] for e in states}
    assert {"accelerator-nvidia-error", "accelerator-nvidia-clock", "dmesg", "info"} <= comps
    assert "accelerator-nvidia-hw-slowdown" not in comps
    for e in states:
        for st in e["states"]:
            assert st["healthy"] is True and st["health"] == "Healthy"
            assert "time" not in st and "component" not in st
    temp = state_of(states, "accelerator-nvidia-temperature")
    assert temp["extra_info"]["encoding"] == "json"


def test_v04_xid_state_omits_healthy_when_false(old: FleetThread, client: httpx.Client) -> None:
    st = state_of(get_json(client, old.nodes[1], "/v1/states"), "accelerator-nvidia-error-xid")
    assert "healthy" not in st  # Go bool with omitempty
    assert st["health"] == "Unhealthy"
    assert st["reason"] == "XID 79(GPU has fallen off the bus) detected on PCI:0000:18:00"


def test_v04_events_carry_extra_info(old: FleetThread, client: httpx.Client) -> None:
    (entry,) = get_json(client, old.nodes[1], "/v1/events", components="accelerator-nvidia-error-xid",
                        startTime=int(time.time()) - 3600)
    (ev,) = entry["events"]
    assert ev["extra_info"] == {"data": "79", "device_uuid": "PCI:0000:18:00"}
    assert ev["type"] == "Fatal" and "component" not in ev


def test_v04_metrics_use_seconds_and_secondary_name(old: FleetThread, client: httpx.Client) -> None:
    node = old.nodes[0]
    metrics = get_json(client, node, "/v1/metrics", components="accelerator-nvidia-temperature", since="10m")
    (entry,) = metrics
    now = time.time()
    for m in entry["metrics"]:
        assert set(m) == {"unix_seconds", "metric_name", "metric_secondary_name", "value"}
        assert now - 700 <= m["unix_seconds"] <= now + 1  # real seconds, not milliseconds
        assert m["metric_secondary_name"] in node.gpu_uuids
    assert {m["metric_name"] for m in entry["metrics"]} >= {"accelerator_nvidia_temperature_current_celsius"}


def test_v04_has_no_machine_info(old: FleetThread, client: httpx.Client) -> None:
    r = client.get(old.nodes[0].url + "/machine-info")
    assert r.status_code == 404
    assert get_json(client, old.nodes[0], "/healthz") == {"status": "ok", "version": "v1"}
