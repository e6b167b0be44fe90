"""`flow health --gpu --source prometheus` and `--task ID --history H --source prometheus`.

The fleet view and a task's history read back from Prometheus (flow.health.sources.prometheus)
instead of swept over SSH; the views and --json documents are the same. Snapshots read from
Prometheus are not written to the local store: Prometheus is their store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import click

from flow.cli.common import EXIT_OK, EXIT_PROBLEMS, print_json, run_async
from flow.config import Config, validate_endpoint
from flow.errors import ConfigError
from flow.fleet.inventory import Inventory
from flow.fleet.model import Task
from flow.health.snapshot import Snapshot
from flow.health.sources.prometheus import ExpectedNode, PrometheusSource, paused_gc, window_bounds
from flow.secrets import read_secret_file, validate_token

__all__ = ["prometheus_fleet_view", "prometheus_history", "prometheus_source"]

TOKEN_ENV = "FLOW_PROMETHEUS_TOKEN"


def prometheus_source(config: Config, url_option: str | None) -> PrometheusSource:
    """The source from --prometheus-url, else FLOW_PROMETHEUS_URL / health.prometheus_url.

    Raises:
        ConfigError: no URL, a URL that is not allowed, or a bad token (variable or file).
    """
    if url_option is not None:
        url = validate_endpoint(url_option.strip(), name="--prometheus-url")
    elif config.health.prometheus_url is not None:
        url = config.health.prometheus_url
    else:
        raise ConfigError(
            "--source prometheus needs Prometheus' URL; allowed: https://host[:port] "
            "(plain http only to 127.0.0.1, ::1 or localhost)",
            hint="give --prometheus-url URL, or set FLOW_PROMETHEUS_URL or health.prometheus_url",
        )
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if token is not None:
        token = validate_token(token, source=TOKEN_ENV)
    elif config.health.prometheus_token_file is not None:
        from_env = config.sources.get("prometheus_token_file", "").startswith("env")
        name = "FLOW_PROMETHEUS_TOKEN_FILE" if from_env else "health.prometheus_token_file"
        path = config.health.prometheus_token_file
        token = validate_token(read_secret_file(path, name=name, what="token"),
                               source=f"{name}={str(path)!r}")
    return PrometheusSource(url=url, token=token, stale_after_s=config.health.prometheus_stale_after,
                            thresholds=config.thresholds)


def _expected(tasks: Sequence[Task]) -> list[ExpectedNode]:
    return [ExpectedNode(task_id=t.id, task_name=t.name, node=n.label, instance_type=t.instance_type,
                         expected_gpus=t.gpu_count) for t in tasks for n in t.nodes]


def _matches(snapshot: Snapshot, text: str) -> bool:
    needle = text.lower()
    return any(needle in f.lower() for f in (snapshot.task_id, snapshot.task_name, snapshot.node,
                                             snapshot.instance_type or ""))


def _read(source: PrometheusSource, config: Config, *, include_all: bool,
          filter_text: str | None) -> tuple[list[Snapshot], float]:
    from flow.cli.health_cmd import _select_tasks

    inventory = Inventory.from_config(config)
    expected = None
    if len(inventory):
        tasks = _select_tasks(inventory, include_all=include_all, text=filter_text)
        if not tasks:
            raise ConfigError(f"no tasks to show in {inventory.path} matching {filter_text!r}"
                              if filter_text else f"no GPU tasks in {inventory.path}",
                              hint=None if filter_text else "use --all for non-GPU tasks")
        expected = _expected(tasks)
    read = run_async(source.read_fleet(expected=expected))
    snapshots = list(read.snapshots)
    if expected is None:
        # No inventory: the fleet is what Prometheus holds; --filter applies to it.
        if filter_text:
            snapshots = [s for s in snapshots if _matches(s, filter_text)]
        if not snapshots:
            raise ConfigError(
                f"Prometheus at {source.shown_url} holds no flow node"
                + (f" matching {filter_text!r}" if filter_text else "")
                + f" (no flow_node_snapshot_timestamp_seconds in the last {source.lookback_s / 3600:g} h)",
                hint="check that the collectors remote-write to it (health.sinks: type remote_write)",
            )
    return snapshots, read.elapsed_s


def prometheus_fleet_view(config: Config, url_option: str | None, *, include_all: bool,
                          filter_text: str | None, as_json: bool, watch_s: float | None,
                          fail_on: str) -> int:
    """The fleet view from Prometheus, once or every `watch_s` seconds; the exit status."""
    from flow.cli.health_cmd import _console, fleet_has_problems
    from flow.views.documents import fleet_document
    from flow.views.render import changes_between, fleet_view

    source = prometheus_source(config, url_option)
    out = _console()
    previous: list[Snapshot] | None = None
    try:
        while True:
            started = time.monotonic()
            # Once: what the read allocated is left alone at exit. Watching: the collector's
            # pass over it runs after the view is shown, in the wait for the next read.
            with paused_gc(freeze=watch_s is None):
                snapshots, elapsed_s = _read(source, config, include_all=include_all,
                                             filter_text=filter_text)
                if as_json:
                    print_json(fleet_document(snapshots, elapsed_s=elapsed_s))
                else:
                    if watch_s is not None and out.is_terminal:
                        out.clear()
                    out.print(fleet_view(snapshots, elapsed_s=elapsed_s))
                    out.print(f"Read from Prometheus at {source.shown_url}", style="dim")
                    if previous is not None:
                        changes = changes_between(previous, snapshots)
                        out.print("Changes since the last read: " + ("none" if not changes else ""))
                        for line in changes:
                            out.print(f"  {line}")
            previous = snapshots
            if watch_s is None:
                break
            time.sleep(max(0.0, watch_s - (time.monotonic() - started)))
    except KeyboardInterrupt:
        if watch_s is None:
            raise
        return EXIT_OK  # Ctrl-C is how --watch ends
    return EXIT_PROBLEMS if fleet_has_problems(previous or [], fail_on) else EXIT_OK


def prometheus_history(config: Config, ref: str, hours: float, url_option: str | None, *,
                       as_json: bool) -> int:
    """A task's history from Prometheus' range queries: the same view and summary."""
    from rich.console import Console

    from flow.health.storage.sample import Sample
    from flow.health.storage.summary import summarize_task
    from flow.views.documents import history_document
    from flow.views.render import HistoryView

    source = prometheus_source(config, url_option)
    inventory = Inventory.from_config(config)
    if len(inventory):
        task = inventory.resolve(ref)
        task_id, task_doc = task.id, task.to_dict()
    else:
        # No inventory: the task is named by the id its collectors label their series with.
        task_id, task_doc = ref, {"id": ref}
    start, end = window_bounds(hours)
    with paused_gc(freeze=True):  # see prometheus_fleet_view
        snapshots = run_async(source.read_history(task_id, hours,
                                                  interval_s=config.health.metrics_interval, now=end))
        summary = summarize_task(task_id, [Sample.from_snapshot(s) for s in snapshots],
                                 window_start=start, window_end=end).to_dict()
        if as_json:
            doc = history_document(task_doc, snapshots, hours=hours, source="prometheus",
                                   summary=summary)
            doc["notes"] = []
            print_json(doc)
            return EXIT_OK
    if not snapshots:
        click.echo(f"note: Prometheus at {source.shown_url} holds no snapshot of {task_id} in the "
                   f"last {hours:g} h", err=True)
    Console(highlight=False).print(HistoryView(snapshots, summary, f"Prometheus ({source.shown_url})"))
    return EXIT_OK
