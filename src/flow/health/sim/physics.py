"""What a simulated node's hardware reads at a given minute: pure, deterministic functions.

Every value is a function of (node seed, scenario, GPU model, sample time), so two runs with
the same seed agree sample for sample, and history can be produced for any past minute
without having been recorded. GPUd samples once a minute; `sample_times` gives those minutes.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, replace

from flow.health.sim.hardware import GpuModel

__all__ = [
    "FAULTY_SLOT",
    "SAMPLE_INTERVAL_S",
    "GpuIdentity",
    "GpuSample",
    "HostSample",
    "NodeProfile",
    "NodeSample",
    "XidIncident",
    "latest_sample_ts",
    "make_profile",
    "mix",
    "sample",
    "sample_times",
    "unit",
]

SAMPLE_INTERVAL_S = 60
#: The GPU that scenarios gpu-missing and gpu-silent lose (the last one on smaller nodes).
FAULTY_SLOT = 3

_M64 = (1 << 64) - 1
# PCI bus ids of the 8 GPUs of an HGX H100 board (lower case, 4-digit domain, as GPUd prints them).
_BUS_IDS = ("0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
            "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0")

# NVML clock-event reason bits (nvmlClocksEventReasons).
CLOCK_IDLE = 0x1
CLOCK_HW_SLOWDOWN = 0x8
CLOCK_HW_POWER_BRAKE = 0x80


def mix(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def unit(*keys: int) -> float:
    """A deterministic pseudo-random number in [0, 1) for the given integer keys."""
    h = 0x5EED
    for k in keys:
        h = mix(h ^ (k & _M64))
    return h / 2.0**64


def _wave(seed: int, gpu: int, ts: int, period_s: int) -> float:
    """A slow wave in [0, 1]: a training job's load drifts over tens of minutes."""
    phase = unit(seed, gpu, 7) * 2 * math.pi
    return 0.5 + 0.5 * math.sin(2 * math.pi * ts / period_s + phase)


@dataclass(frozen=True)
class GpuIdentity:
    index: int
    uuid: str         # "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    bus_id: str       # "0000:18:00.0"
    serial: str
    pid: int          # the training process on this GPU


@dataclass(frozen=True)
class XidIncident:
    xid: int
    gpu_index: int
    ts: int           # unix seconds when the kernel logged it


@dataclass(frozen=True)
class NodeProfile:
    """Everything fixed about one simulated node."""

    index: int
    seed: int
    scenario: str
    model: GpuModel
    gpus: tuple[GpuIdentity, ...]
    hostname: str
    machine_id: str
    boot_id: str
    boot_ts: int              # when the machine booted
    started_ts: int           # when the simulated GPUd started
    phase_s: int              # GPUd's sampler second within the minute
    incident_ts: int          # when the scenario's fault began
    cpu_cores: int
    host_mem_total_bytes: int
    disk_total_bytes: int
    xid: XidIncident | None
    # GPUs NVML enumerated when GPUd started (so /machine-info lists them) that no longer answer:
    # no metric and no component reading carries them (scenario `gpu-silent`).
    lost: tuple[GpuIdentity, ...] = ()

    @property
    def listed_gpus(self) -> tuple[GpuIdentity, ...]:
        """The GPUs /machine-info lists: those that answer and those lost since GPUd started."""
        return tuple(sorted((*self.gpus, *self.lost), key=lambda g: g.index))


@dataclass(frozen=True)
class GpuSample:
    temp_c: int
    power_mw: int
    util_pct: int
    mem_util_pct: int
    mem_used_bytes: int
    graphics_mhz: int
    memory_mhz: int
    clock_reasons: int
    ecc_volatile_corrected: int
    ecc_volatile_uncorrected: int
    ecc_aggregate_corrected: int
    ecc_aggregate_uncorrected: int
    remapped_correctable: int
    remapped_uncorrectable: int
    remap_pending: bool
    remap_failed: bool
    nvlink_replay: tuple[int, ...]     # per link
    nvlink_recovery: tuple[int, ...]
    nvlink_crc: tuple[int, ...]
    process_mem_bytes: int             # 0: no process on the GPU


@dataclass(frozen=True)
class HostSample:
    cpu_used_pct: float
    load_1m: float
    load_5m: float
    load_15m: float
    mem_total_bytes: int
    mem_available_bytes: int
    mem_used_bytes: int
    mem_free_bytes: int
    disk_total_bytes: int
    disk_free_bytes: int
    disk_used_bytes: int


@dataclass(frozen=True)
class NodeSample:
    ts: int
    gpus: tuple[GpuSample, ...]
    host: HostSample


def _gpu_uuid(seed: int, index: int) -> str:
    raw = (mix(seed * 131 + index) << 64 | mix(seed * 137 + index + 1)) & ((1 << 128) - 1)
    return "GPU-" + str(uuid.UUID(int=raw))


def make_profile(
    *, index: int, seed: int, scenario: str, model: GpuModel, gpu_count: int, started_ts: int,
    boot_id: str | None = None,
) -> NodeProfile:
    """Build a node's fixed identity. `seed` should already mix the fleet seed and node index.

    `boot_id` replaces the seeded one (a node standing in for this host's GPUd reports its boot id).
    """
    gpus = tuple(
        GpuIdentity(
            index=i,
            uuid=_gpu_uuid(seed, i),
            bus_id=_BUS_IDS[i],
            serial=f"{1650000000000 + int(unit(seed, i, 3) * 1e9):013d}",
            pid=10000 + int(unit(seed, i, 5) * 50000),
        )
        for i in range(gpu_count)
    )
    lost: tuple[GpuIdentity, ...] = ()
    gone = min(FAULTY_SLOT, gpu_count - 1)
    if scenario == "gpu-missing":
        # The board came up without one GPU: NVML enumerates the others and the driver numbers
        # them (minor ids) 0..n-2 in bus order, so nothing in GPUd's answers names the absent one.
        gpus = tuple(replace(g, index=n) for n, g in enumerate(g for g in gpus if g.index != gone))
    elif scenario == "gpu-silent":
        lost = tuple(g for g in gpus if g.index == gone)
        gpus = tuple(g for g in gpus if g.index != gone)
    incident_ts = started_ts - 300 - int(unit(seed, 11) * 600)
    xid: XidIncident | None = None
    if scenario == "xid-fatal":
        xid = XidIncident(xid=79, gpu_index=0, ts=incident_ts)
    elif scenario == "xid-app":
        xid = XidIncident(xid=13, gpu_index=0, ts=incident_ts)
    big = model.memory_total_bytes >= 40 * 1024**3
    return NodeProfile(
        index=index,
        seed=seed,
        scenario=scenario,
        model=model,
        gpus=gpus,
        hostname=f"sim-node-{index:03d}",
        machine_id=uuid.UUID(int=mix(seed * 3 + 1) << 64 | mix(seed * 5 + 2)).hex,
        boot_id=boot_id or str(uuid.UUID(int=mix(seed * 7 + 3) << 64 | mix(seed * 11 + 4))),
        boot_ts=started_ts - 86400 * 2 - int(unit(seed, 13) * 86400 * 10),
        started_ts=started_ts,
        phase_s=int(unit(seed, 17) * SAMPLE_INTERVAL_S),
        incident_ts=incident_ts,
        cpu_cores=max(16, 24 * gpu_count) if big else 8 * gpu_count + 8,
        host_mem_total_bytes=gpu_count * (256 if big else 64) * 1024**3 - 7_340_032 * 1024,
        disk_total_bytes=1_888_587_489_280,
        xid=xid,
        lost=lost,
    )


def sample_times(profile: NodeProfile, since_ts: float, now: float) -> list[int]:
    """The sampler's minutes in [since_ts, now], oldest first."""
    last = _latest_sample_ts(profile, now)
    first = math.ceil((since_ts - profile.phase_s) / SAMPLE_INTERVAL_S) * SAMPLE_INTERVAL_S
    first += profile.phase_s
    return list(range(int(first), last + 1, SAMPLE_INTERVAL_S))


def _latest_sample_ts(profile: NodeProfile, now: float) -> int:
    return int((now - profile.phase_s) // SAMPLE_INTERVAL_S) * SAMPLE_INTERVAL_S + profile.phase_s


def latest_sample_ts(profile: NodeProfile, now: float) -> int:
    """The most recent sampler minute at or before `now`."""
    return _latest_sample_ts(profile, now)


def sample(profile: NodeProfile, ts: int) -> NodeSample:
    """The node's readings at sample time `ts` (unix seconds)."""
    gpus = tuple(_gpu_sample(profile, g.index, ts) for g in profile.gpus)
    return NodeSample(ts=ts, gpus=gpus, host=_host_sample(profile, ts, gpus))


def _gpu_sample(p: NodeProfile, i: int, ts: int) -> GpuSample:
    m, sc, seed = p.model, p.scenario, p.seed
    minute = ts // SAMPLE_INTERVAL_S
    jitter = unit(seed, i, minute)
    load = _wave(seed, i, ts, 2820 + 60 * i)
    idle = sc == "idle"

    util = int(1 + 3 * jitter) if idle else int(40 + 50 * load + 2 * jitter)
    if idle:
        temp = 30 + int(5 * load + jitter)
    elif sc == "hot":
        temp = 86 + min(2, int(3 * (0.7 * load + 0.3 * jitter)))
    elif sc == "warm":
        temp = 76 + min(8, int(9 * (0.7 * load + 0.3 * jitter)))
    else:
        temp = 50 + int(util * 0.18 + 3 * jitter)

    span = m.power_limit_mw * 0.9 - m.idle_power_mw
    power = int(m.idle_power_mw + span * util / 100 + 4000 * (jitter - 0.5))
    graphics = m.idle_graphics_mhz if idle else m.max_graphics_mhz - int(45 * jitter) // 15 * 15
    reasons = CLOCK_IDLE if idle else 0
    if sc == "throttled":
        reasons = CLOCK_HW_SLOWDOWN | CLOCK_HW_POWER_BRAKE
        power = int(m.power_limit_mw * (0.35 + 0.1 * jitter))
        graphics = int(m.max_graphics_mhz * (0.45 + 0.1 * load)) // 15 * 15

    total = m.memory_total_bytes - m.memory_reserved_bytes
    if idle:
        used = 1024 * 1024 * (1 + int(jitter * 3))
        proc_mem = 0
    else:
        frac = 0.96 + 0.03 * jitter if sc == "memory-pressure" else 0.55 + 0.3 * load
        used = int(m.memory_total_bytes * frac) // 4096 * 4096
        used = min(used, total)
        proc_mem = max(0, used - 500 * 1024 * 1024)

    faulty = i == 0
    ecc_vu = ecc_vc = ecc_au = ecc_ac = 0
    if sc == "ecc" and faulty:
        ecc_vu, ecc_vc, ecc_au, ecc_ac = 2, 14, 3, 131
    remap_unc, pending, failed = 0, False, False
    if sc == "row-remap-pending" and faulty:
        remap_unc, pending = 1, True
    elif sc == "row-remap-failed" and faulty:
        remap_unc, failed = 8, True

    links = m.nvlink_links
    zeros = (0,) * links
    replay = recovery = crc = zeros
    if sc == "nvlink-errors" and faulty and links:
        age_min = max(0, (ts - p.incident_ts) // SAMPLE_INTERVAL_S)
        bad = min(4, links)
        crc = tuple(120 + 7 * age_min + 3 * k if k < bad else 0 for k in range(links))
        replay = tuple(30 + 2 * age_min if k < bad else 0 for k in range(links))
        recovery = tuple(2 + age_min // 30 if k < bad else 0 for k in range(links))

    return GpuSample(
        temp_c=temp,
        power_mw=max(m.idle_power_mw // 2, power),
        util_pct=util,
        mem_util_pct=0 if idle else int(util * 0.45 + 5 * jitter),
        mem_used_bytes=used,
        graphics_mhz=graphics,
        memory_mhz=m.memory_mhz,
        clock_reasons=reasons,
        ecc_volatile_corrected=ecc_vc,
        ecc_volatile_uncorrected=ecc_vu,
        ecc_aggregate_corrected=ecc_ac,
        ecc_aggregate_uncorrected=ecc_au,
        remapped_correctable=0,
        remapped_uncorrectable=remap_unc,
        remap_pending=pending,
        remap_failed=failed,
        nvlink_replay=replay,
        nvlink_recovery=recovery,
        nvlink_crc=crc,
        process_mem_bytes=proc_mem,
    )


def _host_sample(p: NodeProfile, ts: int, gpus: tuple[GpuSample, ...]) -> HostSample:
    minute = ts // SAMPLE_INTERVAL_S
    jitter = unit(p.seed, 99, minute)
    busy = sum(g.util_pct for g in gpus) / (100 * max(1, len(gpus)))
    cpu = 4 + 22 * busy + 4 * jitter
    load = p.cpu_cores * cpu / 100
    total = p.host_mem_total_bytes
    used = int(total * (0.08 + 0.2 * busy + 0.02 * jitter)) // 4096 * 4096
    free = int((total - used) * 0.85) // 4096 * 4096
    available = total - used - int(total * 0.01)
    disk_used = 229_144_502_272 + (ts - p.boot_ts) * 1024  # logs and checkpoints creep up
    disk_free = p.disk_total_bytes - disk_used - 94_429_374_464  # ext4 reserved blocks
    return HostSample(
        cpu_used_pct=round(cpu, 2),
        load_1m=round(load * (0.95 + 0.1 * jitter), 2),
        load_5m=round(load * 0.97, 2),
        load_15m=round(load * 0.93, 2),
        mem_total_bytes=total,
        mem_available_bytes=available,
        mem_used_bytes=used,
        mem_free_bytes=free,
        disk_total_bytes=p.disk_total_bytes,
        disk_free_bytes=disk_free,
        disk_used_bytes=disk_used,
    )
