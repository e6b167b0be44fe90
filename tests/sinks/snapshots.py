"""Hand-built snapshots for the sink tests: every reading set, so every metric has a sample."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flow.health.scoring import score_snapshot
from flow.health.snapshot import (
    DiskUsage,
    GpudStatus,
    GpuReading,
    HostMetrics,
    Snapshot,
    XidError,
)

GIB = 1024**3


def gpu(index: int, *, temp_c: float | None = 60.0, util: float = 50.0, **changes: object) -> GpuReading:
    values: dict[str, object] = {
        "index": index,
        "uuid": f"GPU-{index:08d}-aaaa-bbbb-cccc-000000000000",
        "bus_id": f"00000000:{index + 10:02X}:00.0",
        "model": "NVIDIA H100 80GB HBM3",
        "temp_c": temp_c,
        "temp_hbm_c": None if temp_c is None else temp_c + 5,
        "slowdown_temp_c": 90.0,
        "mem_max_temp_c": 95.0,
        "power_w": 350.5,
        "power_limit_w": 700.0,
        "mem_used_bytes": 40 * GIB,
        "mem_total_bytes": 80 * GIB,
        "util_gpu_pct": util,
        "util_mem_pct": 30.0,
        "clock_graphics_mhz": 1980.0,
        "clock_mem_mhz": 2619.0,
        "throttle_reasons": (),
        "ecc_volatile_corrected": 0,
        "ecc_volatile_uncorrected": 0,
        "ecc_aggregate_corrected": 3,
        "ecc_aggregate_uncorrected": 0,
        "remapped_rows_uncorrectable": 0,
        "remap_pending": False,
        "remap_failed": False,
        "nvlink_replay_errors": 0,
        "nvlink_recovery_errors": 0,
        "nvlink_crc_errors": 0,
        "processes": 1,
    }
    values.update(changes)
    return GpuReading(**values)  # type: ignore[arg-type]


def snapshot(
    task_id: str = "task-abc123",
    node: str = "gpu-node-1",
    *,
    gpus: int = 2,
    temp_c: float = 60.0,
    when: datetime | None = None,
    xids: tuple[XidError, ...] = (),
    reachable: bool = True,
    gpu_changes: dict[str, object] | None = None,
    scored: bool = True,
) -> Snapshot:
    when = when or datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=5)
    s = Snapshot(
        timestamp=when,
        task_id=task_id,
        task_name=f"{task_id}-name",
        node=node,
        instance_type="8xH100",
        gpud=GpudStatus(
            reachable=reachable,
            state="ok" if reachable else "timeout",
            version="v0.5.1",
            api_schema="v0.5+",
            driver_version="550.54.15",
            cuda_version="12.4",
            latency_ms=12.5,
        )
        if reachable
        else GpudStatus(reachable=False, state="timeout", error="no answer"),
        gpus=tuple(gpu(i, **{"temp_c": temp_c, **(gpu_changes or {})}) for i in range(gpus))
        if reachable
        else (),
        host=HostMetrics(
            cpu_pct=12.5,
            load1=1.0,
            load5=0.8,
            load15=0.5,
            mem_total_bytes=512 * GIB,
            mem_used_bytes=100 * GIB,
            mem_used_pct=19.5,
            disks=(DiskUsage(mount="/", total_bytes=500 * GIB, used_bytes=200 * GIB, used_pct=40.0),),
            net_rx_bytes_per_s=1000.0,
            net_tx_bytes_per_s=2000.0,
            processes=300,
        ),
        xids=xids,
    )
    return s.with_verdict(score_snapshot(s)) if scored else s


def fleet(nodes: int = 3, *, gpus: int = 2, when: datetime | None = None) -> list[Snapshot]:
    """`nodes` nodes of one task, node i at 60+i °C."""
    return [snapshot(node=f"gpu-node-{i}", gpus=gpus, temp_c=60.0 + i, when=when) for i in range(nodes)]
