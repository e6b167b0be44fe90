"""`flow health serve | export | grafana-dashboard | sinks`: the integrations with other systems."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from flow.cli.common import get_config, run_async, stop_on_signals
from flow.cli.numbers import HISTORY_HOURS_RANGE, SWEEP_INTERVAL_RANGE, Bounded
from flow.config import Config
from flow.errors import ConfigError
from flow.health.sinks.base import EncodedRequest, EncodingSink
from flow.health.sinks.cloudwatch import CloudWatchSink
from flow.health.sinks.datadog import DatadogSink
from flow.health.sinks.factory import build_sink
from flow.health.sinks.grafana import dashboard
from flow.health.sinks.otlp import OtlpSink
from flow.health.sinks.prometheus import (
    DEFAULT_LISTEN,
    PrometheusExporter,
    parse_listen,
)
from flow.health.sinks.pushgateway import PushgatewaySink
from flow.health.sinks.settings import SinkSettings, parse_sink_settings, parse_sinks
from flow.health.sinks.vocabulary import metric_families
from flow.health.snapshot import Snapshot, format_time, utcnow

if TYPE_CHECKING:
    from flow.health.sweep.checker import Checker, SweepSession

__all__ = ["export", "grafana_dashboard", "serve", "sinks_cmd"]

SweepFn = Callable[[], Awaitable[Sequence[Snapshot]]]

#: --format -> the sink type that sends it ("json" is printed, never sent).
FORMATS = {"prometheus": "pushgateway", "datadog": "datadog", "cloudwatch": "cloudwatch", "otlp": "otlp",
           "json": None}
#: Settings a dry run uses when config.yaml has no section of that type.
_DRY_RUN_DEFAULTS: dict[str, dict[str, Any]] = {"pushgateway": {"url": "http://127.0.0.1:9091"}}


def _check_listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ConfigError as exc:
        raise click.BadParameter(exc.message.split("; ", 1)[-1].replace("allowed: ", "use ")
                                 + f" (got {value!r})") from None


def read_snapshot_file(path: Path) -> list[Snapshot]:
    """Snapshots from a JSONL file (`-` for stdin); blank lines are skipped.

    Raises:
        ConfigError: the file is unreadable, or a line is not a snapshot (named by number).
    """
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--input={str(path)!r}: cannot read: {exc.strerror}") from None
    snapshots = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            snapshots.append(Snapshot.from_json(line))
        except ValueError as exc:
            raise ConfigError(f"--input={str(path)!r} line {number} is not a snapshot: {exc}") from None
    return snapshots


def _live_sweep(config: Config, *, keep_connections: bool = False) -> _LiveSweep:
    """The sweep of `flow health --gpu`: every GPU task of the inventory, over SSH.

    The inventory is re-read at each sweep, so tasks added or removed while `serve` runs
    show up at the next sweep. With `keep_connections` (serve), the SSH and GPUd connections stay
    open between sweeps (`Checker.session()`): each node sees one login, not one per interval;
    the returned callable's `aclose()` closes them.

    Raises:
        ConfigError: the inventory holds no GPU task (checked once, up front).
    """
    from flow.fleet.inventory import Inventory
    from flow.health.sweep.checker import Checker, SweepOptions
    from flow.ssh import SSHOptions

    inventory = Inventory.from_config(config)
    if not inventory.gpu_tasks():
        raise ConfigError(f"no GPU tasks to check in {inventory.path}",
                          hint="add one with: flow tasks add NAME --host HOST --instance-type h100.8xlarge, "
                               "or use --input FILE")
    checker = Checker(SSHOptions.from_config(config), SweepOptions(thresholds=config.thresholds))
    return _LiveSweep(config, checker, checker.session() if keep_connections else None)


class _LiveSweep:
    """A `SweepFn` over the inventory's GPU tasks, in a sweep session when it keeps connections."""

    def __init__(self, config: Config, checker: Checker, session: SweepSession | None) -> None:
        self._config, self._checker, self._session = config, checker, session

    async def __call__(self) -> Sequence[Snapshot]:
        from flow.fleet.inventory import Inventory
        from flow.health.sweep.checker import targets_for

        targets = targets_for(Inventory.from_config(self._config).gpu_tasks(), self._config)
        result = await (self._session.sweep(targets) if self._session is not None
                        else self._checker.sweep(targets))
        return result.snapshots

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.aclose()


@click.command("serve")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, callback=_check_listen,
              help="Address for /metrics: HOST:PORT, [IPv6]:PORT, or :PORT for all interfaces.")
@click.option("--interval", type=Bounded(SWEEP_INTERVAL_RANGE), default=30.0, show_default=True,
              help="Seconds between fleet sweeps, 0.05-86400.")
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Serve the snapshots of a JSONL file (re-read every interval) instead of sweeping.")
def serve(listen: tuple[str, int], interval: float, input_path: Path | None) -> None:
    """Prometheus exporter: sweep the fleet every --interval, serve the verdicts at /metrics.

    \b
    Metric names: docs/metrics.md. Besides the per-node and per-GPU metrics it serves
    flow_sweep_duration_seconds, flow_sweep_success and flow_node_scrape_success.
    Runs until Ctrl-C or SIGTERM. Exit 2 on a bad option or an address it cannot bind.
    """
    config = get_config()
    sweep: SweepFn
    if input_path is not None:
        path = input_path

        async def from_file() -> Sequence[Snapshot]:
            return await asyncio.to_thread(read_snapshot_file, path)

        sweep = from_file
    else:
        sweep = _live_sweep(config, keep_connections=True)
    asyncio.run(_serve(sweep, listen, interval))


async def _serve(sweep: SweepFn, listen: tuple[str, int], interval: float) -> None:
    exporter = PrometheusExporter(sweep, interval_s=interval)
    server = await exporter.serve(host=listen[0], port=listen[1])
    stop = asyncio.Event()
    stop_on_signals(stop)
    click.echo(f"serving {server.url} (a sweep every {interval:g} s); Ctrl-C stops", err=True)
    try:
        await exporter.run(stop)
    finally:
        await server.aclose()
        if isinstance(sweep, _LiveSweep):
            await sweep.aclose()


def _settings_for(config: Config, sink_type: str, name: str | None, *, dry_run: bool) -> SinkSettings:
    sections = parse_sinks(config.sinks)
    if name is not None:
        for settings in sections:
            if settings.name == name:
                if settings.type != sink_type:
                    raise ConfigError(f"--sink={name!r} is a {settings.type} sink, not {sink_type}; "
                                      f"allowed: a health.sinks section of type {sink_type}")
                return settings
        raise ConfigError(f"--sink={name!r} is not in health.sinks; allowed: "
                          + (", ".join(s.name for s in sections) or "none configured"))
    for settings in sections:
        if settings.type == sink_type:
            return settings
    if not dry_run:
        raise ConfigError(f"no health.sinks section of type {sink_type} in {config.config_file}",
                          hint="add one (docs/integrations.md), or use --dry-run to see what would be sent")
    return parse_sink_settings(sink_type, _DRY_RUN_DEFAULTS.get(sink_type, {}))


def _json_document(snapshots: Sequence[Snapshot]) -> bytes:
    families = [
        {
            "name": f.spec.name,
            "type": f.spec.type.value,
            "unit": f.spec.unit,
            "help": f.spec.help,
            "samples": [{"labels": s.label_dict, "value": s.value, "timestamp": format_time(s.timestamp)}
                        for s in f.samples],
        }
        for f in metric_families(snapshots)
    ]
    return orjson.dumps({"metrics": families}, option=orjson.OPT_INDENT_2)


def _show_requests(sink: EncodingSink, requests: list[EncodedRequest]) -> None:
    for number, request in enumerate(requests, 1):
        click.echo(f"# request {number} of {len(requests)}")
        click.echo(request.describe())
        body = request.body
        if isinstance(sink, OtlpSink) and sink.settings.encoding == "protobuf":
            click.echo("# protobuf on the wire; shown as the same message in OTLP JSON")
            body = sink.json_view(request)
        click.echo("")
        click.echo(body.decode("utf-8", errors="replace").rstrip("\n"))
        click.echo("")


def _load_snapshots(config: Config, input_path: Path | None, from_store: bool, task: str | None,
                    hours: float) -> list[Snapshot]:
    if input_path is not None:
        return read_snapshot_file(input_path)
    if from_store:
        from flow.health.storage import MetricsStore

        end = utcnow()
        store = MetricsStore(config=config)
        return list(store.read_snapshots(task_id=task, start=end - timedelta(hours=hours), end=end))
    return run_async(_sweep_once(_live_sweep(config)))


async def _sweep_once(sweep: SweepFn) -> list[Snapshot]:
    return list(await sweep())


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), required=True,
              help="prometheus (Pushgateway PUTs), datadog, cloudwatch, otlp, or json (the vocabulary).")
@click.option("--dry-run", is_flag=True, help="Print the exact requests instead of sending them.")
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Snapshots from a JSONL file (- for stdin) instead of the live fleet.")
@click.option("--from-store", is_flag=True, help="Snapshots from the local metrics store.")
@click.option("--task", help="With --from-store: only this task.")
@click.option("--hours", type=Bounded(HISTORY_HOURS_RANGE), default=1.0, show_default=True,
              help="With --from-store: the last H hours (at most 8760, a year).")
@click.option("--sink", "sink_name",
              help="The health.sinks section to use (default: the first of that type).")
def export(fmt: str, dry_run: bool, input_path: Path | None, from_store: bool, task: str | None, hours: float,
           sink_name: str | None) -> None:
    """Send the current fleet (or a stored window) to a sink once, or show what would be sent.

    \b
    flow health export --format datadog --dry-run --input snapshots.jsonl
    flow health export --format otlp --from-store --task task-abc123 --hours 6
    Secrets are never printed: their headers show as <redacted>.
    """
    if input_path is not None and from_store:
        raise click.UsageError("--input and --from-store are exclusive: pick one source")
    if (task is not None) and not from_store:
        raise click.UsageError("--task goes with --from-store")
    config = get_config()
    sink_type = FORMATS[fmt]
    settings = _settings_for(config, sink_type, sink_name, dry_run=dry_run) if sink_type else None
    snapshots = _load_snapshots(config, input_path, from_store, task, hours)
    if settings is None:
        click.echo(_json_document(snapshots).decode())
        return
    sink = build_sink(settings, require_secrets=not dry_run)
    assert isinstance(sink, (PushgatewaySink, DatadogSink, CloudWatchSink, OtlpSink))
    if dry_run:
        _show_requests(sink, sink.encode(snapshots))
        return
    asyncio.run(_send_once(sink, snapshots))
    click.echo(f"sent {len(snapshots)} snapshot(s) to {sink.destination}", err=True)


async def _send_once(sink: EncodingSink, snapshots: list[Snapshot]) -> None:
    try:
        await sink.send(snapshots)
    finally:
        await sink.aclose()


@click.command("grafana-dashboard")
@click.option("--datasource", help="Name (or uid) of the Prometheus data source to preselect.")
@click.option("--title", default="flow health: GPU fleet", show_default=True, help="Dashboard title.")
def grafana_dashboard(datasource: str | None, title: str) -> None:
    """Print a Grafana dashboard (JSON model) for the metric vocabulary.

    \b
    flow health grafana-dashboard --datasource Prometheus > dashboard.json
    then Grafana > Dashboards > New > Import > Upload dashboard JSON file.
    """
    model = dashboard(datasource=datasource, title=title)
    click.echo(orjson.dumps(model, option=orjson.OPT_INDENT_2).decode())


@click.command("sinks")
def sinks_cmd() -> None:
    """Validate health.sinks in config.yaml and list each sink, its destination and secrets.

    Secrets are shown only as set / not set. Exit 2 when a section is invalid.
    """
    config = get_config()
    sections = parse_sinks(config.sinks)
    if not sections:
        click.echo(f"no sinks configured (health.sinks in {config.config_file})")
        return
    for settings in sections:
        sink = build_sink(settings, require_secrets=False)
        state = "enabled" if settings.enabled else "disabled"
        secret = ""
        if isinstance(sink, DatadogSink):
            secret = "  api key: " + ("set" if sink.settings.api_key else "NOT SET")
        click.echo(f"{settings.name:<16} {settings.type:<12} {state:<9} {sink.destination}{secret}")
