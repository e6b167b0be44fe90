"""GpudClient against the simulator over real TLS: every scenario, GPUd v0.5.1 and v0.4.

One fleet per version plays every scenario on its own node; all nodes are read at once (as a
sweep does), then each test checks one scenario's snapshot and the verdict scoring gives it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from flow.health.gpud import SCHEMA_V04, SCHEMA_V05, read_gpud
from flow.health.scoring import score_snapshot
from flow.health.sim import SCENARIOS, start_fleet_in_thread
from flow.health.snapshot import HealthStatus, Snapshot, Verdict

DEADLINE_S = 20.0  # the whole fleet is read at once on a small CI machine: room for the sim's work
SLOW_DEADLINE_S = 1.0  # the gpud-slow node answers after 30 s; its read must end at this deadline
SLACK_S = 3.0  # generous: bounds hang protection, measures nothing
VERSIONS = {"v0.5.1": SCHEMA_V05, "v0.4.5": SCHEMA_V04}


@dataclass(frozen=True)
class Read:
    snapshot: Snapshot
    verdict: Verdict
    elapsed_s: float
    version: str

    @property
    def codes(self) -> set[str]:
        return {r.code for r in self.verdict.reasons}


async def _read_all(urls: dict[str, str], version: str) -> dict[str, Read]:
    async def one(scenario: str, url: str) -> tuple[str, Read]:
        started = time.monotonic()
        deadline_s = SLOW_DEADLINE_S if scenario == "gpud-slow" else DEADLINE_S
        snap = await read_gpud(url, task_id=f"task-{scenario}", node=scenario, timeout_s=deadline_s,
                               deadline_s=deadline_s)
        return scenario, Read(snap, score_snapshot(snap), time.monotonic() - started, version)

    return dict(await asyncio.gather(*(one(s, u) for s, u in urls.items())))


@pytest.fixture(scope="module", params=list(VERSIONS))
def reads(request: pytest.FixtureRequest) -> Iterator[dict[str, Read]]:
    version: str = request.param
    fleet = start_fleet_in_thread(len(SCENARIOS), scenario=list(SCENARIOS), gpud_version=version, gpu_count=2)
    try:
        urls = {node.scenario: node.url for node in fleet.nodes}
        yield asyncio.run(_read_all(urls, version))
    finally:
        fleet.stop()


def test_every_reachable_scenario_reads_cleanly(reads: dict[str, Read]) -> None:
    for scenario, read in reads.items():
        if scenario.startswith("gpud-"):
            continue
        snap = read.snapshot
        assert snap.gpud.reachable and snap.gpud.state == "ok", scenario
        assert snap.gpud.api_schema == VERSIONS[read.version], scenario
        assert snap.read_errors == (), (scenario, snap.read_errors)
        if scenario in ("gpu-missing", "gpu-silent"):
            continue  # one GPU fewer, or one without readings: their own tests below
        assert len(snap.gpus) == 2 and [g.index for g in snap.gpus] == [0, 1], scenario
        assert all(g.uuid and g.bus_id and g.temp_c is not None for g in snap.gpus), scenario
        assert snap.host is not None and snap.host.cpu_pct is not None, scenario
        assert snap.gpud.version == ("v0.5.1" if read.version == "v0.5.1" else None), scenario


def test_healthy(reads: dict[str, Read]) -> None:
    read = reads["healthy"]
    assert read.verdict.status is HealthStatus.HEALTHY and read.verdict.score == 100
    for gpu in read.snapshot.gpus:
        assert gpu.temp_c is not None and gpu.temp_c < 75
        assert (gpu.ecc_volatile_uncorrected, gpu.remap_failed) == (0, False)
        assert gpu.power_w and gpu.power_limit_w and gpu.power_w < gpu.power_limit_w
        assert gpu.slowdown_temp_c == 89 and gpu.model == "NVIDIA H100 80GB HBM3"
    assert read.snapshot.xids == ()


def test_hot(reads: dict[str, Read]) -> None:
    read = reads["hot"]
    assert all(g.temp_c is not None and g.temp_c > 85 for g in read.snapshot.gpus)
    assert read.verdict.status is HealthStatus.CRITICAL and "temp_critical" in read.codes


def test_warm(reads: dict[str, Read]) -> None:
    read = reads["warm"]
    assert all(g.temp_c is not None and 75 < g.temp_c <= 85 for g in read.snapshot.gpus)
    assert "temp_warning" in read.codes and "temp_critical" not in read.codes
    assert read.verdict.status in (HealthStatus.HEALTHY, HealthStatus.DEGRADED)


def test_throttled(reads: dict[str, Read]) -> None:
    read = reads["throttled"]
    for gpu in read.snapshot.gpus:
        assert {"hw_slowdown", "hw_power_brake_slowdown"} <= set(gpu.throttle_reasons)
    assert "throttle_hw" in read.codes
    component = "accelerator-nvidia-clock" if read.version == "v0.4.5" else "accelerator-nvidia-hw-slowdown"
    assert any(c.component == component and c.health == "Unhealthy" for c in read.snapshot.components)
    assert read.verdict.status is HealthStatus.CRITICAL


def test_ecc(reads: dict[str, Read]) -> None:
    read = reads["ecc"]
    gpu0 = read.snapshot.gpus[0]
    assert gpu0.ecc_volatile_uncorrected and gpu0.ecc_volatile_uncorrected > 0
    assert gpu0.ecc_aggregate_uncorrected and gpu0.ecc_aggregate_uncorrected >= gpu0.ecc_volatile_uncorrected
    assert read.snapshot.gpus[1].ecc_volatile_uncorrected == 0
    assert read.verdict.status is HealthStatus.CRITICAL and "ecc_uncorrected" in read.codes


def test_xid_fatal(reads: dict[str, Read]) -> None:
    read = reads["xid-fatal"]
    [xid] = read.snapshot.xids
    assert (xid.code, xid.gpu_index, xid.xid_class) == (79, 0, "fatal")
    assert xid.time is not None  # from the Fatal event
    assert any(e.type == "Fatal" for e in read.snapshot.events)
    assert read.verdict.status is HealthStatus.CRITICAL and "xid_fatal" in read.codes


def test_xid_app(reads: dict[str, Read]) -> None:
    read = reads["xid-app"]
    [xid] = read.snapshot.xids
    assert (xid.code, xid.gpu_index, xid.xid_class) == (13, 0, "application")
    assert read.verdict.status is not HealthStatus.CRITICAL and "xid_application" in read.codes


def test_row_remap_pending(reads: dict[str, Read]) -> None:
    read = reads["row-remap-pending"]
    assert (read.snapshot.gpus[0].remap_pending, read.snapshot.gpus[0].remap_failed) == (True, False)
    assert "remap_pending" in read.codes and "remap_failed" not in read.codes


def test_row_remap_failed(reads: dict[str, Read]) -> None:
    read = reads["row-remap-failed"]
    assert read.snapshot.gpus[0].remap_failed is True
    assert read.verdict.status is HealthStatus.CRITICAL and "remap_failed" in read.codes


def test_nvlink_errors(reads: dict[str, Read]) -> None:
    read = reads["nvlink-errors"]
    gpu0, gpu1 = read.snapshot.gpus
    assert gpu0.nvlink_errors and gpu0.nvlink_crc_errors and gpu0.nvlink_crc_errors > 0
    assert gpu1.nvlink_errors == 0
    assert "nvlink_errors" in read.codes


def test_memory_pressure(reads: dict[str, Read]) -> None:
    read = reads["memory-pressure"]
    assert all(g.mem_used_pct is not None and g.mem_used_pct > 95 for g in read.snapshot.gpus)
    assert read.verdict.status is HealthStatus.CRITICAL and "mem_critical" in read.codes


def test_idle(reads: dict[str, Read]) -> None:
    read = reads["idle"]
    assert all(g.util_gpu_pct is not None and g.util_gpu_pct < 10 for g in read.snapshot.gpus)
    assert all("gpu_idle" in g.throttle_reasons for g in read.snapshot.gpus)
    assert "util_low" in read.codes and read.verdict.status is not HealthStatus.CRITICAL


def test_gpu_missing_lists_one_gpu_fewer(reads: dict[str, Read]) -> None:
    # Nothing in GPUd's answers names the absent GPU: only the expected count can catch it.
    snap = reads["gpu-missing"].snapshot
    assert [g.index for g in snap.gpus] == [0] and not snap.gpus[0].silent
    assert snap.gpus[0].temp_c is not None
    v = score_snapshot(replace(snap, expected_gpus=2))
    assert v.status is HealthStatus.CRITICAL
    assert [(r.code, r.message) for r in v.reasons][:1] == [("gpu_missing", "1 of 2 GPUs visible")]


def test_gpu_silent_is_listed_without_readings(reads: dict[str, Read]) -> None:
    read = reads["gpu-silent"]
    snap = read.snapshot
    if read.version == "v0.4.5":
        # v0.4 has no /machine-info: a GPU without readings is not listed at all (it is missing).
        assert len(snap.gpus) == 1 and not snap.gpus[0].silent
        return
    assert [(g.index, g.silent) for g in snap.gpus] == [(0, False), (1, True)]
    lost = snap.gpus[1]
    assert lost.uuid and lost.bus_id and lost.temp_c is None and lost.util_gpu_pct is None
    assert read.verdict.status is HealthStatus.DEGRADED
    assert [(r.code, r.gpu) for r in read.verdict.reasons] == [("gpu_silent", 1)]
    assert f"GPU 1 ({lost.bus_id}) is listed by GPUd" in read.verdict.reasons[0].message


def test_gpud_down_is_not_listening(reads: dict[str, Read]) -> None:
    read = reads["gpud-down"]
    assert (read.snapshot.gpud.reachable, read.snapshot.gpud.state) == (False, "not_listening")
    assert read.verdict.status is HealthStatus.UNKNOWN and read.codes == {"gpud_unreachable"}


def test_gpud_slow_costs_at_most_its_deadline(reads: dict[str, Read]) -> None:
    read = reads["gpud-slow"]
    assert (read.snapshot.gpud.reachable, read.snapshot.gpud.state) == (False, "timeout")
    assert read.elapsed_s < SLOW_DEADLINE_S + SLACK_S
    assert read.verdict.status is HealthStatus.UNKNOWN


def test_gpud_garbage_is_a_bad_response(reads: dict[str, Read]) -> None:
    read = reads["gpud-garbage"]
    assert (read.snapshot.gpud.reachable, read.snapshot.gpud.state) == (False, "bad_response")
    assert read.snapshot.gpud.error and "not JSON" in read.snapshot.gpud.error
    assert read.verdict.status is HealthStatus.UNKNOWN


def test_the_three_transport_failures_are_distinct(reads: dict[str, Read]) -> None:
    states = {reads[s].snapshot.gpud.state for s in ("gpud-down", "gpud-slow", "gpud-garbage")}
    assert len(states) == 3
