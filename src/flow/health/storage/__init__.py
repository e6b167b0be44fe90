"""Local metrics history: `MetricsStore` (JSONL per task per UTC day) and `MetricsAggregator`.

```python
from flow.health.storage import MetricsStore, MetricsAggregator
store = MetricsStore()
snapshots = list(store.read_snapshots(task_id="task-abc123"))
summary = MetricsAggregator(store).get_task_summary("task-abc123", hours=24)
```
Modules: `layout` (paths), `locking` (private dirs, the per-task flock), `lines` (reading day
streams), `store` (MetricsStore), `compact` (compression, deletion), `stream` (the resumable
position), `summary` (pure summaries), `aggregator` (MetricsAggregator), `results`.
See docs/storage.md.
"""

from flow.health.storage.aggregator import MetricsAggregator
from flow.health.storage.layout import task_dirname
from flow.health.storage.results import CleanupResult, StoreStats
from flow.health.storage.store import MetricsStore, encode_snapshot
from flow.health.storage.stream import StreamPosition
from flow.health.storage.summary import (
    FleetSummary,
    FleetTotals,
    GpuSummary,
    Sample,
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
