"""`flow health --task ID --history HOURS`."""

from __future__ import annotations

import click
from rich.console import Console

from flow.cli.common import EXIT_OK, print_json, run_async
from flow.config import Config
from flow.fleet.inventory import Inventory
from flow.health.storage import MetricsAggregator, MetricsStore
from flow.health.sweep.checker import targets_for
from flow.health.sweep.history import fetch_task_history, read_window
from flow.views.documents import history_document
from flow.views.render import HistoryView

__all__ = ["show_history", "store_notes"]


def store_notes(store: MetricsStore) -> list[str]:
    """What the store's reads skipped, said once: unreadable day files and damaged lines."""
    notes = [f"skipped {why}" for why in store.unreadable_files]
    if store.corrupt_lines_skipped:
        notes.append(f"skipped {store.corrupt_lines_skipped} damaged line(s) of the store "
                     f"(first: {store.corrupt_examples[0]})")
    return notes


def show_history(config: Config, ref: str, hours: float, *, as_json: bool, timeout_s: float) -> int:
    task = Inventory.from_config(config).resolve(ref)
    fetch = run_async(fetch_task_history(config, targets_for([task], config), hours, timeout_s=timeout_s))
    snapshots = read_window(fetch.store, task.id, hours)
    summary = MetricsAggregator(fetch.store).get_task_summary(task.id, hours=hours).to_dict()
    notes = [*fetch.notes, *store_notes(fetch.store)]
    source = ("the nodes' collector stores" if fetch.source == "node"
              else f"the local store ({config.metrics_dir})")
    if as_json:
        doc = history_document(task.to_dict(), snapshots, hours=hours, source=fetch.source, summary=summary)
        doc["notes"] = notes
        print_json(doc)
        return EXIT_OK
    for note in notes:
        click.echo(note, err=True)
    Console(highlight=False).print(HistoryView(snapshots, summary, source))
    return EXIT_OK
