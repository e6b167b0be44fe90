"""Builders shared by the storage tests: snapshots with known verdicts, and a settable clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flow.health.snapshot import (
    GpudStatus,
    GpuReading,
    HealthStatus,
    Reason,
    Severity,
    Snapshot,
    Verdict,
    XidError,
)
from flow.health.storage import MetricsStore

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)

_SCORES = {HealthStatus.HEALTHY: 95, HealthStatus.DEGRADED: 70, HealthStatus.CRITICAL: 40,
           HealthStatus.UNKNOWN: None}


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def gpu(index: int = 0, *, temp_c: float | None = 50.0, util: float | None = 60.0,
        ecc_corrected: int | None = 0, ecc_uncorrected: int | None = 0) -> GpuReading:
    return GpuReading(index=index, uuid=f"GPU-{index}", model="NVIDIA H100 80GB HBM3", temp_c=temp_c,
                      util_gpu_pct=util, ecc_volatile_corrected=ecc_corrected,
                      ecc_volatile_uncorrected=ecc_uncorrected, mem_used_bytes=10 * 2**30,
                      mem_total_bytes=80 * 2**30, power_w=300.0)


def snap(
    at: datetime,
    task_id: str = "task-a",
    *,
    status: HealthStatus = HealthStatus.HEALTHY,
    score: int | None = -1,
    reasons: tuple[str, ...] = (),
    gpus: tuple[GpuReading, ...] | None = None,
    xids: tuple[XidError, ...] = (),
    seq: int = 0,
) -> Snapshot:
    """A snapshot with the verdict given (not scored), so a history's answers are known."""
    verdict = Verdict(
        score=_SCORES[status] if score == -1 else score,
        status=status,
        reasons=tuple(Reason(code=c, severity=Severity.WARNING, message=c) for c in reasons),
    )
    return Snapshot(timestamp=at, task_id=task_id, task_name=f"name-{task_id}", node=f"node-{seq}",
                    gpud=GpudStatus(reachable=True), gpus=gpus if gpus is not None else (gpu(),),
                    xids=xids, verdict=verdict)


def series(start: datetime, count: int, task_id: str = "task-a", step: timedelta = MINUTE) -> list[Snapshot]:
    return [snap(start + i * step, task_id, seq=i) for i in range(count)]


def make_store(root: Path, clock: Clock | None = None, *, retention_days: int = 7,
               compress_after_days: int = 1, auto_cleanup: bool = False) -> MetricsStore:
    return MetricsStore(root, retention_days, compress_after_days, clock=clock or Clock(),
                        auto_cleanup=auto_cleanup)


def data_files(root: Path) -> list[str]:
    """Every day file under the store, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.jsonl*") if not p.name.startswith("."))
