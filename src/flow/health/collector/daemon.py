"""The per-node collector daemon: sample every interval, store, stream, never stop on one failure.

```
  sampler task                          sender task (when an endpoint is set)
  every interval (drift-free):          read the store after the cursor, one batch at a time
    GPUd → snapshot (NVML fallback)       POST → 2xx: move + save the cursor
    + host metrics (psutil)               failure: keep the data, back off, retry
    score → MetricsStore → wake sender    SIGTERM: drain or abandon, exit
    (urgent when the status changed)      a partial batch waits to fill, up to the flush
                                          interval; an urgent sample is sent at once
```
Sampling and sending are independent asyncio tasks: an endpoint outage of any length costs
neither samples nor memory (the backlog is read from disk, batch by batch), and a slow GPUd
costs no delivery. The schedule is nvitop's: a monotonic clock, the deadline advanced by the
interval, never a negative sleep, and ticks that were missed are skipped, not burst.

Entry points: `flow health collect`, `python -m flow.cli.collect_cmd` and the console script
`flow-metrics-streamer`, all in `flow.cli.collect_cmd`: this module never prints, never exits
and never imports the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flow.config import DEFAULT_METRICS_FLUSH_INTERVAL_S, FLUSH_INTERVAL_RANGE, Config, Thresholds
from flow.errors import ConfigError, FlowError, StorageError
from flow.fleet.instance_types import lookup_instance_type
from flow.fs import ensure_private_dir
from flow.grammar import pushgateway_group
from flow.health.bootid import local_boot_id
from flow.health.collector.host import HostSampler
from flow.health.collector.nvml import NvmlReader
from flow.health.collector.sampling import GpudReader, Sampler
from flow.health.snapshot import HealthStatus, Snapshot, format_time, utcnow
from flow.health.storage.cursors import CURSOR_DIR
from flow.health.streaming.backoff import DEFAULT_BACKOFF_MAX_S, DEFAULT_BACKOFF_MIN_S, Backoff
from flow.health.streaming.cursor import CursorFile
from flow.health.streaming.endpoint import DEFAULT_SEND_TIMEOUT_S, EndpointSink, TokenSource
from flow.health.streaming.sender import DEFAULT_SHUTDOWN_GRACE_S, Streamer
from flow.health.streaming.sink import BatchSink
from flow.secrets import validate_password

__all__ = [
    "CLEANUP_EVERY",
    "Collector",
    "CollectorSettings",
    "collect_once",
    "default_cursor_path",
    "next_deadline",
]

log = logging.getLogger("flow.collector")

#: How often the collector runs the store's retention (compress, delete), with its cursor protected.
CLEANUP_EVERY = timedelta(hours=1)
#: A difference this large between the wall clock's and the monotonic clock's advance from one
#: sample to the next is a clock step (NTP slews smaller errors), and is logged.
CLOCK_STEP_WARN_S = 5.0
_STATE_DIR = CURSOR_DIR  # where every deleter of the store looks for cursors
_ENDPOINT_VAR = "FLOW_METRICS_ENDPOINT"


def default_cursor_path(metrics_dir: Path) -> Path:
    """`<metrics_dir>/.collector/stream-cursor.json`: beside the data it points into.

    The store ignores dot-directories at its top level, so this never reads as a task.
    """
    return metrics_dir / _STATE_DIR / "stream-cursor.json"


@dataclass(frozen=True, kw_only=True)
class CollectorSettings:
    """Everything the daemon needs, resolved from the Config plus the command line."""

    task_id: str
    task_name: str = ""
    instance_type: str | None = None
    # GPUs this node should have (fewer visible is critical); from_config: the instance type's count.
    expected_gpus: int | None = None
    node: str = field(default_factory=socket.gethostname)
    interval_s: float = 60.0
    gpud_url: str | None = "https://127.0.0.1:15132"
    gpud_timeout_s: float = 5.0
    use_nvml: bool = True
    metrics_dir: Path
    retention_days: int = 7
    compress_after_days: int = 1
    thresholds: Thresholds = field(default_factory=Thresholds)
    endpoint: str | None = None
    batch_size: int = 100
    flush_interval_s: float = DEFAULT_METRICS_FLUSH_INTERVAL_S
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    gzip: bool = True
    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S
    backoff_min_s: float = DEFAULT_BACKOFF_MIN_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    cursor_path: Path | None = None

    def __post_init__(self) -> None:
        if not self.task_id:
            raise ConfigError("task id is empty; allowed: --task-id or FLOW_TASK_ID "
                              "(defaults to the hostname)")
        if not 0 < self.interval_s <= 86400:
            raise ConfigError(f"interval={self.interval_s!r} is not allowed; allowed: 0 < seconds <= 86400")
        if self.batch_size < 1:
            raise ConfigError(f"batch size={self.batch_size!r} is not allowed; allowed: an integer >= 1")
        if not FLUSH_INTERVAL_RANGE.contains(self.flush_interval_s):
            raise ConfigError(f"flush interval={self.flush_interval_s!r} is not allowed; "
                              f"allowed: {FLUSH_INTERVAL_RANGE.describe()}")
        Backoff(min_s=self.backoff_min_s, max_s=self.backoff_max_s)  # validates

    @property
    def cursor_file(self) -> Path:
        return self.cursor_path or default_cursor_path(self.metrics_dir)

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        task_id: str | None = None,
        task_name: str | None = None,
        instance_type: str | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> CollectorSettings:
        """Identity from the arguments, else FLOW_TASK_ID / FLOW_TASK_NAME / FLOW_INSTANCE_TYPE;
        a node with no task id is named by its hostname."""
        env = os.environ if env is None else env
        h = config.health
        node = socket.gethostname()
        bind = h.gpud_bind if ":" not in h.gpud_bind else f"[{h.gpud_bind}]"
        values: dict[str, Any] = {
            "task_id": task_id or env.get("FLOW_TASK_ID") or node,
            "task_name": task_name or env.get("FLOW_TASK_NAME") or "",
            "instance_type": instance_type or env.get("FLOW_INSTANCE_TYPE") or None,
            "node": node,
            "interval_s": h.metrics_interval,
            "gpud_url": f"https://{bind}:{h.gpud_port}",
            "metrics_dir": config.metrics_dir,
            "retention_days": h.retention_days,
            "compress_after_days": h.compress_after_days,
            "thresholds": config.thresholds,
            "endpoint": h.metrics_endpoint,
            "batch_size": h.metrics_batch_size,
            "flush_interval_s": h.metrics_flush_interval,
            # A token from the environment is fixed; one from a file is re-read before each send.
            "token": (h.metrics_auth_token
                      if config.sources.get("metrics_auth_token", "").startswith("env") else None),
            "token_file": h.metrics_auth_token_file,
            "gzip": h.metrics_gzip,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "expected_gpus" not in values:
            values["expected_gpus"] = lookup_instance_type(values["instance_type"]).count
        return cls(**values)


def next_deadline(deadline: float, now: float, interval: float) -> tuple[float, int]:
    """The next tick after `now` on the grid `deadline + k * interval`, and the ticks skipped.

    Drift-free: the grid is fixed by the first deadline, not by when each cycle ended; a cycle
    that overran skips the ticks it covered instead of running them back to back.
    """
    deadline += interval
    if now <= deadline:
        return deadline, 0
    missed = int((now - deadline) // interval) + 1
    return deadline + missed * interval, missed


class _DaemonLock:
    """An flock beside the cursor: one collector per store (kill -9 releases it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises FlowError when another collector holds it or it cannot be created."""
        try:
            ensure_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot create the collector's lock: {exc.strerror or exc}",
                               path=self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise FlowError(f"another collector (pid {holder}) is running on this store ({self.path})",
                            hint="stop it first, or give this one its own FLOW_METRICS_DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Collector:
    """The daemon. `await run(stop)` until `stop` is set; `await sample_once()` for one sample.

    The parts are injectable for tests and benchmarks (`gpud`, `host`, `nvml`, `store`); by
    default they are built from `settings`. `sinks` are further destinations by name (the
    `health.sinks` of config.yaml), each streamed with a cursor of its own.
    """

    def __init__(
        self,
        settings: CollectorSettings,
        *,
        gpud: GpudReader | None = None,
        host: HostSampler | None = None,
        nvml: NvmlReader | None = None,
        store: Any = None,
        sinks: Mapping[str, BatchSink] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._extra_sinks = dict(sinks or {})
        self._clock = clock
        self._gpud = gpud if gpud is not None else self._make_gpud()
        self._store = store if store is not None else self._make_store()
        self._nvml = nvml if nvml is not None else (NvmlReader() if settings.use_nvml else None)
        self.sampler = Sampler(
            settings, gpud=self._gpud, host=host or HostSampler(), nvml=self._nvml,
            thresholds=settings.thresholds, boot_id=local_boot_id() if self._gpud is not None else None,
            expected_gpus=settings.expected_gpus,
        )
        self.streamers: list[Streamer] = []
        self.cycles = 0
        self.skipped_ticks = 0
        self._wakes: list[asyncio.Event] = []
        self._urgent: list[asyncio.Event] = []
        self._last_status: HealthStatus | None = None
        self._writing: asyncio.Future[None] | None = None
        self._next_cleanup: float | None = None
        self._last_sample: tuple[datetime, float] | None = None
        self._cleanup_thread: threading.Thread | None = None

    def _make_gpud(self) -> GpudReader | None:
        if not self.settings.gpud_url:
            return None
        from flow.health.gpud.client import GpudClient  # httpx only when GPUd is used

        deadline = min(10.0, max(1.0, self.settings.interval_s))
        # GPUd samples its metrics once a minute: two minutes always hold the newest sample,
        # and asking for less than the client's default window halves the parsing per cycle.
        return GpudClient(self.settings.gpud_url, timeout_s=min(self.settings.gpud_timeout_s, deadline),
                          deadline_s=deadline, metrics_since_s=120.0)

    def _make_store(self) -> Any:
        from flow.health.storage.store import MetricsStore

        # Retention runs here, with the cursor protected, not on the store's own schedule.
        return MetricsStore(self.settings.metrics_dir, self.settings.retention_days,
                            self.settings.compress_after_days, auto_cleanup=False)

    @property
    def store(self) -> Any:
        return self._store

    @property
    def latest(self) -> Snapshot | None:
        return self.sampler.latest

    def latest_snapshots(self) -> Sequence[Snapshot]:
        """For the Prometheus endpoint: this node's newest snapshot (none before the first)."""
        latest = self.sampler.latest
        return (latest,) if latest is not None else ()

    async def sample_once(self, *, store: bool = True) -> Snapshot:
        """Take one scored sample; write it to the store unless `store` is False.

        A store that cannot be written is logged (the sample is still returned): a full disk
        must not stop the node's health from being read.
        """
        snap = await self.sampler.sample()
        self.cycles += 1
        self._check_clock(snap.timestamp)
        if store:
            # Shielded: a shutdown that cancels the sampler still lets this write finish, and
            # waits for it (`_writing`) before the sender's last read.
            self._writing = asyncio.ensure_future(asyncio.to_thread(self._store.write_snapshot, snap))
            try:
                await asyncio.shield(self._writing)
            except StorageError as exc:
                log.error("sample not stored: %s", exc)
            else:
                self._wake_senders(snap)
        return snap

    def _wake_senders(self, snap: Snapshot) -> None:
        """Tell each sender a sample is stored; urgently when the node's status changed (the
        first sample after start counts as a change, so a destination hears of a node at once):
        a fault never waits for a batch to fill."""
        status = snap.status
        if status != self._last_status:
            self._last_status = status
            for urgent in self._urgent:
                urgent.set()
        for wake in self._wakes:
            wake.set()

    def _check_clock(self, wall: datetime) -> None:
        """Log a step of the wall clock between two samples (NTP stepping it, an operator
        setting it): the samples keep the times they were taken at, so the history has a gap
        or an overlap there, but delivery reads by position in the files and loses nothing."""
        mono = self._clock()
        if self._last_sample is not None:
            last_wall, last_mono = self._last_sample
            step = (wall - last_wall).total_seconds() - (mono - last_mono)
            if abs(step) >= CLOCK_STEP_WARN_S:
                log.warning("the wall clock stepped %s by %.1f s between two samples (%s, then %s); "
                            "each sample keeps its own time and every one is still delivered",
                            "back" if step < 0 else "forward", abs(step), format_time(last_wall),
                            format_time(wall))
        self._last_sample = (wall, mono)

    @property
    def streamer(self) -> Streamer | None:
        """The first destination's streamer (FLOW_METRICS_ENDPOINT when it is set)."""
        return self.streamers[0] if self.streamers else None

    def _make_streamers(self) -> list[Streamer]:
        """One streamer, with its own cursor, per destination: the endpoint, then each sink."""
        s = self.settings
        destinations: list[tuple[BatchSink, Path, float]] = []
        if s.endpoint:
            endpoint, latest_only = self._endpoint_sink(s.endpoint)
            # A Pushgateway keeps only the latest push: holding a sample back for a batch to
            # fill would only leave the gateway's values stale.
            destinations.append((endpoint, s.cursor_file, 0.0 if latest_only else s.flush_interval_s))
        for name, extra in self._extra_sinks.items():
            destinations.append((extra, s.cursor_file.with_name(f"stream-cursor-{name}.json"),
                                 s.flush_interval_s))
        if not destinations:
            return []
        from flow.health.streaming.store_source import StoreBacklog

        streamers = []
        for sink, path, flush_s in destinations:
            backlog = StoreBacklog(self._store, s.task_id)
            state = CursorFile(path).load()
            if state is not None and not backlog.is_ours(state.position):
                log.warning("stream cursor %s belongs to another task; starting it afresh for %s",
                            path, s.task_id)
                with contextlib.suppress(OSError):
                    path.unlink()
            streamers.append(Streamer(
                source=backlog, sink=sink, cursor=CursorFile(path), batch_size=s.batch_size,
                poll_s=s.interval_s, backoff=Backoff(min_s=s.backoff_min_s, max_s=s.backoff_max_s),
                shutdown_grace_s=s.shutdown_grace_s, flush_s=flush_s,
            ))
        return streamers

    def _endpoint_sink(self, url: str) -> tuple[BatchSink, bool]:
        """FLOW_METRICS_ENDPOINT's destination: the JSON payload POSTed, or, when the URL is a
        Pushgateway's (`/metrics/job/<job>[/<label>/<value>...]`), this node's latest snapshot
        PUT in the exposition format to its own group (the path's labels, then task_id and
        node), through the Pushgateway sink. Either way the same cursor file and retries.
        The flag is True for a Pushgateway (it keeps only the latest push).

        Raises:
            ConfigError: a malformed grouping path, a bad password in the URL, or both a
                password in the URL and a bearer token (a request carries one Authorization).
        """
        s = self.settings
        has_token = s.token is not None or s.token_file is not None
        tokens = TokenSource(token=s.token, path=s.token_file if s.token is None else None)
        group = pushgateway_group(url, name=_ENDPOINT_VAR)
        if group is None:
            return EndpointSink(url, tokens=tokens, gzip=s.gzip, timeout_s=s.send_timeout_s), False
        password = group.password
        if group.username is not None:
            if has_token:
                raise ConfigError(f"{_ENDPOINT_VAR} carries user:password@ and FLOW_METRICS_AUTH_TOKEN "
                                  "is set too; allowed: one of them (a request has one Authorization)")
            password = validate_password(password or "", source=f"the password in {_ENDPOINT_VAR}")
        # The sinks package (and its aiohttp) only when a Pushgateway is the destination.
        from flow.health.sinks.pushgateway import PushgatewaySink
        from flow.health.sinks.settings import PushgatewaySettings
        from flow.health.streaming.sink_bridge import SinkBridge

        settings = PushgatewaySettings(
            name=_ENDPOINT_VAR, type="pushgateway", timeout_s=s.send_timeout_s, url=group.base_url,
            job=group.job, grouping=group.labels, username=group.username, password=password)
        return SinkBridge(PushgatewaySink(settings, bearer=tokens.get if has_token else None)), True

    async def run(self, stop: asyncio.Event) -> None:
        """Collect (and stream) until `stop` is set; returns after a clean shutdown.

        Raises:
            FlowError: another collector holds this store, or the cursor cannot be written.
        """
        s = self.settings
        lock = _DaemonLock(s.cursor_file.parent / "collector.lock")
        lock.acquire()
        try:
            self.streamers = self._make_streamers()
            for streamer in self.streamers:
                await asyncio.to_thread(streamer.resume)
            log.info("collecting every %g s for task %s on %s into %s%s", s.interval_s, s.task_id, s.node,
                     s.metrics_dir, "".join(f", streaming to {x.destination}" for x in self.streamers))
            # The senders stop after the sampler, so that their last read sees the last sample.
            sender_stop = asyncio.Event()
            self._wakes = [asyncio.Event() for _ in self.streamers]
            self._urgent = [asyncio.Event() for _ in self.streamers]
            tasks = [asyncio.create_task(self._sample_loop(stop), name="flow-sampler")]
            tasks += [asyncio.create_task(x.run(sender_stop, wake, urgent), name=f"flow-sender-{i}")
                      for i, (x, wake, urgent) in enumerate(
                          zip(self.streamers, self._wakes, self._urgent, strict=True))]
            try:
                # Returns when the sampler ends (on stop) or either task fails.
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = task.exception()
                    if error is not None:
                        raise error
            finally:
                stop.set()
                # A sample in flight is dropped (a store write already under way completes in
                # its thread); the sender finishes or abandons its batch within its grace period.
                sampler, *sender = tasks
                sampler.cancel()
                if self._writing is not None:
                    await asyncio.wait({self._writing}, timeout=s.shutdown_grace_s)
                sender_stop.set()
                for task in sender:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(task), s.shutdown_grace_s + 2.0)
                for task in tasks:
                    if not task.done():
                        task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        finally:
            await self.aclose()
            lock.release()
        log.info("stopped after %d cycles%s", self.cycles,
                 "".join(f"; {x.stats.delivered} records delivered to {x.destination} this run"
                         for x in self.streamers))

    async def _sample_loop(self, stop: asyncio.Event) -> None:
        interval = self.settings.interval_s
        deadline = self._clock()
        streak = 0
        while not stop.is_set():
            try:
                await self.sample_once()
            except Exception as exc:
                # One bad cycle (a bug in an adapter, a psutil surprise) must not end the daemon.
                log.exception("collection cycle failed: %s", exc)
            self._maybe_cleanup()
            deadline, missed = next_deadline(deadline, self._clock(), interval)
            if missed:
                self.skipped_ticks += missed
                streak += missed
                if streak == missed:  # the first overrun of a streak; the rest go to debug
                    log.warning("collection cycle overran the %g s interval; skipping missed ticks",
                                interval)
                log.debug("skipped %d tick(s)", missed)
            elif streak:
                log.info("back on schedule after skipping %d tick(s)", streak)
                streak = 0
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, deadline - self._clock()))

    def _maybe_cleanup(self) -> None:
        """Start retention (hourly, and at start-up) in a thread of its own.

        Compressing a day of 1 s samples takes seconds: it must not hold up the schedule, and
        a daemon thread does not hold up shutdown either (an interrupted compression leaves
        only a temporary file, which the next cleanup removes).
        """
        now = self._clock()
        if self._next_cleanup is not None and now < self._next_cleanup:
            return
        if self._cleanup_thread is not None and self._cleanup_thread.is_alive():
            return
        self._next_cleanup = now + CLEANUP_EVERY.total_seconds()
        self._cleanup_thread = threading.Thread(target=self._cleanup_logged, name="flow-retention",
                                                daemon=True)
        self._cleanup_thread.start()

    def _cleanup_logged(self) -> None:
        try:
            self._cleanup()
        except Exception as exc:  # housekeeping never costs a sample
            log.warning("retention cleanup failed: %s", exc)

    def _cleanup(self) -> None:
        # The store keeps every day a destination has not acknowledged: it reads each cursor
        # under <metrics_dir>/.collector/, as `flow health cleanup` does.
        result = self._store.cleanup(utcnow())
        if result.undelivered:
            log.warning("retention kept %d file(s) past %d days because they are not yet delivered: %s",
                        len(result.kept), self.settings.retention_days,
                        "; ".join(result.undelivered[:5]))
        if result.deleted:
            log.info("retention deleted %d file(s) older than %d days", len(result.deleted),
                     self.settings.retention_days)
        for error in result.errors:
            log.warning("retention: %s", error)

    async def aclose(self) -> None:
        if self._gpud is not None:
            with contextlib.suppress(Exception):
                await self._gpud.aclose()
        for streamer in self.streamers:
            with contextlib.suppress(Exception):
                await streamer.aclose()
        if self._nvml is not None:
            self._nvml.close()


async def collect_once(settings: CollectorSettings, *, store: bool = True, **parts: Any) -> Snapshot:
    """One scored sample of this node (the `--once` path)."""
    collector = Collector(settings, **parts)
    try:
        return await collector.sample_once(store=store)
    finally:
        await collector.aclose()
