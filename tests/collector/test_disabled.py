"""FLOW_HEALTH_MONITORING=false (issue 13, item 8): the collector says so and exits 0 at once.

The real daemon entry point (`python -m flow.cli.collect_cmd`, as the systemd unit runs it):
it must neither sample nor stream, nor fail (the unit restarts it only on failure, so a clean
exit stays stopped). `--once` still samples on demand.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from collector.daemon import Gpud, python_env
from collector.receiver import Receiver
from flow.health.install import units

HANG_BOUND_S = 60  # a hang bound, not a timing assertion: a daemon that runs would never end


@pytest.fixture
def gpud() -> Iterator[Gpud]:
    sim = Gpud(gpu_count=1)
    yield sim
    sim.close()


def _collector(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flow.cli.collect_cmd", *args],
                          env=python_env(FLOW_HOME=str(home), FLOW_TASK_ID="task-off", **env),
                          capture_output=True, text=True, timeout=HANG_BOUND_S)


def test_the_collector_exits_0_at_once_when_monitoring_is_disabled(
        tmp_path: Path, gpud: Gpud, receiver: Receiver) -> None:
    home = tmp_path / "home"
    proc = _collector(home, FLOW_HEALTH_MONITORING="false", FLOW_GPUD_PORT=str(gpud.port),
                      FLOW_METRICS_ENDPOINT=receiver.url, FLOW_METRICS_INTERVAL="0.1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(" WARNING collector health monitoring is disabled "
                             "(FLOW_HEALTH_MONITORING=false); the collector exits")
    assert not (home / "metrics").exists()  # nothing sampled, stored or locked
    assert receiver.requests == [] and gpud.node is not None and not gpud.node.requests


def test_the_message_names_config_yaml_when_it_disabled_monitoring(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text("health:\n  enabled: false\n")
    proc = _collector(home)
    assert proc.returncode == 0, proc.stderr
    assert (f"health monitoring is disabled (health.enabled: false in {home / 'config.yaml'}); "
            "the collector exits") in proc.stderr


def test_once_still_samples_on_demand(tmp_path: Path, gpud: Gpud) -> None:
    proc = _collector(tmp_path / "home", "--once", "--no-store", FLOW_HEALTH_MONITORING="false",
                      FLOW_GPUD_PORT=str(gpud.port))
    assert proc.returncode == 0, proc.stderr
    snapshot = orjson.loads(proc.stdout)
    assert snapshot["task_id"] == "task-off" and snapshot["gpud"]["reachable"] is True


def test_the_unit_restarts_the_collector_only_on_failure() -> None:
    # Restart=always would start a collector that exits 0 again every 10 s, for ever.
    lines = units.collector_unit().splitlines()
    assert "Restart=on-failure" in lines
    assert not any(line.startswith("Restart=") and line != "Restart=on-failure" for line in lines)
