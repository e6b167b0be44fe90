"""The real daemon process (`python -m flow.cli.collect_cmd`, 1 s interval) killed with -9.

At-least-once across crashes: every record the collector stored reaches the receiver, and
the only duplicates are the batch that was in flight when the process died.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.daemon import Gpud, python_env, stored_ids, wait_for
from collector.receiver import Receiver

TASK = "task-crash"
BATCH = 4


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "flow.cli.collect_cmd", "--log-level", "debug"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)


@pytest.mark.slow
def test_kill_9_and_restart_deliver_everything_at_least_once(tmp_path: Path, receiver: Receiver) -> None:
    gpud = Gpud(gpu_count=2)
    metrics = tmp_path / "home" / "metrics"
    env = python_env(
        FLOW_HOME=str(tmp_path / "home"), FLOW_GPUD_PORT=str(gpud.port), FLOW_TASK_ID=TASK,
        FLOW_METRICS_ENDPOINT=receiver.url, FLOW_METRICS_INTERVAL="1", FLOW_METRICS_BATCH_SIZE=str(BATCH),
        FLOW_METRICS_BACKOFF_MIN="0.1", FLOW_METRICS_BACKOFF_MAX="0.5", FLOW_METRICS_SEND_TIMEOUT="2",
        FLOW_METRICS_FLUSH_INTERVAL="1",
    )
    log = tmp_path / "collector.log"
    proc = _start(env, log)
    try:
        wait_for(lambda: receiver.unique >= 2, what="first deliveries")

        # 1. The endpoint goes away; the collector keeps sampling; then it is killed outright.
        receiver.stop()
        delivered = receiver.unique
        wait_for(lambda: len(stored_ids(metrics, TASK)) >= delivered + 3, what="a backlog")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        receiver.start()

        # 2. Restart: the backlog goes out from the cursor.
        proc = _start(env, log)
        wait_for(lambda: set(stored_ids(metrics, TASK)) <= set(receiver.ids), what="backlog delivered")

        # 3. Killed while a batch is in flight: the receiver has it, the cursor does not.
        receiver.hold()
        before = len(receiver.requests)
        wait_for(lambda: len(receiver.requests) > before, what="a batch held by the receiver")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        receiver.ok()
        stored = len(stored_ids(metrics, TASK))
        proc = _start(env, log)
        wait_for(lambda: len(stored_ids(metrics, TASK)) >= stored + 2, what="more samples")
        wait_for(lambda: set(stored_ids(metrics, TASK)) <= set(receiver.ids), what="all delivered")

        # 4. SIGTERM: a clean stop, exit status 0, within a few seconds.
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        gpud.close()

    ids = stored_ids(metrics, TASK)
    missing = [i for i in ids if i not in receiver.ids]
    assert not missing, f"{len(missing)} of {len(ids)} records lost"
    # The held batch was received but never acknowledged, so it was sent again: that one batch,
    # and nothing else, is duplicated.
    assert 1 <= receiver.duplicates <= BATCH, f"{receiver.duplicates} duplicates"
    text = log.read_text()
    assert "Traceback" not in text
    assert "resuming after" in text  # the restarts read the cursor
    cursor = metrics / ".collector" / "stream-cursor.json"
    assert os.stat(cursor).st_mode & 0o777 == 0o600


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_listen_serves_the_latest_snapshot(tmp_path: Path) -> None:
    import httpx

    gpud = Gpud(gpu_count=2)
    port = _free_port()
    env = python_env(FLOW_HOME=str(tmp_path / "home"), FLOW_GPUD_PORT=str(gpud.port),
                     FLOW_TASK_ID="task-prom", FLOW_METRICS_INTERVAL="1")
    log = tmp_path / "collector.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "flow.cli.collect_cmd", "--prometheus-listen",
                                 f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        def scraped() -> bool:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return False
            return 'task_id="task-prom"' in text
        wait_for(scraped, what="the node's metrics at /metrics")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        gpud.close()
    assert f"serving Prometheus metrics at http://127.0.0.1:{port}/metrics" in log.read_text()


@pytest.mark.slow
def test_config_sinks_are_streamed_with_their_own_cursor(tmp_path: Path) -> None:
    """A `health.sinks` Pushgateway (Debian's real one) fed by the daemon, beside nothing else."""
    import shutil

    import httpx

    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway is not installed")
    gpud = Gpud(gpu_count=2)
    push_port = _free_port()
    push = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{push_port}",
                             f"--persistence.file={tmp_path / 'pg'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text(
        f"health:\n  sinks:\n    pushgateway: {{url: 'http://127.0.0.1:{push_port}'}}\n")
    env = python_env(FLOW_HOME=str(home), FLOW_GPUD_PORT=str(gpud.port), FLOW_TASK_ID="task-push",
                     FLOW_METRICS_INTERVAL="1")
    log = tmp_path / "collector.log"
    proc = _start(env, log)
    try:
        def pushed() -> bool:
            try:
                text = httpx.get(f"http://127.0.0.1:{push_port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return False
            return 'task_id="task-push"' in text
        wait_for(pushed, what="the node's metrics on the Pushgateway")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        for p in (proc, push):
            if p.poll() is None:
                p.kill()
                p.wait(10)
        gpud.close()
    cursor = home / "metrics" / ".collector" / "stream-cursor-pushgateway.json"
    assert cursor.exists()
    assert "Traceback" not in log.read_text()
