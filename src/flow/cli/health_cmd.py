"""`flow health`: the fleet views (`--gpu`, `--task`, `--history`), and the health subcommands."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import click

from flow.cli.common import EXIT_OK, EXIT_PROBLEMS, get_config, print_json, raise_open_file_limit, run_async
from flow.cli.lazy import LazyGroup
from flow.cli.numbers import HISTORY_HOURS_RANGE, NODE_TIMEOUT_RANGE, SWEEP_INTERVAL_RANGE, Bounded
from flow.config import FAIL_ON_CHOICES, Config
from flow.errors import ConfigError
from flow.health.snapshot import HealthStatus, Snapshot

if TYPE_CHECKING:
    from rich.console import Console

    from flow.fleet.inventory import Inventory
    from flow.fleet.model import Task
    from flow.health.sweep.checker import Checker, NodeTarget, SweepResult

# Kept in step with flow.health.sweep.checker (a test checks), so that --help imports no SSH stack.
DEFAULT_CONCURRENCY = 256
DEFAULT_NODE_TIMEOUT_S = 20.0
MAX_WORKERS = 256

SUBCOMMANDS = {
    "demo": "flow.cli.demo_cmd:demo",
    "sim": "flow.cli.sim_cmd:sim",
    "collect": "flow.cli.collect_cmd:collect",
    "cleanup": "flow.cli.storage_cmd:cleanup_cmd",
    "store-stats": "flow.cli.storage_cmd:store_stats_cmd",
    "serve": "flow.cli.integrations_cmd:serve",
    "export": "flow.cli.integrations_cmd:export",
    "grafana-dashboard": "flow.cli.integrations_cmd:grafana_dashboard",
    "gpud": "flow.cli.gpud_cmd:gpud_cmd",
    "sinks": "flow.cli.integrations_cmd:sinks_cmd",
    "startup-script": "flow.cli.install_cmd:startup_script_cmd",
    "install": "flow.cli.install_cmd:install_cmd",
    "uninstall": "flow.cli.install_cmd:uninstall_cmd",
    "status": "flow.cli.install_cmd:status_cmd",
    **{name: f"flow.cli.remediate_cmd:{attr}" for name, attr in (
        ("remediate", "remediate_cmd"), ("drain", "drain_cmd"), ("undrain", "undrain_cmd"),
        ("actions", "actions_cmd"), ("set-healthy", "set_healthy_cmd"), ("check-node", "check_node_cmd"))},
}


__all__ = ["fleet_has_problems", "health"]


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    # rich already honours NO_COLOR and drops colour and live updates when not on a TTY.
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def fleet_has_problems(snapshots: Sequence[Snapshot], fail_on: str) -> bool:
    """`issues`: a node is critical or unknown; `warnings`: a node is not healthy; `never`."""
    if fail_on == "never":
        return False
    if fail_on == "issues":
        bad = {HealthStatus.CRITICAL, HealthStatus.UNKNOWN}
    else:
        bad = {HealthStatus.CRITICAL, HealthStatus.UNKNOWN, HealthStatus.DEGRADED}
    return any(s.status in bad for s in snapshots)


def _select_tasks(inventory: Inventory, *, include_all: bool, text: str | None) -> list[Task]:
    tasks = list(inventory.tasks) if include_all else [t for t in inventory.tasks if t.has_gpu is not False]
    if text:
        needle = text.lower()

        def matches(task: Task) -> bool:
            fields = [task.id, task.name, task.instance_type or "", *task.labels.values(),
                      *(f"{k}={v}" for k, v in task.labels.items()), *(n.host for n in task.nodes)]
            return any(needle in f.lower() for f in fields)

        tasks = [t for t in tasks if matches(t)]
    return tasks


def _checker(config: Config, timeout: float, concurrency: int) -> Checker:
    from flow.health.sweep.checker import Checker, SweepOptions
    from flow.ssh import SSHOptions

    return Checker(
        SSHOptions.from_config(config),
        SweepOptions(concurrency=concurrency, timeout_s=timeout, thresholds=config.thresholds),
    )


@contextlib.contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A transient progress bar on stderr (when `show`), as the callback a sweep reports to."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("sweeping"), BarColumn(), MofNCompleteColumn(), TextColumn("nodes"),
                  TimeElapsedColumn(), console=_console(stderr=True), transient=True) as bar:
        job = bar.add_task("sweep", total=total)
        yield lambda done, total: bar.update(job, completed=done, total=total)


def _sweep(checker: Checker, targets: Sequence[NodeTarget], *, show_progress: bool,
           processes: int = 1) -> SweepResult:
    """One sweep over `processes` processes (see flow.health.sweep.shards)."""
    from flow.health.sweep.shards import sweep_in_shards

    raise_open_file_limit()  # before the workers start: they inherit it
    with _progress(show_progress, len(targets)) as progress:
        return run_async(sweep_in_shards(checker, targets, workers=processes, progress=progress))


def _workers_option(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    if value == "auto":
        return None
    if value.isdigit() and 1 <= int(value) <= MAX_WORKERS:
        return int(value)
    raise click.BadParameter(f"{value!r} is not allowed; allowed: auto or 1-{MAX_WORKERS}")


def _store(config: Config, snapshots: Sequence[Snapshot]) -> None:
    from flow.health.storage import MetricsStore

    MetricsStore(config.metrics_dir, retention_days=config.health.retention_days,
                 compress_after_days=config.health.compress_after_days).write_snapshots(snapshots)


@click.group("health", cls=LazyGroup, lazy_subcommands=SUBCOMMANDS, invoke_without_command=True)
@click.option("--gpu", "gpu", is_flag=True, help="Sweep every GPU task in the fleet.")
@click.option("--all", "include_all", is_flag=True, help="With --gpu: include non-GPU tasks.")
@click.option("--task", "task_ref", metavar="ID|NAME", help="One task, in depth.")
@click.option("--history", "history_hours", type=Bounded(HISTORY_HOURS_RANGE), metavar="HOURS",
              help="With --task: the last HOURS of its history (at most 8760, a year).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/json.md).")
@click.option("--filter", "filter_text", metavar="TEXT",
              help="Only tasks whose id, name, instance type, label or host contains TEXT.")
@click.option("--watch", "watch_s", type=Bounded(SWEEP_INTERVAL_RANGE), metavar="SECONDS",
              help="Re-sweep every SECONDS (0.05-86400) and show what changed (Ctrl-C stops).")
@click.option("--fail-on", "fail_on", type=click.Choice(FAIL_ON_CHOICES),
              help="Exit 1 when the fleet has issues (critical/unknown) or warnings (anything "
                   "not healthy). Default: health.fail_on (never).")
@click.option("--timeout", "timeout_s", type=Bounded(NODE_TIMEOUT_RANGE), default=DEFAULT_NODE_TIMEOUT_S,
              show_default=True,
              help="Deadline per node in seconds, 0.1-3600 (SSH, tunnel and GPUd together).")
@click.option("--concurrency", type=int, default=DEFAULT_CONCURRENCY, show_default=True,
              help="Nodes checked at once.")
@click.option("--workers", default="auto", show_default=True, callback=_workers_option,
              metavar="N|auto",
              help="Processes sharing the sweep. auto: one per core, with at least "
                   "100 nodes each (one process for a smaller fleet, and with --watch, "
                   "which then keeps its SSH connections between sweeps).")
@click.option("--no-store", is_flag=True, help="Do not keep the snapshots in the local store.")
@click.option("--source", "source", type=click.Choice(("ssh", "prometheus")), default="ssh",
              show_default=True,
              help="Where --gpu and --history read from: an SSH sweep of the nodes, or the "
                   "Prometheus the collectors remote-write to (docs/architecture.md).")
@click.option("--prometheus-url", metavar="URL",
              help="With --source prometheus: its base URL. Default: health.prometheus_url "
                   "(FLOW_PROMETHEUS_URL).")
@click.pass_context
def health(
    ctx: click.Context, gpu: bool, include_all: bool, task_ref: str | None, history_hours: float | None,
    as_json: bool, filter_text: str | None, watch_s: float | None, fail_on: str | None,
    timeout_s: float, concurrency: int, workers: int | None, no_store: bool, source: str,
    prometheus_url: str | None,
) -> None:
    """Health of the GPU fleet.

    \b
    flow health --gpu                    every GPU task in the fleet
    flow health --gpu --all              include non-GPU tasks
    flow health --task ID                one task, in depth
    flow health --task ID --history H    the last H hours of its history
    flow health --gpu --json             machine-readable
    flow health                          self-check of the local setup
    flow health --json                   the self-check as JSON (kind self_check)

    \b
    Exit codes: 0 ok; 1 the fleet has what --fail-on names; 2 usage or configuration error
    (and, with --source prometheus, Prometheus could not be read).
    """
    if ctx.invoked_subcommand is not None:
        return
    if not 1 <= concurrency <= 10000:
        raise click.BadParameter(f"{concurrency!r} is not allowed; allowed: 1-10000",
                                 param_hint="--concurrency")
    if history_hours is not None and task_ref is None:
        raise click.BadParameter("needs --task", param_hint="--history")
    if gpu and task_ref:
        raise click.UsageError("--gpu and --task are alternatives; give one")
    config = get_config(ctx)
    fail_on = fail_on or config.health.fail_on
    if source == "prometheus" or prometheus_url is not None:
        ctx.exit(_from_prometheus(config, prometheus_url, source, gpu=gpu, include_all=include_all,
                                  task_ref=task_ref, history_hours=history_hours, as_json=as_json,
                                  filter_text=filter_text, watch_s=watch_s, fail_on=fail_on))

    if task_ref is not None:
        if history_hours is not None:
            from flow.cli.history_view import show_history

            ctx.exit(show_history(config, task_ref, history_hours, as_json=as_json,
                                  timeout_s=timeout_s))
        _note_monitoring_disabled(config)
        ctx.exit(_task_view(config, task_ref, as_json=as_json, timeout_s=timeout_s,
                            store=not no_store, fail_on=fail_on))
    if gpu or include_all or filter_text or watch_s:
        _note_monitoring_disabled(config)
        ctx.exit(_fleet_view(config, include_all=include_all, filter_text=filter_text, as_json=as_json,
                             watch_s=watch_s, fail_on=fail_on, timeout_s=timeout_s,
                             concurrency=concurrency, workers=workers, store=not no_store))
    from flow.cli.selfcheck import self_check

    ctx.exit(self_check(config, as_json=as_json))


def _from_prometheus(
    config: Config, url: str | None, source: str, *, gpu: bool, include_all: bool,
    task_ref: str | None, history_hours: float | None, as_json: bool, filter_text: str | None,
    watch_s: float | None, fail_on: str,
) -> int:
    from flow.cli.prometheus_view import prometheus_fleet_view, prometheus_history

    if source != "prometheus":
        raise click.BadParameter("needs --source prometheus", param_hint="--prometheus-url")
    if task_ref is not None and history_hours is not None:
        return prometheus_history(config, task_ref, history_hours, url, as_json=as_json)
    if task_ref is not None:
        raise click.UsageError("--source prometheus reads --gpu and --task ID --history HOURS; "
                               "--task ID alone reads the node in depth over SSH")
    if not (gpu or include_all or filter_text or watch_s):
        raise click.UsageError("--source prometheus needs --gpu (or --task ID --history HOURS)")
    return prometheus_fleet_view(config, url, include_all=include_all, filter_text=filter_text,
                                 as_json=as_json, watch_s=watch_s, fail_on=fail_on)


def _note_monitoring_disabled(config: Config) -> None:
    """FLOW_HEALTH_MONITORING=false stops the installer and the collector, not a sweep asked for."""
    if config.monitoring_disabled_by is not None:
        click.echo(f"note: health monitoring is disabled here ({config.monitoring_disabled_by}); "
                   "this sweep runs on demand", err=True)


def _fleet_view(
    config: Config, *, include_all: bool, filter_text: str | None, as_json: bool, watch_s: float | None,
    fail_on: str, timeout_s: float, concurrency: int, workers: int | None, store: bool,
) -> int:
    from flow.fleet.inventory import Inventory

    inventory = Inventory.from_config(config)
    tasks = _select_tasks(inventory, include_all=include_all, text=filter_text)
    if not tasks:
        what = "tasks" if include_all else "GPU tasks"
        raise ConfigError(
            f"no {what} to check in {inventory.path}"
            + (f" matching {filter_text!r}" if filter_text else ""),
            hint="add one with: flow tasks add NAME --host HOST --instance-type h100.8xlarge"
            + ("" if include_all else " (or use --all for non-GPU tasks)"),
        )
    checker = _checker(config, timeout_s, concurrency)
    out = _console()
    try:
        result = _sweep_loop(checker, tasks, config, out, as_json=as_json, watch_s=watch_s, store=store,
                             workers=workers)
    except KeyboardInterrupt:
        if watch_s is None:
            raise
        return EXIT_OK  # Ctrl-C is how --watch ends
    return EXIT_PROBLEMS if fleet_has_problems(result.snapshots, fail_on) else EXIT_OK


def _sweep_loop(
    checker: Checker, tasks: Sequence[Task], config: Config, out: Console, *, as_json: bool,
    watch_s: float | None, store: bool, workers: int | None,
) -> SweepResult:
    """One sweep, or with `watch_s` one every `watch_s` seconds until interrupted."""
    from flow.health.sweep.checker import targets_for
    from flow.health.sweep.shards import auto_workers

    targets = targets_for(tasks, config)
    # --watch keeps its connections between sweeps in one process: after the first sweep, a
    # node costs no login and a quarter of the time it takes on fresh connections, which beats
    # sharing the sweep among processes that log in again every time.
    processes = workers or (1 if watch_s is not None else auto_workers(len(targets)))
    report = _Reporter(config, out, as_json=as_json, watch=watch_s is not None, store=store)
    if watch_s is not None and processes == 1:
        raise_open_file_limit()
        return run_async(_watch_keeping_connections(checker, targets, report, watch_s))
    while True:
        result = _sweep(checker, targets, show_progress=not as_json, processes=processes)
        report(result)
        if watch_s is None:
            return result
        time.sleep(max(0.0, watch_s - result.elapsed_s))


async def _watch_keeping_connections(
    checker: Checker, targets: Sequence[NodeTarget], report: _Reporter, watch_s: float,
) -> SweepResult:
    """`--watch` in one process: the SSH connections, tunnels and GPUd connections are kept
    between sweeps, so each node sees one login for the whole watch, not one per sweep. Ends
    with Ctrl-C."""
    async with checker.session() as session:
        while True:
            with _progress(not report.as_json, len(targets)) as progress:
                result = await session.sweep(targets, progress=progress)
            report(result)
            await asyncio.sleep(max(0.0, watch_s - result.elapsed_s))


class _Reporter:
    """After each sweep: store the snapshots, then print the view (and what changed) or JSON."""

    def __init__(self, config: Config, out: Console, *, as_json: bool, watch: bool, store: bool) -> None:
        self.config, self.out, self.as_json, self.watch, self.store = config, out, as_json, watch, store
        self.previous: Sequence[Snapshot] | None = None

    def __call__(self, result: SweepResult) -> None:
        from flow.views.documents import fleet_document
        from flow.views.render import changes_between, fleet_view

        if self.store:
            _store(self.config, result.snapshots)
        if self.as_json:
            print_json(fleet_document(result.snapshots, elapsed_s=result.elapsed_s))
        else:
            if self.watch and self.out.is_terminal:
                self.out.clear()
            self.out.print(fleet_view(result.snapshots, elapsed_s=result.elapsed_s))
            if self.previous is not None:
                changes = changes_between(self.previous, result.snapshots)
                self.out.print("Changes since the last sweep: " + ("none" if not changes else ""))
                for line in changes:
                    self.out.print(f"  {line}")
        self.previous = result.snapshots


def _task_view(config: Config, ref: str, *, as_json: bool, timeout_s: float, store: bool,
               fail_on: str) -> int:
    from flow.fleet.inventory import Inventory
    from flow.health.sweep.checker import targets_for
    from flow.views.documents import task_document
    from flow.views.render import TaskDetail

    task = Inventory.from_config(config).resolve(ref)
    checker = _checker(config, timeout_s, DEFAULT_CONCURRENCY)
    result = _sweep(checker, targets_for([task], config), show_progress=not as_json)
    if store:
        _store(config, result.snapshots)
    if as_json:
        print_json(task_document(task.to_dict(), result.snapshots))
    else:
        out = _console()
        for snapshot in result.snapshots:
            out.print(TaskDetail(snapshot))
    return EXIT_PROBLEMS if fleet_has_problems(result.snapshots, fail_on) else EXIT_OK

