"""Zero-loss streaming against a real HTTP receiver: outages, throttling, a bad token, shutdown.

Each test runs the real daemon (`Collector.run`) against the simulated GPUd and a receiver on
127.0.0.1 that counts records by id. The claim checked every time: every record in the store
reached the receiver at least once, and the duplicates stay under one batch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from collector.daemon import Gpud, InProcessDaemon, stored_ids, wait_for
from collector.receiver import Receiver
from flow.health.collector import Collector, CollectorSettings, default_cursor_path
from flow.health.snapshot import Snapshot
from flow.health.storage.store import MetricsStore
from flow.health.streaming.cursor import CursorFile

TASK = "task-stream"
BATCH = 5


@pytest.fixture
def gpud() -> Gpud:
    sim = Gpud(gpu_count=2)
    yield sim  # type: ignore[misc]
    sim.close()


def _settings(tmp_path: Path, gpud: Gpud, receiver: Receiver, **kw: object) -> CollectorSettings:
    values: dict[str, object] = {
        "task_id": TASK, "node": "node-1", "interval_s": 0.2, "gpud_url": gpud.url, "use_nvml": False,
        "metrics_dir": tmp_path / "metrics", "endpoint": receiver.url, "batch_size": BATCH,
        "backoff_min_s": 0.05, "backoff_max_s": 0.3, "send_timeout_s": 0.5, "shutdown_grace_s": 1.0,
        # A partial batch waits a little (it is held, then flushed), never the 300 s default.
        "flush_interval_s": 0.3,
    }
    values.update(kw)
    return CollectorSettings(**values)  # type: ignore[arg-type]


def _all_delivered(tmp_path: Path, receiver: Receiver) -> bool:
    ids = stored_ids(tmp_path / "metrics", TASK)
    return bool(ids) and all(i in receiver.ids for i in ids)


def _check_at_least_once(tmp_path: Path, receiver: Receiver) -> list[str]:
    ids = stored_ids(tmp_path / "metrics", TASK)
    missing = [i for i in ids if i not in receiver.ids]
    assert not missing, f"{len(missing)} of {len(ids)} records never delivered"
    assert receiver.duplicates <= BATCH
    assert set(receiver.ids) <= set(ids)  # nothing delivered that was not collected
    return ids


@pytest.mark.slow
def test_outages_throttling_and_errors_lose_nothing(tmp_path: Path, gpud: Gpud, receiver: Receiver,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flow")
    daemon = InProcessDaemon(_settings(tmp_path, gpud, receiver)).start()
    wait_for(lambda: receiver.unique >= 3, what="first deliveries")

    receiver.stop()  # connections refused
    time.sleep(0.8)
    receiver.start()
    wait_for(lambda: _all_delivered(tmp_path, receiver), what="backlog after refusal")

    receiver.stall()  # accepts, never answers: each POST times out
    time.sleep(1.2)
    receiver.ok()
    wait_for(lambda: _all_delivered(tmp_path, receiver), what="backlog after stall")

    receiver.answer(429, retry_after="1")
    wait_for(lambda: 429 in receiver.statuses(), what="a 429")
    rejected_at = len(receiver.requests)
    time.sleep(0.3)
    # Retry-After: 1 is honoured: no new attempt within the 0.3 s the jitter alone would allow.
    assert len(receiver.requests) == rejected_at
    receiver.answer(500, body="upstream down")
    wait_for(lambda: 500 in receiver.statuses(), what="a 500")
    receiver.ok()
    wait_for(lambda: _all_delivered(tmp_path, receiver), what="backlog after 429/500")

    daemon.stop()
    ids = _check_at_least_once(tmp_path, receiver)
    assert len(ids) >= 10
    assert max(r.records for r in receiver.requests) <= BATCH  # the backlog went in batches
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("failing: network" in m for m in messages) == 1
    assert sum("failing: timeout" in m for m in messages) == 1
    assert any("failing: HTTP 429" in m for m in messages)
    assert any("failing: HTTP 500" in m and "upstream down" in m for m in messages)
    assert sum("resumed after" in m for m in messages) >= 3


def test_rejected_token_then_fixed_file_resumes_without_restart(
    tmp_path: Path, gpud: Gpud, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flow")
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token-value\n")
    os.chmod(token_file, 0o600)
    receiver.token = "right-token-value"
    daemon = InProcessDaemon(_settings(tmp_path, gpud, receiver, token_file=token_file)).start()
    wait_for(lambda: receiver.statuses().count(401) >= 3, what="401s")
    assert receiver.unique == 0

    token_file.write_text("right-token-value\n")  # the operator fixes the file
    wait_for(lambda: receiver.unique > 0 and _all_delivered(tmp_path, receiver), what="delivery")
    daemon.stop()
    _check_at_least_once(tmp_path, receiver)

    messages = [r.getMessage() for r in caplog.records]
    rejected = [m for m in messages if "rejected: HTTP 401" in m]
    assert len(rejected) == 1  # status and body excerpt, logged once
    assert "invalid token" in rejected[0]
    assert not any("token-value" in m for m in messages)  # never the token


def test_restart_resumes_from_the_cursor_without_resending(tmp_path: Path, gpud: Gpud,
                                                           receiver: Receiver) -> None:
    settings = _settings(tmp_path, gpud, receiver)
    daemon = InProcessDaemon(settings).start()
    wait_for(lambda: receiver.unique >= 4, what="deliveries")
    daemon.stop()
    assert _all_delivered(tmp_path, receiver)  # a clean stop sends what is left
    cursor = CursorFile(default_cursor_path(settings.metrics_dir)).load()
    assert cursor is not None and cursor.delivered == receiver.unique
    assert oct(default_cursor_path(settings.metrics_dir).stat().st_mode & 0o777) == "0o600"

    again = InProcessDaemon(settings).start()
    before = receiver.unique
    wait_for(lambda: receiver.unique >= before + 3, what="deliveries after restart")
    again.stop()
    _check_at_least_once(tmp_path, receiver)
    assert receiver.duplicates == 0  # a clean stop saved the cursor: nothing sent twice


def test_backlog_collected_while_down_is_sent_oldest_first(tmp_path: Path, gpud: Gpud,
                                                           receiver: Receiver) -> None:
    receiver.stop()
    receiver.keep_payloads = True
    daemon = InProcessDaemon(_settings(tmp_path, gpud, receiver)).start()
    wait_for(lambda: daemon.cycles >= 3 * BATCH, what="a backlog of three batches")
    receiver.start()
    wait_for(lambda: _all_delivered(tmp_path, receiver), what="backlog delivered")
    daemon.stop()
    ids = _check_at_least_once(tmp_path, receiver)
    sent = [m["id"] for p in receiver.payloads for m in p["metrics"]]
    first_seen = list(dict.fromkeys(sent))
    assert first_seen == ids[: len(first_seen)]  # oldest first, in collection order
    assert all(len(p["metrics"]) <= BATCH for p in receiver.payloads)


def test_stop_during_a_stalled_send_exits_within_the_grace_period(
    tmp_path: Path, gpud: Gpud, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flow")
    settings = _settings(tmp_path, gpud, receiver, send_timeout_s=30.0, shutdown_grace_s=0.5)
    daemon = InProcessDaemon(settings).start()
    wait_for(lambda: receiver.unique >= 1, what="a delivery")
    receiver.stall()
    wait_for(lambda: daemon.cycles >= 4, what="samples while stalled")
    started = time.monotonic()
    daemon.stop()
    assert time.monotonic() - started < 5.0  # grace 0.5 s + generous slack; the send timeout is 30 s
    receiver.ok()
    assert any("abandoned an in-flight batch" in r.getMessage() for r in caplog.records)
    cursor = CursorFile(default_cursor_path(settings.metrics_dir)).load()
    assert cursor is not None and cursor.delivered == receiver.unique  # abandoned batch not acked


def test_retention_keeps_undelivered_days_and_says_so(tmp_path: Path, gpud: Gpud, receiver: Receiver,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flow")
    settings = _settings(tmp_path, gpud, receiver, retention_days=1)
    receiver.stop()
    daemon = InProcessDaemon(settings).start()
    wait_for(lambda: daemon.cycles >= 1, what="cursor created")
    daemon.stop()
    # Data written (as by a collector whose endpoint was down) three days ago, after the cursor.
    old = datetime.now(timezone.utc) - timedelta(days=3)
    store = MetricsStore(settings.metrics_dir, 1, 1, auto_cleanup=False)
    store.write_snapshot(Snapshot(timestamp=old, task_id=TASK, node="node-1"))

    collector = Collector(settings)
    collector.streamers = collector._make_streamers()
    collector.streamers[0].resume()
    collector._cleanup()
    assert old.date() in store.days(TASK)  # undelivered: kept past retention
    assert any("not yet delivered" in r.getMessage() for r in caplog.records)


class RecordingSink:
    """A second destination (as a `health.sinks` entry is): it keeps the lines it is given."""

    destination = "recording://test"

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.fail = False

    async def send(self, lines: list[bytes]) -> None:
        from flow.health.streaming.sink import DeliveryError

        if self.fail:
            raise DeliveryError("network: down", retryable=True)
        self.lines.extend(lines)

    async def aclose(self) -> None:
        pass


def test_samples_stored_during_the_last_send_are_sent_at_shutdown(
    tmp_path: Path, gpud: Gpud, receiver: Receiver
) -> None:
    # Batches of one: while a batch is sent, the next read is already made (empty: nothing
    # newer was stored yet). Samples stored during that send, and the stop arriving then, must
    # not be taken for the end of the log on the strength of that earlier read.
    daemon = InProcessDaemon(_settings(tmp_path, gpud, receiver, batch_size=1, interval_s=0.05,
                                       send_timeout_s=5.0, shutdown_grace_s=5.0)).start()
    wait_for(lambda: receiver.unique >= 2, what="first deliveries")
    receiver.hold()  # the next send stays in flight
    held_at = daemon.cycles
    wait_for(lambda: daemon.cycles >= held_at + 3, what="samples stored during the held send")
    release = threading.Timer(0.5, receiver.ok)  # answered after the stop has begun
    release.start()
    daemon.stop()
    release.join()
    _check_at_least_once(tmp_path, receiver)


def test_each_destination_has_its_own_cursor(tmp_path: Path, gpud: Gpud, receiver: Receiver) -> None:
    extra = RecordingSink()
    extra.fail = True  # this one is down while the endpoint works
    settings = _settings(tmp_path, gpud, receiver)
    daemon = InProcessDaemon(settings, sinks={"extra": extra}).start()
    wait_for(lambda: receiver.unique >= 4, what="endpoint deliveries")
    assert extra.lines == []
    extra.fail = False
    wait_for(lambda: len(extra.lines) >= 4, what="the second destination catching up")
    daemon.stop()
    ids = _check_at_least_once(tmp_path, receiver)
    from flow.health.streaming.payload import line_identity, record_id

    assert [record_id(*line_identity(line)) for line in extra.lines] == ids
    state_dir = default_cursor_path(settings.metrics_dir).parent
    assert sorted(p.name for p in state_dir.glob("stream-cursor*.json")) == [
        "stream-cursor-extra.json", "stream-cursor.json"]
