"""A collector whose wall clock jumps both ways across UTC midnight loses nothing (issue 12, class 1).

Snapshots go into the file of their own UTC day, so a clock that runs ahead writes into
tomorrow's file and one stepped back writes into an earlier day after a later one. The stream
cursor used to compare days, so everything after a future-dated sample looked delivered and
was never sent. Here the real daemon samples the simulated GPUd through a reader whose clock
the test moves, while a real receiver goes down and comes back; every stored record must reach
it, with at most one batch duplicated, and each step must be logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from collector.daemon import Gpud, InProcessDaemon, stored_ids, wait_for
from collector.receiver import Receiver
from flow.health.collector import CollectorSettings
from flow.health.gpud.client import GpudClient
from flow.health.snapshot import Snapshot
from flow.health.storage import MetricsStore
from flow.health.streaming.store_source import StoreBacklog
from storage.builders import snap

TASK = "task-clock"
BATCH = 4


class SteppedClock(GpudClient):
    """The real GPUd client, with the node's wall clock `offset` away from the true time."""

    offset = timedelta(0)

    async def read(self, **kwargs: object) -> Snapshot:  # type: ignore[override]
        snapshot = await super().read(**kwargs)  # type: ignore[arg-type]
        return replace(snapshot, timestamp=snapshot.timestamp + self.offset)


def _days(metrics: Path) -> list[str]:
    return sorted(p.name.split(".")[0] for p in (metrics / TASK).glob("*.jsonl*"))


@pytest.mark.slow
def test_clock_steps_across_midnight_both_ways_lose_nothing(
        tmp_path: Path, gpud: Gpud, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flow")
    metrics = tmp_path / "metrics"
    settings = CollectorSettings(
        task_id=TASK, node="node-1", interval_s=0.1, gpud_url=gpud.url, use_nvml=False,
        metrics_dir=metrics, endpoint=receiver.url, batch_size=BATCH, backoff_min_s=0.05,
        backoff_max_s=0.2, send_timeout_s=1.0, shutdown_grace_s=2.0, flush_interval_s=0.2)
    reader = SteppedClock(gpud.url, timeout_s=2.0, deadline_s=2.0)
    now = datetime.now(timezone.utc)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
    reader.offset = midnight - timedelta(seconds=1) - now  # one second before midnight
    daemon = InProcessDaemon(settings, gpud=reader).start()
    try:
        wait_for(lambda: receiver.unique >= 3, what="first deliveries")
        wait_for(lambda: len(_days(metrics)) == 2, what="midnight crossed")

        reader.offset += timedelta(days=1)  # the clock runs a day ahead: tomorrow's file
        wait_for(lambda: len(_days(metrics)) == 3, what="a future-dated sample")
        receiver.stop()  # the endpoint goes down ...
        reader.offset -= timedelta(days=1, seconds=30)  # ... and NTP steps back across midnight
        seen = len(stored_ids(metrics, TASK))
        wait_for(lambda: len(stored_ids(metrics, TASK)) >= seen + 5, what="samples after the step back")
        receiver.start()
        reader.offset -= timedelta(days=2)  # and a step far back, into a day with no file yet
        seen = len(stored_ids(metrics, TASK))
        wait_for(lambda: len(stored_ids(metrics, TASK)) >= seen + 5, what="samples in an older day")
        wait_for(lambda: set(stored_ids(metrics, TASK)) <= set(receiver.ids), what="every record delivered")
    finally:
        daemon.stop()
    ids = stored_ids(metrics, TASK)
    missing = [i for i in ids if i not in receiver.ids]
    assert not missing, f"{len(missing)} of {len(ids)} stored records never delivered"
    assert receiver.duplicates <= BATCH
    assert len(_days(metrics)) == 4
    steps = [r.getMessage() for r in caplog.records if "wall clock stepped" in r.getMessage()]
    assert any("stepped forward by 864" in m for m in steps), steps
    assert any("stepped back by 8643" in m for m in steps), steps
    assert any("stepped back by 17280" in m for m in steps), steps


def test_one_future_dated_snapshot_does_not_hide_later_ones(tmp_path: Path) -> None:
    """The issue's reproduction, at the backlog the sender reads."""
    store = MetricsStore(tmp_path / "m", 7, 1, auto_cleanup=False)
    backlog = StoreBacklog(store, "task-a")
    position = backlog.end_position()
    today = datetime.now(timezone.utc).replace(microsecond=0)
    sent: list[bytes] = []
    for at in (today, today + timedelta(days=1), today + timedelta(seconds=1), today + timedelta(seconds=2)):
        store.write_snapshot(snap(at))
        lines, position = backlog.read_after(position, 100)
        sent.extend(lines)
    assert sent == [snap(at).to_json() for at in (today, today + timedelta(days=1),
                                                  today + timedelta(seconds=1), today + timedelta(seconds=2))]
    assert backlog.read_after(position, 100) == ([], position)
    time.sleep(0)  # nothing else to wait for: reads are synchronous
