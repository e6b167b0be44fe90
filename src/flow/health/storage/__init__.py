"""Local metrics history: `MetricsStore` (JSONL per task per UTC day) and `MetricsAggregator`.

```python
from flow.health.storage import MetricsStore, MetricsAggregator
store = MetricsStore()
snapshots = list(store.read_snapshots(task_id="task-abc123"))
summary = MetricsAggregator(store).get_task_summary("task-abc123", hours=24)
```
Modules: `layout` (paths, task ids as path parts), `locking` (private directories, the
per-task flock), `lines` (a day's stream: plain and gzip, offsets, damage), `reader` (window
reads), `store` (MetricsStore), `compact` (compressing and deleting one day), `maintenance`
(cleanup and stats passes), `stream` (the resumable position), `cursors` (the stream
cursors every deleter honours), `results` (CleanupResult,
StoreStats), `sample` and `summary` (pure summaries), `aggregator` (MetricsAggregator).
See docs/storage.md.
"""

from flow.health.storage.aggregator import MetricsAggregator
from flow.health.storage.layout import task_dirname
from flow.health.storage.results import CleanupResult, StoreStats
from flow.health.storage.sample import Sample
from flow.health.storage.store import MetricsStore, encode_snapshot
from flow.health.storage.stream import StreamPosition
from flow.health.storage.summary import (
    FleetSummary,
    FleetTotals,
    GpuSummary,
    TaskSummary,
    UnhealthyPeriod,
    summarize_task,
)

__all__ = [
    "CleanupResult",
    "FleetSummary",
    "FleetTotals",
    "GpuSummary",
    "MetricsAggregator",
    "MetricsStore",
    "Sample",
    "StoreStats",
    "StreamPosition",
    "TaskSummary",
    "UnhealthyPeriod",
    "encode_snapshot",
    "summarize_task",
    "task_dirname",
]
