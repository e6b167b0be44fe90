"""Batching (issue 13, item 9): FLOW_METRICS_BATCH_SIZE records per POST, and when a partial batch goes.

The real daemon against the simulated GPUd and a real HTTP receiver that counts POSTs and
records. A partial batch is held until it fills, until its oldest record has waited the flush
interval, until the node's status changes (the first sample after start counts as a change),
or until shutdown; a backlog goes in full batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from collector.daemon import Gpud, InProcessDaemon, stored_ids, wait_for
from collector.receiver import Receiver
from flow.health.collector import CollectorSettings
from flow.health.storage.store import MetricsStore
from flow.health.storage.stream import StreamPosition
from flow.health.streaming.payload import record_from_dict

TASK = "task-batch"
LONG_S = 3600.0  # a flush interval no test waits for


@pytest.fixture
def gpud() -> Iterator[Gpud]:
    sim = Gpud(gpu_count=2)
    yield sim
    sim.close()


def _settings(tmp_path: Path, gpud: Gpud, receiver: Receiver, **kw: object) -> CollectorSettings:
    values: dict[str, object] = {
        "task_id": TASK, "node": "node-1", "interval_s": 0.1, "gpud_url": gpud.url, "use_nvml": False,
        "metrics_dir": tmp_path / "metrics", "endpoint": receiver.url, "batch_size": 5,
        "flush_interval_s": LONG_S, "backoff_min_s": 0.05, "backoff_max_s": 0.3, "send_timeout_s": 2.0,
        "shutdown_grace_s": 2.0, "gpud_timeout_s": 0.5,
    }
    values.update(kw)
    return CollectorSettings(**values)  # type: ignore[arg-type]


def _stored(tmp_path: Path) -> list[tuple[str, str]]:
    """(record id, status) of every stored snapshot, in order."""
    store = MetricsStore(tmp_path / "metrics", 7, 1, auto_cleanup=False)
    out = []
    for data, _ in store.iter_raw_from(StreamPosition.start(TASK)):
        snap = orjson.loads(data)
        out.append((record_from_dict(snap)["id"], snap["verdict"]["status"]))
    return out


def _posts(receiver: Receiver) -> list[list[str]]:
    """The record ids of each 2xx POST, in arrival order."""
    return [[m["id"] for m in p["metrics"]] for p in receiver.payloads]


def _sizes(receiver: Receiver) -> list[int]:
    return [len(ids) for ids in _posts(receiver)]


def test_a_partial_batch_is_held_until_it_fills(tmp_path: Path, gpud: Gpud, receiver: Receiver) -> None:
    receiver.keep_payloads = True
    daemon = InProcessDaemon(_settings(tmp_path, gpud, receiver)).start()
    try:
        # The first sample is a change of status (none before it): sent at once, alone.
        wait_for(lambda: len(receiver.payloads) >= 1, what="the first sample")
        # Four more healthy samples: a partial batch of 4, not sent.
        wait_for(lambda: len(_stored(tmp_path)) >= 5, what="four more samples")
        assert _sizes(receiver)[:1] == [1]
        sizes = _sizes(receiver)
        assert sizes in ([1], [1, 5]), sizes  # [1, 5]: the sixth sample was stored meanwhile
        # The fifth sample fills the batch: one POST of 5.
        wait_for(lambda: len(receiver.payloads) >= 2, what="a full batch")
    finally:
        daemon.stop()
    stored = _stored(tmp_path)
    assert {status for _, status in stored} == {"healthy"}  # no change of status to send early
    posts = _posts(receiver)
    assert posts[0] == [stored[0][0]]
    assert posts[1] == [i for i, _ in stored[1:6]]


def test_a_change_of_status_is_sent_at_once(tmp_path: Path, gpud: Gpud, receiver: Receiver) -> None:
    receiver.keep_payloads = True
    # A batch of 50 never fills during the test: only the changes of status send.
    daemon = InProcessDaemon(_settings(tmp_path, gpud, receiver, batch_size=50)).start()
    try:
        wait_for(lambda: len(receiver.payloads) >= 1, what="the first sample")
        wait_for(lambda: len(_stored(tmp_path)) >= 3, what="healthy samples held")
        assert len(receiver.payloads) == 1
        gpud.down()  # GPUd stops answering: the node is unknown from the next sample on
        wait_for(lambda: len(receiver.payloads) >= 2, what="the change to unknown")
        seen = len(_stored(tmp_path))
        wait_for(lambda: len(_stored(tmp_path)) >= seen + 2, what="more unknown samples, held")
        gpud.up()  # and back: healthy again, sent at once too
        wait_for(lambda: len(receiver.payloads) >= 3, what="the change back to healthy")
    finally:
        daemon.stop()
    stored = dict(_stored(tmp_path))
    posts = _posts(receiver)
    # Each early POST ends with the sample whose status changed, and carries the held ones before it.
    assert [stored[p[-1]] for p in posts[:3]] == ["healthy", "unknown", "healthy"]
    assert len(posts[1]) >= 3 and stored[posts[1][-2]] == "healthy"
    assert stored[posts[2][-2]] == "unknown"
    assert all(len(p) < 50 for p in posts)


def test_the_flush_interval_sends_a_partial_batch(tmp_path: Path, gpud: Gpud, receiver: Receiver) -> None:
    receiver.keep_payloads = True
    daemon = InProcessDaemon(_settings(tmp_path, gpud, receiver, batch_size=1000,
                                       flush_interval_s=1.0)).start()
    try:
        wait_for(lambda: len(receiver.payloads) >= 3, what="two flushes after the first sample")
    finally:
        daemon.stop()
    sizes = _sizes(receiver)
    # After the first (a change of status), each flush carries what gathered over a second,
    # far short of a batch: the interval sent it, not a full batch.
    assert sizes[0] == 1
    assert all(1 < n < 1000 for n in sizes[1:3]), sizes


def test_shutdown_sends_what_is_held(tmp_path: Path, gpud: Gpud, receiver: Receiver) -> None:
    receiver.keep_payloads = True
    daemon = InProcessDaemon(_settings(tmp_path, gpud, receiver, batch_size=1000)).start()
    try:
        wait_for(lambda: len(receiver.payloads) >= 1, what="the first sample")
        wait_for(lambda: len(_stored(tmp_path)) >= 4, what="samples held")
        assert _sizes(receiver) == [1]
    finally:
        daemon.stop()
    ids = stored_ids(tmp_path / "metrics", TASK)
    posts = _posts(receiver)
    assert len(posts) == 2 and len(posts[1]) >= 3
    assert [i for p in posts for i in p] == ids  # everything, once, in order


def test_a_backlog_is_replayed_in_full_batches(tmp_path: Path, gpud: Gpud, receiver: Receiver) -> None:
    receiver.keep_payloads = True
    receiver.stop()  # the endpoint is down from the start: a backlog builds up
    daemon = InProcessDaemon(_settings(tmp_path, gpud, receiver)).start()
    try:
        wait_for(lambda: len(_stored(tmp_path)) >= 17, what="a backlog of three batches and more")
        receiver.start()
        wait_for(lambda: sum(_sizes(receiver)) >= 15, what="the backlog replayed")
    finally:
        daemon.stop()
    sizes = _sizes(receiver)
    assert sizes[:3] == [5, 5, 5], sizes
    assert [i for p in _posts(receiver) for i in p] == stored_ids(tmp_path / "metrics", TASK)
