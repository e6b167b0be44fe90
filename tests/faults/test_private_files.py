"""What the collector writes is private whatever the umask (issue 12, class 11).

`Path.mkdir(parents=True, mode=0o700)` gives the missing *parents* the umask's mode: under
umask 022 the daemon created `FLOW_HOME` and `metrics/` world-readable (0755) before its
first sample. Every level the product creates must be 0700, every file 0600.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.daemon import Gpud, InProcessDaemon, wait_for
from collector.receiver import Receiver
from flow.health.collector import CollectorSettings


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_daemon_creates_every_level_private_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    gpud = Gpud(gpu_count=1)
    receiver = Receiver().start()
    home = tmp_path / "fresh" / "flow-home"
    try:
        settings = CollectorSettings(
            task_id="task-p", node="node-1", interval_s=0.2, gpud_url=gpud.url, use_nvml=False,
            metrics_dir=home / "metrics", endpoint=receiver.url, batch_size=5,
            backoff_min_s=0.05, backoff_max_s=0.2, send_timeout_s=1.0, shutdown_grace_s=1.0,
            flush_interval_s=0.3)
        daemon = InProcessDaemon(settings).start()
        wait_for(lambda: receiver.unique >= 2, what="two deliveries")
        daemon.stop()
    finally:
        receiver.close()
        gpud.close()
    created = [tmp_path / "fresh", home, home / "metrics", home / "metrics" / ".collector",
               home / "metrics" / "task-p"]
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in created} == {
        str(p.relative_to(tmp_path)): "0o700" for p in created}
    metrics = home / "metrics"
    files = [*(metrics / "task-p").glob("*.jsonl"), metrics / ".collector" / "stream-cursor.json"]
    assert len(files) == 2 and all(mode(f) == 0o600 for f in files), [(f, oct(mode(f))) for f in files]
