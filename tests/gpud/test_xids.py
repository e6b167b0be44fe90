"""XIDs from GPUd's texts (state reasons, event messages) and events' payloads."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from flow.health.gpud import parse_xid_text, snapshot_from_responses
from flow.health.gpud.xids import parse_xid_payload
from flow.health.scoring import score_snapshot
from flow.health.snapshot import HealthStatus
from gpud.servers import load

GPU0 = "GPU-3f9c1a52-8e47-4b0d-a6d2-5c71e09b4f18"  # bus 0000:18:00.0
GPU1 = "GPU-b84e07d3-19ca-4f65-9e2b-0d6a3c58e7a1"  # bus 0000:2a:00.0
LATEST_79 = (f"XID 79 ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS GPU has fallen off the bus detected on "
             f"GPU PCI:0000:18:00 UUID:{GPU0}")


@pytest.mark.parametrize("text, code, gpu", [
    (LATEST_79, 79, GPU0),
    (f"XID 79 (GPU has fallen off the bus) detected on GPU PCI:0000:18:00 UUID:{GPU0}", 79, GPU0),  # v0.5.1
    ("XID 79(GPU has fallen off the bus) detected on PCI:0000:2a:00", 79, "PCI:0000:2a:00"),  # older
    ("XID 74 (NVLINK Error) detected on PCI:0000:04:00", 74, "PCI:0000:04:00"),  # GPUd's docs
    ("XID 144.3 (err status 0x00000010) NVLINK_SAW_ERROR detected on GPU PCI:0000:18:00", 144,
     "PCI:0000:18:00"),
    ("XID 48", 48, None),
])
def test_each_reason_format_gives_code_and_gpu(text: str, code: int, gpu: str | None) -> None:
    [xid] = parse_xid_text(text)
    assert (xid.code, xid.gpu) == (code, gpu)
    assert xid.message.startswith(f"XID {code}")


def test_one_reason_may_name_several_xids() -> None:
    text = ("XID 13(Graphics Engine Exception) detected on PCI:0000:18:00, "
            "XID 31(GPU memory page fault) detected on PCI:0000:2a:00")
    assert [(x.code, x.gpu) for x in parse_xid_text(text)] == [(13, "PCI:0000:18:00"), (31, "PCI:0000:2a:00")]


@pytest.mark.parametrize("text", ["XIDComponent is healthy", "SXID 12028 detected on NVSwitch 3", "", None,
                                  79])
def test_texts_without_an_xid_give_none(text: Any) -> None:
    assert parse_xid_text(text) == []


def test_event_payload_forms() -> None:
    bare = parse_xid_payload({"data": "79", "device_uuid": "PCI:0000:18:00"})
    assert bare is not None and (bare.code, bare.gpu) == (79, "PCI:0000:18:00")
    full = parse_xid_payload({"data": '{"xid": 94, "device_uuid": "PCI:0000:2a:00", "data_source": "kmsg"}'})
    assert full is not None and (full.code, full.gpu) == (94, "PCI:0000:2a:00")
    assert parse_xid_payload({"data": "[]"}) is None
    assert parse_xid_payload("79") is None


def xid_states(reason: str, health: str = "Unhealthy") -> list[dict[str, Any]]:
    states = load("v1_states_h100_constructed.json")
    entry = next(e for e in states if e["component"] == "accelerator-nvidia-error-xid")
    entry["states"] = [{"time": None, "name": "error_xid", "health": health, "reason": reason,
                        "suggested_actions": {"description": "", "repair_actions": ["REBOOT_SYSTEM"]}}]
    return states


def events_body(*events: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"component": "accelerator-nvidia-error-xid", "startTime": "2026-11-28T13:20:00Z",
             "endTime": "2026-11-28T14:20:00Z", "events": list(events)}]


def test_state_xid_maps_to_its_gpu_index_and_class() -> None:
    states = xid_states("XID 79(GPU has fallen off the bus) detected on PCI:0000:2a:00")
    snap = snapshot_from_responses(states, task_id="t")
    [xid] = snap.xids
    assert (xid.code, xid.gpu_index, xid.source, xid.xid_class) == (79, 1, "state", "fatal")
    verdict = score_snapshot(snap)
    assert verdict.status is HealthStatus.CRITICAL
    assert {"xid_fatal", "component_unhealthy"} <= {r.code for r in verdict.reasons}


def test_events_give_xids_with_time_and_only_for_warning_and_worse() -> None:
    body = events_body(
        {"time": "2026-11-28T14:10:00Z", "name": "error_xid", "type": "Warning",
         "message": "XID 13 GRAPHICS_ENGINE_EXCEPTION Graphics Engine Exception detected on GPU "
                    "PCI:0000:18:00"},
        {"time": "2026-11-28T14:11:00.123456789Z", "name": "error_xid", "type": "Fatal",
         "message": f"XID 48 DBE Double Bit ECC Error detected on GPU PCI:0000:2a:00 UUID:{GPU1}"},
        {"time": "2026-11-28T14:12:00Z", "name": "error_xid", "type": "Info",
         "message": "XID 161 detected on GPU PCI:0000:18:00"},
    )
    snap = snapshot_from_responses(load("v1_states_h100_constructed.json"), body, task_id="t")
    assert [(x.code, x.gpu_index, x.source, x.xid_class) for x in snap.xids] == [
        (13, 0, "event", "application"), (48, 1, "event", "fatal")]
    assert snap.xids[1].time == datetime(2026, 11, 28, 14, 11, 0, 123456, tzinfo=timezone.utc)
    assert [e.type for e in snap.events] == ["Warning", "Fatal", "Info"]  # all events are kept, oldest first
    assert snap.events[0].component == "accelerator-nvidia-error-xid"


def test_xid_app_alone_is_not_critical() -> None:
    body = events_body({"time": "2026-11-28T14:10:00Z", "name": "error_xid", "type": "Warning",
                        "message": "XID 13(Graphics Engine Exception) detected on PCI:0000:18:00"})
    snap = snapshot_from_responses(load("v1_states_h100_constructed.json"), body, task_id="t")
    verdict = score_snapshot(snap)
    assert verdict.status is not HealthStatus.CRITICAL
    assert "xid_application" in {r.code for r in verdict.reasons}


def test_the_same_xid_in_state_and_event_is_one_xid_with_the_event_time() -> None:
    body = events_body(
        {"time": "2026-11-28T14:01:00Z", "name": "error_xid", "type": "Fatal", "message": LATEST_79},
        {"time": "2026-11-28T14:05:00Z", "name": "error_xid", "type": "Fatal", "message": LATEST_79},
    )
    snap = snapshot_from_responses(xid_states(LATEST_79), body, task_id="t")
    [xid] = snap.xids
    assert (xid.code, xid.gpu, xid.gpu_index, xid.source) == (79, GPU0, 0, "state")
    assert xid.time == datetime(2026, 11, 28, 14, 5, tzinfo=timezone.utc)


def test_v04_event_payload_is_read_when_the_message_names_no_xid() -> None:
    body = events_body({"time": "2026-11-28T14:01:00Z", "name": "error_xid", "type": "Critical",
                        "message": "critical error",
                        "extra_info": {"data": "63", "device_uuid": "PCI:0000:18:00"}})
    snap = snapshot_from_responses(load("v1_states_h100_constructed.json"), body, task_id="t")
    assert [(x.code, x.gpu_index) for x in snap.xids] == [(63, 0)]


def test_xids_in_other_components_are_not_xid_reports() -> None:
    body = [{"component": "accelerator-nvidia-error-sxid", "events": [
        {"time": "2026-11-28T14:01:00Z", "name": "error_sxid", "type": "Fatal",
         "message": "SXID 12028 detected"}]},
        {"component": "os", "events": [{"time": "2026-11-28T14:01:00Z", "name": "reboot", "type": "Warning",
                                        "message": "system reboot detected"}]}]
    snap = snapshot_from_responses([], body, task_id="t")
    assert snap.xids == () and len(snap.events) == 2
