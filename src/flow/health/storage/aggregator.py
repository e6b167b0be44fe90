"""MetricsAggregator: task and fleet summaries over the store's history."""

from __future__ import annotations

from datetime import datetime, timedelta

from flow.health.storage.layout import to_utc
from flow.health.storage.sample import Sample
from flow.health.storage.store import MetricsStore
from flow.health.storage.summary import FleetSummary, TaskSummary, summarize_fleet, summarize_task

__all__ = ["MetricsAggregator"]

# The window is [now - hours, now]; a snapshot stamped exactly `now` is in it.
_INCLUSIVE = timedelta(milliseconds=1)


def _hours(hours: float) -> timedelta:
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not hours > 0:
        raise ValueError(f"hours={hours!r} is not allowed; allowed: a number of hours > 0")
    return timedelta(hours=hours)


class MetricsAggregator:
    """Summaries of what a `MetricsStore` holds. `now` (per call) is injectable for tests."""

    def __init__(self, store: MetricsStore) -> None:
        self.store = store

    def _samples(self, task_id: str, start: datetime, end: datetime) -> list[Sample]:
        samples: list[Sample] = []
        # Decoded objects, not Snapshots: a summary reads a few fields of each GPU, and
        # building every GpuReading would cost most of the query's time.
        for record in self.store.read_records(task_id, start, end + _INCLUSIVE):
            try:
                samples.append(Sample.from_record(record))
            except (ValueError, TypeError, AttributeError, OverflowError):
                continue
        return samples

    def get_task_summary(
        self, task_id: str, hours: float = 24, *, now: datetime | None = None
    ) -> TaskSummary:
        """One task over the last `hours`: counts, scores, statuses, per-GPU temperature and
        utilization, ECC and XID increases, unhealthy periods and status changes.

        Raises:
            ValueError: `hours` is not a positive number.
        """
        window = _hours(hours)
        end = to_utc(now) if now is not None else self.store.now()
        start = end - window
        return summarize_task(task_id, self._samples(task_id, start, end),
                              window_start=start, window_end=end)

    def get_fleet_summary(self, hours: float = 1, *, now: datetime | None = None) -> FleetSummary:
        """Every task with snapshots in the last `hours`, and fleet totals.

        Raises:
            ValueError: `hours` is not a positive number.
        """
        window = _hours(hours)
        end = to_utc(now) if now is not None else self.store.now()
        start = end - window
        summaries = []
        for task_id in self.store.task_ids():
            samples = self._samples(task_id, start, end)
            if samples:
                summaries.append(summarize_task(task_id, samples, window_start=start, window_end=end))
        return summarize_fleet(summaries, window_start=start, window_end=end)
