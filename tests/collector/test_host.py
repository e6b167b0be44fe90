"""Host metrics from psutil on this machine: every reading present, rates from deltas."""

from __future__ import annotations

import psutil

from flow.health.collector.host import PSEUDO_FILESYSTEMS, HostSampler


def test_first_sample_has_no_network_rate_only_later_ones() -> None:
    clock = iter([100.0, 100.0, 102.0]).__next__
    sampler = HostSampler(clock=clock)
    sampler._net_prev = None  # as if the counters were unreadable at start-up
    first = sampler.sample()
    assert first.net_rx_bytes_per_s is None and first.net_tx_bytes_per_s is None
    second = sampler.sample()
    assert second.net_rx_bytes_per_s is not None and second.net_rx_bytes_per_s >= 0
    assert second.net_tx_bytes_per_s is not None and second.net_tx_bytes_per_s >= 0


def test_sample_reads_cpu_load_memory_disks_and_processes() -> None:
    host = HostSampler().sample()
    assert host.cpu_pct is not None and 0.0 <= host.cpu_pct <= 100.0
    assert host.load1 is not None and host.load15 is not None
    assert host.mem_total_bytes == psutil.virtual_memory().total
    assert host.mem_used_bytes is not None and 0 < host.mem_used_bytes <= host.mem_total_bytes
    assert host.processes is not None and host.processes > 1
    assert host.disks, "at least the root filesystem"
    for disk in host.disks:
        assert disk.total_bytes and disk.used_bytes is not None and disk.used_pct is not None
    real = {p.mountpoint for p in psutil.disk_partitions(all=False) if p.fstype not in PSEUDO_FILESYSTEMS}
    assert {d.mount for d in host.disks} <= (real | {"/"})
