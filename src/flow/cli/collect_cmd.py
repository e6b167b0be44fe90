"""`flow health collect`: the per-node collector daemon (also `flow-metrics-streamer`).

Runs in the foreground for systemd: logs go to stderr, one line per event
(`2025-01-01T00:00:00.000Z INFO collector message`), never in colour, never with the token.
SIGTERM or SIGINT: the in-flight batch is finished or abandoned within a few seconds, the
cursor is saved, and the exit status is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import click
import orjson

from flow.cli.common import get_config, run_cli, stop_on_signals
from flow.cli.numbers import (
    BACKOFF_MAX_RANGE,
    BACKOFF_MIN_RANGE,
    EXPECTED_GPUS_RANGE,
    SEND_TIMEOUT_RANGE,
    Bounded,
)
from flow.config import FLUSH_INTERVAL_RANGE, METRICS_INTERVAL_RANGE, Config
from flow.health.collector import Collector, CollectorSettings
from flow.health.streaming.sink import BatchSink

__all__ = ["LogFormatter", "collect", "run_standalone", "setup_logging", "tune_malloc"]

LOG_LEVELS = ("debug", "info", "warning", "error")
# mallopt() parameters, from glibc's malloc.h.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


class LogFormatter(logging.Formatter):
    """`ts level component message` on one line; a traceback is folded onto the same line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, timezone.utc)
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
        component = record.name.removeprefix("flow.")
        message = record.getMessage()
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            lines = (line.strip() for line in trace.splitlines() if line.strip())
            message = f"{message} | " + " | ".join(lines)
        message = " ".join(message.splitlines())
        return f"{stamp} {record.levelname} {component} {message}"


def setup_logging(level: str) -> None:
    """Send flow's logs to stderr at `level`; quiet the HTTP libraries' per-request lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter())
    root = logging.getLogger("flow")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def tune_malloc() -> None:
    """Keep a long-running daemon's RSS flat (glibc; elsewhere nothing happens).

    A backlog replay allocates megabyte buffers in several threads. By default glibc gives each
    thread its own arena and, after the first large free, raises its mmap threshold so later
    buffers come from the heap, where fragmentation keeps them resident. A fixed 128 KiB
    threshold returns large buffers to the system when freed, and two arenas are plenty for
    one event loop and two worker threads.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    mallopt(_M_ARENA_MAX, 2)


@click.command("collect")
@click.option("--once", is_flag=True, help="Take one sample, print it as JSON on stdout and exit.")
@click.option("--task-id", envvar="FLOW_TASK_ID",
              help="Task id of this node [env FLOW_TASK_ID; default: the hostname].")
@click.option("--task-name", envvar="FLOW_TASK_NAME", help="Task name [env FLOW_TASK_NAME].")
@click.option("--instance-type", envvar="FLOW_INSTANCE_TYPE", help="Instance type [env FLOW_INSTANCE_TYPE].")
@click.option("--expected-gpus", type=Bounded(EXPECTED_GPUS_RANGE), envvar="FLOW_EXPECTED_GPUS", metavar="N",
              help="GPUs this node should have, 0-1024: fewer visible is critical (gpu_missing) "
                   "[env FLOW_EXPECTED_GPUS; default: the instance type's count].")
@click.option("--interval", type=Bounded(METRICS_INTERVAL_RANGE), metavar="SECONDS",
              help="Seconds between samples, 0.05-86400 [default: FLOW_METRICS_INTERVAL, 60].")
@click.option("--flush-interval", type=Bounded(FLUSH_INTERVAL_RANGE), metavar="SECONDS",
              help="Longest a partial batch waits before it is sent, 0-86400 (0: each sample "
                   "at once) [default: FLOW_METRICS_FLUSH_INTERVAL, 300].")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True,
              help="Least severe log lines written to stderr.")
@click.option("--prometheus-listen", metavar="HOST:PORT",
              help="Also serve this node's latest snapshot at http://HOST:PORT/metrics.")
@click.option("--backoff-min", type=Bounded(BACKOFF_MIN_RANGE), envvar="FLOW_METRICS_BACKOFF_MIN",
              metavar="SECONDS",
              help="First retry ceiling after a failed send, 0.01-3600 [env FLOW_METRICS_BACKOFF_MIN; 1].")
@click.option("--backoff-max", type=Bounded(BACKOFF_MAX_RANGE), envvar="FLOW_METRICS_BACKOFF_MAX",
              metavar="SECONDS",
              help="Longest wait between sends, 0.01-86400 [env FLOW_METRICS_BACKOFF_MAX; 300].")
@click.option("--send-timeout", type=Bounded(SEND_TIMEOUT_RANGE), envvar="FLOW_METRICS_SEND_TIMEOUT",
              metavar="SECONDS",
              help="Limit for one POST to the endpoint, 0.1-3600 [env FLOW_METRICS_SEND_TIMEOUT; 10].")
@click.option("--no-nvml", is_flag=True, help="Never read GPUs through NVML when GPUd is unreachable.")
@click.option("--no-store", is_flag=True, help="With --once: print the sample without storing it.")
def collect(
    once: bool, task_id: str | None, task_name: str | None, instance_type: str | None,
    expected_gpus: int | None, interval: float | None, flush_interval: float | None, log_level: str,
    prometheus_listen: str | None, backoff_min: float | None, backoff_max: float | None,
    send_timeout: float | None, no_nvml: bool, no_store: bool,
) -> None:
    """Collect this node's health every interval: GPUd (or NVML), host metrics, scored,
    stored under FLOW_METRICS_DIR and streamed to FLOW_METRICS_ENDPOINT when it is set.

    \b
    Runs in the foreground (systemd); stop it with SIGTERM (exit 0).
    Records go to the endpoint in batches of FLOW_METRICS_BATCH_SIZE: a partial
    batch is sent after the flush interval, and at once when the node's status
    changes. With FLOW_HEALTH_MONITORING=false the daemon logs that and exits 0
    (--once still samples on demand).
    Nothing collected is lost while the endpoint is down: the store is the
    backlog and a cursor records what the endpoint acknowledged.
    Exit codes: 0 ok; 1 it could not run (another collector holds the store);
    2 usage or configuration error.
    """
    setup_logging(log_level)
    config = get_config()
    if not once and _monitoring_disabled(config):
        return
    settings = CollectorSettings.from_config(
        config, task_id=task_id, task_name=task_name, instance_type=instance_type,
        expected_gpus=expected_gpus, interval_s=interval, flush_interval_s=flush_interval,
        backoff_min_s=backoff_min, backoff_max_s=backoff_max, send_timeout_s=send_timeout,
        use_nvml=False if no_nvml else None,
    )
    if settings.backoff_min_s > settings.backoff_max_s:
        raise click.BadParameter(f"--backoff-min={settings.backoff_min_s:g} is above "
                                 f"--backoff-max={settings.backoff_max_s:g}; allowed: min <= max")
    listen = None
    if prometheus_listen is not None:
        from flow.health.sinks.prometheus import parse_listen

        listen = parse_listen(prometheus_listen, name="--prometheus-listen")
    if once:
        snapshot = asyncio.run(_once(settings, store=not no_store))
        click.echo(orjson.dumps(snapshot.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    tune_malloc()
    asyncio.run(_daemon(settings, listen, _config_sinks(config)))


def _monitoring_disabled(config: Config) -> bool:
    """Monitoring switched off: say so and let the daemon exit 0 at once. The unit restarts
    the collector only on failure, so a clean exit stays stopped instead of looping."""
    switch = config.monitoring_disabled_by
    if switch is None:
        return False
    logging.getLogger("flow.collector").warning(
        "health monitoring is disabled (%s); the collector exits", switch)
    return True


def _config_sinks(config: Config) -> dict[str, BatchSink]:
    """The `health.sinks` of config.yaml as stream destinations (none: nothing imported)."""
    if not config.sinks:
        return {}
    from flow.health.sinks import build_sinks
    from flow.health.streaming.sink_bridge import SinkBridge

    return {sink.name: SinkBridge(sink) for sink in build_sinks(config)}


async def _once(settings: CollectorSettings, *, store: bool) -> Any:
    collector = Collector(settings)
    try:
        return await collector.sample_once(store=store)
    finally:
        await collector.aclose()


async def _daemon(settings: CollectorSettings, listen: tuple[str, int] | None,
                  sinks: dict[str, BatchSink]) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    collector = Collector(settings, sinks=sinks)
    server = None
    try:
        if listen is not None:
            from flow.health.sinks.prometheus import serve_prometheus

            server = await serve_prometheus(collector.latest_snapshots, host=listen[0], port=listen[1])
            logging.getLogger("flow.collector").info("serving Prometheus metrics at %s", server.url)
        await collector.run(stop)
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                await server.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().remove_signal_handler(sig)


def run_standalone(argv: Sequence[str] | None = None) -> int:
    """`flow-metrics-streamer` and `python -m flow.cli.collect_cmd`: `collect` as the whole command."""
    return run_cli(collect, argv, prog_name="flow-metrics-streamer")


if __name__ == "__main__":  # python -m flow.cli.collect_cmd
    raise SystemExit(run_standalone())
