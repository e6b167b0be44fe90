"""The collector against the simulated GPUd: GPUd down and back, NVML absent, the schedule, --once."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from collector.daemon import Gpud, InProcessDaemon, wait_for
from collector.test_nvml import fake_nvml
from flow.cli.main import main
from flow.health.collector import Collector, CollectorSettings, next_deadline
from flow.health.collector.nvml import NvmlReader
from flow.health.sim import host_boot_id, start_fleet_in_thread
from flow.health.snapshot import HealthStatus, Snapshot
from flow.health.storage.store import MetricsStore


@pytest.fixture
def gpud() -> Gpud:
    sim = Gpud(gpu_count=2)
    yield sim  # type: ignore[misc]
    sim.close()


def _settings(tmp_path: Path, gpud: Gpud | None, **kw: object) -> CollectorSettings:
    values: dict[str, object] = {
        "task_id": "task-abc123", "task_name": "train", "instance_type": "8xh100", "node": "node-1",
        "interval_s": 0.2, "gpud_url": gpud.url if gpud else "https://127.0.0.1:1",
        "metrics_dir": tmp_path / "metrics",
    }
    values.update(kw)
    return CollectorSettings(**values)  # type: ignore[arg-type]


def _samples(collector: Collector, n: int) -> list[Snapshot]:
    async def go() -> list[Snapshot]:
        return [await collector.sample_once() for _ in range(n)]
    return asyncio.run(go())


def test_gpud_down_then_back_logs_one_line_each_way(tmp_path: Path, gpud: Gpud,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flow")
    settings = _settings(tmp_path, gpud, use_nvml=False)  # this test is about GPUd alone

    async def scenario() -> list[Snapshot]:
        collector = Collector(settings)
        out = [await collector.sample_once()]
        gpud.down()
        out += [await collector.sample_once() for _ in range(3)]
        gpud.up()
        out += [await collector.sample_once() for _ in range(2)]
        await collector.aclose()
        return out

    snaps = asyncio.run(scenario())
    assert [s.gpud.reachable for s in snaps] == [True, False, False, False, True, True]
    down = snaps[1]
    assert down.status is HealthStatus.UNKNOWN  # unreachable is never healthy
    assert down.host is not None and down.host.mem_total_bytes  # host metrics still there
    assert snaps[4].status is not HealthStatus.UNKNOWN
    messages = [r.getMessage() for r in caplog.records]
    assert sum("GPUd unreachable" in m for m in messages) == 1
    assert sum("GPUd reachable again" in m for m in messages) == 1
    assert len(MetricsStore(settings.metrics_dir, 7, 1).days("task-abc123")) == 1
    assert sum(1 for _ in MetricsStore(settings.metrics_dir, 7, 1).read_snapshots(task_id="task-abc123")) == 6


def test_no_nvml_here_reads_as_a_clear_absence(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flow")
    collector = Collector(_settings(tmp_path, None))  # GPUd at a closed port; real pynvml
    snaps = _samples(collector, 3)
    asyncio.run(collector.aclose())
    for snap in snaps:
        assert snap.gpud.reachable is False
        assert snap.gpud.state == "not_listening"
        assert "NVML not available: " in (snap.gpud.error or "")
        assert snap.status is HealthStatus.UNKNOWN
        assert snap.gpus == ()
    nvml_lines = [r for r in caplog.records if "NVML not available" in r.getMessage()]
    assert len(nvml_lines) == 1  # once, not every cycle
    assert not any(r.exc_info for r in caplog.records)  # no traceback anywhere


def test_gpud_missing_but_nvml_present_reads_gpus_from_nvml(tmp_path: Path) -> None:
    collector = Collector(_settings(tmp_path, None), nvml=NvmlReader(fake_nvml(gpus=2)))
    [snap] = _samples(collector, 1)
    asyncio.run(collector.aclose())
    assert snap.gpud.state == "nvml" and snap.gpud.reachable is False
    assert snap.gpud.error is not None and snap.gpud.error.startswith("GPUd unreachable (not_listening)")
    assert snap.gpud.driver_version == "550.54.15"
    assert [g.uuid for g in snap.gpus] == ["GPU-0", "GPU-1"]
    assert snap.verdict is not None and snap.verdict.score is not None  # scored, not unknown
    codes = {r.code for r in snap.verdict.reasons}
    assert {"throttle_hw", "ecc_uncorrected"} <= codes


def test_snapshot_identity_and_scoring_with_previous(tmp_path: Path, gpud: Gpud) -> None:
    collector = Collector(_settings(tmp_path, gpud))
    first, second = _samples(collector, 2)
    asyncio.run(collector.aclose())
    assert (first.task_id, first.task_name, first.node, first.instance_type) == (
        "task-abc123", "train", "node-1", "8xh100")
    assert len(first.gpus) == 2 and first.verdict is not None and first.verdict.score is not None
    assert second.timestamp > first.timestamp
    assert first.host is not None and second.host is not None
    assert second.host.net_rx_bytes_per_s is not None  # a rate between two cycles


def test_machine_info_is_read_once_per_boot_of_this_host(tmp_path: Path) -> None:
    # GPUd on this host reports this host's boot id: the collector keeps /machine-info for the boot.
    fleet = start_fleet_in_thread(1, gpu_count=2, boot_id=host_boot_id())
    try:
        collector = Collector(_settings(tmp_path, None, gpud_url=fleet.nodes[0].url))
        snaps = _samples(collector, 4)
        asyncio.run(collector.aclose())
        served = dict(fleet.nodes[0].requests)
    finally:
        fleet.stop()
    assert all(s.gpud.reachable and s.gpud.boot_id == host_boot_id() for s in snaps)
    assert served["/machine-info"] == 1
    assert served["/v1/states"] == 4 and served["/v1/events"] == 4


def test_schedule_is_drift_free_and_skips_missed_ticks() -> None:
    # On time: the next tick is exactly one interval after the last deadline.
    assert next_deadline(100.0, 100.3, 1.0) == (101.0, 0)
    # A cycle that ended late still lands on the grid, not 1 s after it ended.
    assert next_deadline(100.0, 100.999, 1.0) == (101.0, 0)
    # Overran by 2.5 intervals: skip the ticks it covered, do not burst them.
    assert next_deadline(100.0, 103.5, 1.0) == (104.0, 3)


def test_daemon_keeps_the_interval_grid(tmp_path: Path, gpud: Gpud) -> None:
    daemon = InProcessDaemon(_settings(tmp_path, gpud, interval_s=0.2)).start()
    wait_for(lambda: daemon.cycles >= 5, what="5 cycles")
    daemon.stop()
    snaps = list(MetricsStore(tmp_path / "metrics", 7, 1).read_snapshots(task_id="task-abc123"))
    assert len(snaps) >= 5
    assert len({s.timestamp for s in snaps}) == len(snaps)


def test_once_prints_one_snapshot_as_json(tmp_path: Path, gpud: Gpud, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_GPUD_PORT", str(gpud.port))
    monkeypatch.setenv("FLOW_METRICS_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("FLOW_TASK_NAME", "from-env")
    code = main(["health", "collect", "--once", "--task-id", "task-9", "--instance-type", "a100"])
    out, err = capsys.readouterr()
    assert code == 0
    snap = json.loads(out)
    assert (snap["task_id"], snap["task_name"], snap["instance_type"]) == ("task-9", "from-env", "a100")
    assert snap["gpud"]["reachable"] is True
    assert snap["verdict"]["status"] in {"healthy", "degraded", "critical"}
    assert "GPUd" in err and "\x1b[" not in err  # logs on stderr, no colour
    assert sum(1 for _ in MetricsStore(tmp_path / "m", 7, 1).read_snapshots(task_id="task-9")) == 1


@pytest.mark.parametrize(("args", "needle"), [
    (["--interval", "0"], "--interval"),
    (["--log-level", "loud"], "--log-level"),
    (["--backoff-min", "-1"], "--backoff-min"),
    (["--prometheus-listen", "nowhere"], "--prometheus-listen"),
    (["--expected-gpus", "-1"], "--expected-gpus"),
])
def test_bad_options_exit_2_naming_the_option(args: list[str], needle: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["health", "collect", "--once", *args])
    assert code == 2
    assert needle in capsys.readouterr().err


def test_bad_interval_from_the_environment_exits_2(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLOW_METRICS_INTERVAL", "soon")
    assert main(["health", "collect", "--once"]) == 2
    assert "FLOW_METRICS_INTERVAL" in capsys.readouterr().err


def test_the_expected_gpu_count_can_be_given_outright(
    tmp_path: Path, gpud: Gpud, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_GPUD_PORT", str(gpud.port))
    monkeypatch.setenv("FLOW_METRICS_DIR", str(tmp_path / "m"))
    # An instance type flow does not know, and the task's `gpus:` in the installer's env file:
    # the simulated GPUd shows 2 GPUs of the 4 the node should have.
    monkeypatch.setenv("FLOW_EXPECTED_GPUS", "4")
    assert main(["health", "collect", "--once", "--no-store", "--instance-type", "custom-box"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert (snap["expected_gpus"], snap["verdict"]["status"]) == (4, "critical")
    assert snap["verdict"]["reasons"][0]["message"] == "2 of 4 GPUs visible"
    # The option wins over the variable and over the instance type's count (h100.4xlarge: 4).
    assert main(["health", "collect", "--once", "--no-store", "--instance-type", "h100.4xlarge",
                 "--expected-gpus", "2"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert snap["expected_gpus"] == 2
    assert "gpu_missing" not in [r["code"] for r in snap["verdict"]["reasons"]]
    monkeypatch.setenv("FLOW_EXPECTED_GPUS", "lots")
    assert main(["health", "collect", "--once", "--no-store"]) == 2
    assert "FLOW_EXPECTED_GPUS (for --expected-gpus): 'lots'" in capsys.readouterr().err


def test_second_daemon_on_the_same_store_is_refused(tmp_path: Path, gpud: Gpud) -> None:
    first = InProcessDaemon(_settings(tmp_path, gpud)).start()
    wait_for(lambda: first.cycles >= 1, what="first daemon running")
    second = InProcessDaemon(_settings(tmp_path, gpud)).start()
    with pytest.raises(Exception, match="another collector"):
        second.stop()
    first.stop()


def test_the_daemon_imports_no_sink_it_does_not_use() -> None:
    """The daemon's RSS goal (docs/collector.md) has room for httpx, not for aiohttp and every
    sink: an import of the sinks package from the streaming path cost 12 MB."""
    code = ("import sys, flow.cli.collect_cmd, flow.health.collector.daemon, flow.health.streaming.endpoint; "
            "print(sorted(m for m in ('aiohttp', 'flow.health.sinks', 'boto3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_instance_types_gpu_count_is_what_the_node_should_have(
    tmp_path: Path, gpud: Gpud, flow_home: Path
) -> None:
    from flow.config import load_config

    config = load_config({"FLOW_HOME": str(flow_home)})
    env = {"FLOW_INSTANCE_TYPE": "h100.4xlarge"}
    assert CollectorSettings.from_config(config, task_id="t", env=env).expected_gpus == 4
    assert CollectorSettings.from_config(config, task_id="t", env={}).expected_gpus is None
    # The simulated GPUd shows 2 GPUs where the instance type has 4: the same verdict as a sweep's.
    settings = _settings(tmp_path, gpud, instance_type="h100.4xlarge", expected_gpus=4, use_nvml=False)
    (snap,) = _samples(Collector(settings), 1)
    assert snap.expected_gpus == 4 and snap.status is HealthStatus.CRITICAL
    assert snap.verdict is not None and snap.verdict.reasons[0].message == "2 of 4 GPUs visible"
