"""The replay's cheap check of stored lines: whole lines pass, every torn prefix fails."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from flow.health.scoring import score_snapshot
from flow.health.snapshot import (
    ComponentState,
    DiskUsage,
    Event,
    GpudStatus,
    GpuReading,
    HostMetrics,
    Snapshot,
    XidError,
)
from flow.health.storage.store import _looks_whole

T = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def _snapshots() -> list[Snapshot]:
    busy = Snapshot(
        timestamp=T, task_id="task-a", node="n", gpud=GpudStatus(reachable=True),
        gpus=(GpuReading(index=0, temp_c=90.0, throttle_reasons=("hw_slowdown",), processes=None),),
        host=HostMetrics(disks=(DiskUsage(mount="/", used_pct=50.0),)),
        components=(ComponentState(component="c", name="n", health="Unhealthy", repair_actions=("X",)),),
        events=(Event(component="c", time=T, name="e", type="Fatal", message="}]}"),),
        xids=(XidError(code=79, gpu_index=0),),
    )
    unreachable = Snapshot(timestamp=T, task_id="task-b", gpud=GpudStatus(reachable=False, state="timeout"))
    return [busy, busy.with_verdict(score_snapshot(busy)), unreachable,
            unreachable.with_verdict(score_snapshot(unreachable))]


@pytest.mark.parametrize("snapshot", _snapshots())
def test_whole_lines_pass_and_every_torn_prefix_fails(snapshot: Snapshot) -> None:
    line = snapshot.to_json()
    assert _looks_whole(line)
    assert [k for k in range(1, len(line)) if _looks_whole(line[:k])] == []
