"""A task's history: fetched from the nodes' collector stores over SSH, else the local store.

The collector on a node keeps its snapshots in `FLOW_NODE_METRICS_DIR` (default
`/var/lib/flow/metrics`, the installer's `FLOW_METRICS_DIR` on the node), laid out as
`MetricsStore` lays out any store. `fetch_task_history` copies the day files the window
touches (SFTP) from every node of the task into a mirror store under `$FLOW_HOME/node-history/`,
rebuilt on each fetch, so repeated fetches never duplicate.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from flow.config import Config
from flow.errors import SSHError
from flow.fs import ensure_private_dir
from flow.health.snapshot import Snapshot, utcnow
from flow.health.storage import MetricsStore, task_dirname
from flow.health.storage.layout import day_of
from flow.health.sweep.checker import NodeTarget
from flow.ssh import SSHOptions, SSHPool

__all__ = ["HistoryFetch", "fetch_task_history", "read_window", "window_days"]

@dataclass(frozen=True)
class HistoryFetch:
    """Where a history came from: `node` (the collectors' stores) or `local`, and why."""

    source: str
    store: MetricsStore
    notes: tuple[str, ...]


def window_days(start: datetime, end: datetime) -> list[str]:
    """The UTC day names (YYYY-MM-DD) a window touches, oldest first."""
    days = []
    day = day_of(start)
    while day <= day_of(end):
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


async def _fetch_node(
    pool: SSHPool, target: NodeTarget, days: Sequence[str], dest: Path, remote_dir: str, timeout_s: float
) -> int:
    conn = await asyncio.wait_for(pool.connect(target.ssh), timeout_s)
    remote_task = f"{remote_dir.rstrip('/')}/{task_dirname(target.task_id)}"
    names = [f"{d}.jsonl{suffix}" for d in days for suffix in (".gz", "")]
    return await asyncio.wait_for(conn.download(remote_task, names, dest), timeout_s)


async def fetch_task_history(
    config: Config,
    targets: Sequence[NodeTarget],
    hours: float,
    *,
    timeout_s: float = 30.0,
    remote_dir: str | None = None,
    now: datetime | None = None,
) -> HistoryFetch:
    """Mirror the nodes' stores for the window; fall back to the local store when none answers.

    `remote_dir` defaults to `config.health.node_metrics_dir` (FLOW_NODE_METRICS_DIR).
    """
    remote_dir = remote_dir or config.health.node_metrics_dir
    end = now or utcnow()
    start = end - timedelta(hours=hours)
    days = window_days(start, end)
    task_id = targets[0].task_id
    mirror = config.home / "node-history" / task_dirname(task_id)
    notes: list[str] = []
    fetched_any = False
    with tempfile.TemporaryDirectory(prefix="flow-history-") as tmp:
        async with SSHPool(SSHOptions.from_config(config)) as pool:
            for i, target in enumerate(targets):
                node_root = Path(tmp) / str(i)
                dest = node_root / task_dirname(task_id)
                ensure_private_dir(dest)
                try:
                    count = await _fetch_node(pool, target, days, dest, remote_dir, timeout_s)
                except (SSHError, asyncio.TimeoutError, OSError) as exc:
                    notes.append(f"{target.node}: could not fetch the collector's store: "
                                 f"{getattr(exc, 'message', None) or exc or 'timed out'}")
                    continue
                if count == 0:
                    notes.append(f"{target.node}: the collector's store has no data for this window")
                    continue
                fetched_any = True
                notes.append(f"{target.node}: fetched {count} day files from {remote_dir}")
        if fetched_any:
            shutil.rmtree(mirror, ignore_errors=True)
            store = MetricsStore(mirror, retention_days=config.health.retention_days,
                                 compress_after_days=config.health.compress_after_days)
            for i in range(len(targets)):
                node_store = MetricsStore(Path(tmp) / str(i), retention_days=3650,
                                          compress_after_days=3650)
                store.write_snapshots(node_store.read_snapshots(task_id=task_id, start=start, end=end))
                notes.extend(f"{targets[i].node}: skipped {why}" for why in node_store.unreadable_files)
                if node_store.corrupt_lines_skipped:
                    notes.append(f"{targets[i].node}: skipped {node_store.corrupt_lines_skipped} "
                                 "damaged line(s) of the collector's store")
            return HistoryFetch("node", store, tuple(notes))
    local = MetricsStore(config.metrics_dir, retention_days=config.health.retention_days,
                         compress_after_days=config.health.compress_after_days)
    return HistoryFetch("local", local, tuple(notes))


def read_window(
    store: MetricsStore, task_id: str, hours: float, now: datetime | None = None
) -> list[Snapshot]:
    end = now or utcnow()
    return list(store.read_snapshots(task_id=task_id, start=end - timedelta(hours=hours), end=end))
