"""Host metrics on the node itself, with psutil: CPU, load, memory, disks, network, processes.

`HostSampler` keeps the previous network counters so that rx/tx are rates (bytes per second
between two samples); the first sample has no rate yet and reports None, never 0. Each
reading is taken on its own: one failing psutil call costs that reading (None), not the rest.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import psutil

from flow.health.snapshot import DiskUsage, HostMetrics

__all__ = ["PSEUDO_FILESYSTEMS", "HostSampler"]

log = logging.getLogger("flow.collector.host")

_T = TypeVar("_T")

#: Filesystem types that hold no user data even when psutil lists them as "physical":
#: snap/loop images, and in-memory or kernel filesystems.
PSEUDO_FILESYSTEMS = frozenset(
    {"squashfs", "tmpfs", "devtmpfs", "overlay", "proc", "sysfs", "cgroup", "cgroup2", "iso9660",
     "nsfs", "fuse.lxcfs", "ramfs", "autofs", "efivarfs", "tracefs", "debugfs"}
)


def _guard(what: str, fn: Callable[[], _T]) -> _T | None:
    """Run one psutil reading; a failure makes that reading None (logged at debug)."""
    try:
        return fn()
    except (OSError, RuntimeError, psutil.Error, AttributeError) as exc:
        log.debug("host reading %s unavailable: %s", what, exc)
        return None


class HostSampler:
    """Reads this host's metrics; call `sample()` once per collection cycle."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._net_prev: tuple[float, int, int] | None = None
        # psutil's cpu_percent(None) measures since the previous call: prime it now so the
        # first sample covers the time since start-up instead of returning a meaningless 0.0.
        _guard("cpu", lambda: psutil.cpu_percent(interval=None))
        self._net_prev = self._net_counters()

    def sample(self) -> HostMetrics:
        cpu = _guard("cpu", lambda: psutil.cpu_percent(interval=None))
        load = _guard("load", os.getloadavg)
        mem = _guard("memory", psutil.virtual_memory)
        rx_rate, tx_rate = self._net_rates()
        processes = _guard("processes", lambda: len(psutil.pids()))
        return HostMetrics(
            cpu_pct=float(cpu) if cpu is not None else None,
            load1=load[0] if load else None,
            load5=load[1] if load else None,
            load15=load[2] if load else None,
            mem_total_bytes=int(mem.total) if mem is not None else None,
            # "used" as total - available: what applications could not get, which is what
            # people mean by memory pressure (psutil's `used` excludes reclaimable cache too).
            mem_used_bytes=int(mem.total - mem.available) if mem is not None else None,
            mem_used_pct=float(mem.percent) if mem is not None else None,
            disks=self._disks(),
            net_rx_bytes_per_s=rx_rate,
            net_tx_bytes_per_s=tx_rate,
            processes=processes,
        )

    def _disks(self) -> tuple[DiskUsage, ...]:
        parts = _guard("disks", lambda: psutil.disk_partitions(all=False)) or []
        seen_devices: set[str] = set()
        disks: list[DiskUsage] = []
        for part in parts:
            # Bind mounts show one device several times: count each filesystem once.
            if part.fstype in PSEUDO_FILESYSTEMS or part.device in seen_devices:
                continue
            seen_devices.add(part.device)
            usage = _guard(f"disk {part.mountpoint}", partial(psutil.disk_usage, part.mountpoint))
            if usage is None:
                disks.append(DiskUsage(mount=part.mountpoint))
                continue
            disks.append(DiskUsage(mount=part.mountpoint, total_bytes=int(usage.total),
                                   used_bytes=int(usage.used), used_pct=float(usage.percent)))
        if not disks:
            # A container whose root is an overlay lists no "physical" filesystem; the root
            # filesystem is still what fills up, so report it.
            usage = _guard("disk /", lambda: psutil.disk_usage("/"))
            if usage is not None:
                disks.append(DiskUsage(mount="/", total_bytes=int(usage.total),
                                       used_bytes=int(usage.used), used_pct=float(usage.percent)))
        return tuple(disks)

    def _net_counters(self) -> tuple[float, int, int] | None:
        per_nic = _guard("network", lambda: psutil.net_io_counters(pernic=True))
        if per_nic is None:
            return None
        # Loopback traffic is the node talking to itself (GPUd, this collector): not network.
        rx = sum(c.bytes_recv for name, c in per_nic.items() if name != "lo")
        tx = sum(c.bytes_sent for name, c in per_nic.items() if name != "lo")
        return (self._clock(), rx, tx)

    def _net_rates(self) -> tuple[float | None, float | None]:
        now = self._net_counters()
        prev, self._net_prev = self._net_prev, now
        if now is None or prev is None:
            return None, None
        elapsed = now[0] - prev[0]
        rx, tx = now[1] - prev[1], now[2] - prev[2]
        # A counter that went backwards (interface reset, NIC removed) has no meaningful rate.
        if elapsed <= 0 or rx < 0 or tx < 0:
            return None, None
        return rx / elapsed, tx / elapsed
