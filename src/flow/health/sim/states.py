"""`/v1/states` for GPUd v0.5.x: one HealthState per component, with the exact `extra_info["data"]`.

Field names, key order and omitempty rules follow GPUd v0.5.1's Go types (see
shared/gpud/EXTRA_INFO.md). Each blob is the compact JSON of the component's `checkResult`,
stored as a string under `extra_info["data"]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from flow.health.sim.gofmt import humanize_bytes_si, pct, rfc3339
from flow.health.sim.physics import (
    CLOCK_HW_POWER_BRAKE,
    CLOCK_HW_SLOWDOWN,
    GpuIdentity,
    NodeProfile,
    NodeSample,
    unit,
)
from flow.health.sim.xid_catalog import XID_CATALOG, xid_reason

__all__ = [
    "CLOCK_REASON_TEXTS",
    "NVIDIA_COMPONENTS",
    "REGISTERED_COMPONENTS",
    "UNSUPPORTED_COMPONENTS",
    "build_states",
    "kmsg_device",
]

NVIDIA_COMPONENTS: tuple[str, ...] = (
    "accelerator-nvidia-clock-speed",
    "accelerator-nvidia-ecc",
    "accelerator-nvidia-error-sxid",
    "accelerator-nvidia-error-xid",
    "accelerator-nvidia-fabric-manager",
    "accelerator-nvidia-gpm",
    "accelerator-nvidia-gpu-counts",
    "accelerator-nvidia-hw-slowdown",
    "accelerator-nvidia-infiniband",
    "accelerator-nvidia-memory",
    "accelerator-nvidia-nccl",
    "accelerator-nvidia-nvlink",
    "accelerator-nvidia-peermem",
    "accelerator-nvidia-persistence-mode",
    "accelerator-nvidia-power",
    "accelerator-nvidia-processes",
    "accelerator-nvidia-remapped-rows",
    "accelerator-nvidia-temperature",
    "accelerator-nvidia-utilization",
)
REGISTERED_COMPONENTS: tuple[str, ...] = tuple(sorted((
    *NVIDIA_COMPONENTS, "containerd", "cpu", "disk", "docker", "fuse", "kernel-module", "library",
    "memory", "network-latency", "os", "pci", "tailscale",
)))
# Registered but not installed on the simulated host: GPUd leaves these out of /v1/states.
UNSUPPORTED_COMPONENTS: frozenset[str] = frozenset({"containerd", "docker", "tailscale"})

CLOCK_REASON_TEXTS: dict[int, str] = {
    0x1: "GPU is idle and clocks are dropping to Idle state",
    0x2: "GPU clocks are limited by current setting of applications clocks",
    0x4: "SW Power Scaling algorithm is reducing the clocks below requested clocks "
         "('SW Power Cap: Active' in nvidia-smi --query)",
    0x8: "HW Slowdown is engaged due to high temperature, power brake assertion, or high power draw "
         "('HW Slowdown: Active' in nvidia-smi --query)",
    0x10: "GPU clocks are limited by current setting of Sync Boost",
    0x20: "SW Thermal capping algorithm is reducing clocks below requested clocks "
          "('SW Thermal Slowdown: Active' in nvidia-smi --query)",
    0x40: "HW Thermal Slowdown (reducing the core clocks by a factor of 2 or more) is engaged "
          "(temperature being too high) ('HW Thermal Slowdown' in nvidia-smi --query)",
    0x80: "HW Power Brake Slowdown (reducing the core clocks by a factor of 2 or more) is engaged "
          "(External Power Brake Assertion being triggered) "
          "('HW Power Brake Slowdown' in nvidia-smi --query)",
}
_HW_BITS = 0x8 | 0x40 | 0x80

_ECC_LOCATIONS = ("total", "l1_cache", "l2_cache", "dram", "sram", "gpu_device_memory",
                  "gpu_texture_memory", "shared_memory", "gpu_register_file")
_COMPONENT_IDS = {name: i for i, name in enumerate(REGISTERED_COMPONENTS)}


def kmsg_device(bus_id: str) -> str:
    """The device id the kernel prints in an `NVRM: Xid (PCI:0000:18:00): ...` line."""
    return "PCI:" + bus_id.rsplit(".", 1)[0]


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _state(component: str, ts: int | None, health: str, reason: str, *,
           name: str | None = None, data: Any = None, error: str | None = None,
           actions: dict[str, Any] | None = None, with_component: bool = True) -> dict[str, Any]:
    """A HealthState in Go declaration order, omitempty fields left out when empty."""
    st: dict[str, Any] = {"time": rfc3339(ts) if ts is not None else None}
    if with_component:
        st["component"] = component
    st["name"] = name or component
    st["health"] = health
    st["reason"] = reason
    if error:
        st["error"] = error
    if actions:
        st["suggested_actions"] = actions
    if data is not None:
        st["extra_info"] = {"data": _dumps(data)}
    return st


def _order(p: NodeProfile, ts: int, component: str) -> list[int]:
    """GPU order for the components that walk a Go map: not stable from one check to the next."""
    cid = _COMPONENT_IDS[component]
    return sorted(range(len(p.gpus)), key=lambda i: unit(p.seed, ts, cid, i))


def _by_uuid(p: NodeProfile) -> list[int]:
    return sorted(range(len(p.gpus)), key=lambda i: p.gpus[i].uuid)


def _checked(n: int, what: str) -> str:
    return f"all {n} GPU(s) were checked, no {what} issue found"


def build_states(p: NodeProfile, s: NodeSample, now: float, *,
                 cleared: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """The whole `/v1/states` answer (every supported component, sorted by name). `cleared`:
    component -> when set-healthy last purged its events."""
    n, ts = len(p.gpus), s.ts
    ids, gs, m = p.gpus, s.gpus, p.model
    out: dict[str, dict[str, Any]] = {}

    def add(component: str, state: dict[str, Any]) -> None:
        out[component] = state

    # temperature
    temps = []
    hot = []
    for i in _order(p, ts, "accelerator-nvidia-temperature"):
        g = gs[i]
        temps.append({
            "uuid": ids[i].uuid, "bus_id": ids[i].bus_id,
            "current_celsius_gpu_core": g.temp_c,
            "threshold_celsius_shutdown": m.threshold_shutdown_c,
            "threshold_celsius_slowdown": m.threshold_slowdown_c,
            "threshold_celsius_mem_max": m.threshold_mem_max_c,
            "threshold_celsius_gpu_max": m.threshold_gpu_max_c,
            "used_percent_shutdown": pct(g.temp_c, m.threshold_shutdown_c),
            "used_percent_slowdown": pct(g.temp_c, m.threshold_slowdown_c),
            "used_percent_mem_max": pct(g.temp_c, m.threshold_mem_max_c),
            "used_percent_gpu_max": pct(g.temp_c, m.threshold_gpu_max_c),
        })
        if m.threshold_mem_max_c and g.temp_c > m.threshold_mem_max_c:
            hot.append(f"{ids[i].uuid} current temperature is {g.temp_c} °C exceeding the HBM "
                       f"temperature threshold {m.threshold_mem_max_c} °C")
    if hot:
        add("accelerator-nvidia-temperature", _state(
            "accelerator-nvidia-temperature", ts, "Unhealthy",
            "exceeded HBM temperature thresholds: " + ", ".join(hot), data={"temperatures": temps}))
    else:
        add("accelerator-nvidia-temperature", _state(
            "accelerator-nvidia-temperature", ts, "Healthy", _checked(n, "temperature"),
            data={"temperatures": temps}))

    # memory (GPU framebuffer): usage never changes the health
    mems = []
    for i in _order(p, ts, "accelerator-nvidia-memory"):
        g = gs[i]
        reserved = m.memory_reserved_bytes
        free = m.memory_total_bytes - reserved - g.mem_used_bytes
        mems.append({
            "uuid": ids[i].uuid, "bus_id": ids[i].bus_id,
            "total_bytes": m.memory_total_bytes, "total_humanized": humanize_bytes_si(m.memory_total_bytes),
            "reserved_bytes": reserved, "reserved_humanized": humanize_bytes_si(reserved),
            "used_bytes": g.mem_used_bytes, "used_humanized": humanize_bytes_si(g.mem_used_bytes),
            "free_bytes": free, "free_humanized": humanize_bytes_si(free),
            "used_percent": pct(g.mem_used_bytes, m.memory_total_bytes),
            "supported": True,
        })
    add("accelerator-nvidia-memory", _state(
        "accelerator-nvidia-memory", ts, "Healthy", _checked(n, "memory"), data={"memories": mems}))

    # utilization
    utils = [{"uuid": ids[i].uuid, "bus_id": ids[i].bus_id, "gpu_used_percent": gs[i].util_pct,
              "memory_used_percent": gs[i].mem_util_pct, "supported": True}
             for i in _order(p, ts, "accelerator-nvidia-utilization")]
    add("accelerator-nvidia-utilization", _state(
        "accelerator-nvidia-utilization", ts, "Healthy", _checked(n, "utilization"),
        data={"utilizations": utils}))

    # power
    powers = [{
        "uuid": ids[i].uuid, "bus_id": ids[i].bus_id,
        "usage_milli_watts": gs[i].power_mw,
        "enforced_limit_milli_watts": m.power_limit_mw,
        "management_limit_milli_watts": m.power_limit_mw,
        "used_percent": pct(gs[i].power_mw, m.power_limit_mw),
        "get_power_usage_supported": True,
        "get_power_limit_supported": True,
        "get_power_management_limit_supported": True,
    } for i in _order(p, ts, "accelerator-nvidia-power")]
    add("accelerator-nvidia-power", _state(
        "accelerator-nvidia-power", ts, "Healthy", _checked(n, "power"), data={"powers": powers}))

    # clock-speed
    clocks = [{"uuid": ids[i].uuid, "bus_id": ids[i].bus_id, "graphics_mhz": gs[i].graphics_mhz,
               "memory_mhz": gs[i].memory_mhz, "clock_graphics_supported": True,
               "clock_memory_supported": True}
              for i in _order(p, ts, "accelerator-nvidia-clock-speed")]
    add("accelerator-nvidia-clock-speed", _state(
        "accelerator-nvidia-clock-speed", ts, "Healthy", _checked(n, "clock speed"),
        data={"clock_speeds": clocks}))

    # ecc: GPUd never changes the health on ECC counts, not even uncorrected ones
    order = _order(p, ts, "accelerator-nvidia-ecc")
    modes = [{"uuid": ids[i].uuid, "bus_id": ids[i].bus_id, "enabled_current": True,
              "enabled_pending": True, "supported": True} for i in order]
    errors = [{"uuid": ids[i].uuid, "bus_id": ids[i].bus_id,
               "aggregate": _ecc_counts(gs[i].ecc_aggregate_corrected, gs[i].ecc_aggregate_uncorrected),
               "volatile": _ecc_counts(gs[i].ecc_volatile_corrected, gs[i].ecc_volatile_uncorrected),
               "supported": True} for i in order]
    add("accelerator-nvidia-ecc", _state(
        "accelerator-nvidia-ecc", ts, "Healthy", _checked(n, "ECC"),
        data={"ecc_modes": modes, "ecc_errors": errors}))

    add("accelerator-nvidia-remapped-rows", _remapped_rows(p, s))
    add("accelerator-nvidia-hw-slowdown", _hw_slowdown(p, s))
    add("accelerator-nvidia-nvlink", _nvlink(p, s))
    add("accelerator-nvidia-processes", _processes(p, s))
    add("accelerator-nvidia-error-xid",
        _error_xid(p, now, (cleared or {}).get("accelerator-nvidia-error-xid")))
    add("accelerator-nvidia-error-sxid", {"time": None, "name": "error_sxid", "health": "Healthy",
                                          "reason": "SXIDComponent is healthy"})
    add("accelerator-nvidia-gpu-counts", _state(
        "accelerator-nvidia-gpu-counts", ts, "Healthy", "GPU count thresholds not set, skipping"))
    add("accelerator-nvidia-infiniband", _state(
        "accelerator-nvidia-infiniband", ts, "Healthy",
        "ports or rate threshold not set (skipped evaluation)"))
    if m.fabric_manager:
        add("accelerator-nvidia-fabric-manager", _state(
            "accelerator-nvidia-fabric-manager", ts, "Healthy", "fabric manager found and active",
            data={"fabric_manager_active": True}))
    else:
        add("accelerator-nvidia-fabric-manager", _state(
            "accelerator-nvidia-fabric-manager", ts, "Healthy",
            f"{m.product_name} does not support fabric manager", data={"fabric_manager_active": False}))
    gpm_reason = _checked(n, "GPM") if m.architecture == "hopper" else "GPM not supported"
    add("accelerator-nvidia-gpm", _state("accelerator-nvidia-gpm", ts, "Healthy", gpm_reason))
    add("accelerator-nvidia-nccl", _state("accelerator-nvidia-nccl", ts, "Healthy", "no nccl issue found"))
    add("accelerator-nvidia-peermem", _state(
        "accelerator-nvidia-peermem", ts, "Healthy", "no peermem issue found"))
    add("accelerator-nvidia-persistence-mode", _state(
        "accelerator-nvidia-persistence-mode", ts, "Healthy", _checked(n, "persistence mode")))

    # host components
    h = s.host
    add("cpu", _state("cpu", ts, "Healthy", "ok", data={
        "cores": {"logical": p.cpu_cores},
        "usage": {"used_percent": f"{h.cpu_used_pct:.2f}", "load_avg_1min": f"{h.load_1m:.2f}",
                  "load_avg_5min": f"{h.load_5m:.2f}", "load_avg_15min": f"{h.load_15m:.2f}"},
    }))
    add("memory", _state("memory", ts, "Healthy", "ok", data={
        "total_bytes": h.mem_total_bytes, "available_bytes": h.mem_available_bytes,
        "used_bytes": h.mem_used_bytes, "used_percent": pct(h.mem_used_bytes, h.mem_total_bytes),
        "free_bytes": h.mem_free_bytes, "vm_alloc_total_bytes": 35184372087808,
        "vm_alloc_used_bytes": 412340224, "bpf_jit_buffer_bytes": 1204224,
    }))
    add("disk", _state("disk", ts, "Healthy", "ok", data=_disk_blob(s)))
    add("fuse", _state("fuse", ts, "Healthy", "no fuse issue found"))
    add("kernel-module", _state("kernel-module", ts, "Healthy", "all modules are loaded"))
    add("library", _state("library", ts, "Healthy", "all libraries exist"))
    add("network-latency", _state("network-latency", ts, "Healthy",
                                  "checked egress latencies, no issue found"))
    add("os", _state("os", ts, "Healthy", "ok"))
    add("pci", _state("pci", ts, "Healthy", "no pci event found"))

    return [{"component": c, "states": [out[c]]} for c in REGISTERED_COMPONENTS if c in out]


def _ecc_counts(corrected: int, uncorrected: int) -> dict[str, dict[str, int]]:
    counts = {loc: {"corrected": 0, "uncorrected": 0} for loc in _ECC_LOCATIONS}
    counts["total"] = {"corrected": corrected, "uncorrected": uncorrected}
    counts["dram"] = {"corrected": corrected, "uncorrected": uncorrected}
    return counts


def _remapped_rows(p: NodeProfile, s: NodeSample) -> dict[str, Any]:
    m, c = p.model, "accelerator-nvidia-remapped-rows"
    if not m.row_remapping:
        return _state(c, s.ts, "Healthy", f'"{m.product_name}" does not support row remapping')
    rows, issues = [], []
    actions: dict[str, Any] | None = None
    for i in _order(p, s.ts, c):
        g, ident = s.gpus[i], p.gpus[i]
        rows.append({
            "uuid": ident.uuid, "bus_id": ident.bus_id,
            "remapped_due_to_correctable_errors": g.remapped_correctable,
            "remapped_due_to_uncorrectable_errors": g.remapped_uncorrectable,
            "remapping_pending": g.remap_pending, "remapping_failed": g.remap_failed,
            "supported": True,
        })
        if g.remap_pending:
            issues.append(f"{ident.bus_id} needs reset (detected pending row remapping)")
            actions = {"description": "row remapping pending requires GPU reset or system reboot",
                       "repair_actions": ["REBOOT_SYSTEM"]}
        if g.remap_failed:
            issues.append(f"{ident.bus_id} qualifies for RMA (row remapping failed, remapped due to "
                          f"{g.remapped_uncorrectable} uncorrectable error(s))")
            actions = {"description": "row remapping failure requires hardware inspection",
                       "repair_actions": ["HARDWARE_INSPECTION"]}
    data = {"product_name": m.product_name,
            "memory_error_management_capabilities": {
                "error_containment": True, "dynamic_page_offlining": True, "row_remapping": True},
            "remapped_rows": rows}
    if issues:
        return _state(c, s.ts, "Unhealthy", ", ".join(issues), data=data, actions=actions)
    return _state(c, s.ts, "Healthy", f"{len(rows)} devices support remapped rows and found no issue",
                  data=data)


def _hw_slowdown(p: NodeProfile, s: NodeSample) -> dict[str, Any]:
    c = "accelerator-nvidia-hw-slowdown"
    events, throttled_minutes = [], 0
    for i in _order(p, s.ts, c):
        g, ident = s.gpus[i], p.gpus[i]
        bits = g.clock_reasons
        hw = sorted(f"{ident.uuid}: {t}" for b, t in CLOCK_REASON_TEXTS.items() if bits & b and b & _HW_BITS)
        other = sorted(f"{ident.uuid}: {t}" for b, t in CLOCK_REASON_TEXTS.items()
                       if bits & b and not b & _HW_BITS)
        ev: dict[str, Any] = {"time": rfc3339(s.ts), "uuid": ident.uuid, "bus_id": ident.bus_id,
                              "reasons_bitmask": bits}
        if hw:
            ev["hw_slowdown_reasons"] = hw
        if other:
            ev["reasons"] = other
        ev.update({"hw_slowdown": bool(bits & CLOCK_HW_SLOWDOWN), "hw_thermal_slowdown": bool(bits & 0x40),
                   "hw_slowdown_power_brake": bool(bits & CLOCK_HW_POWER_BRAKE), "supported": True})
        events.append(ev)
        if bits & _HW_BITS:
            throttled_minutes = 10
    data = {"clock_events": events}
    if throttled_minutes:
        # GPUd counts the distinct minutes with HW slowdown events over a 10-minute window.
        freq = throttled_minutes / 10
        return _state(
            c, s.ts, "Unhealthy",
            f"hw slowdown events frequency per minute {freq:.2f} (total events per minute count "
            f"{throttled_minutes}) exceeded threshold 0.60 for the last 10m0s",
            data=data, actions={"description": "", "repair_actions": ["HARDWARE_INSPECTION"]})
    return _state(c, s.ts, "Healthy", "no clock events found", data=data)


def _nvlink(p: NodeProfile, s: NodeSample) -> dict[str, Any]:
    c, links = "accelerator-nvidia-nvlink", p.model.nvlink_links
    nvlinks = []
    for i in _by_uuid(p):
        g, ident = s.gpus[i], p.gpus[i]
        states = [{"link": k, "feature_enabled": True, "replay_errors": g.nvlink_replay[k],
                   "recovery_errors": g.nvlink_recovery[k], "crc_errors": g.nvlink_crc[k],
                   "throughput_raw_tx_bytes": 0, "throughput_raw_rx_bytes": 0}
                  for k in range(links)]
        nvlinks.append({"uuid": ident.uuid, "bus_id": ident.bus_id, "states": states or None,
                        "supported": bool(links)})
    return _state(c, s.ts, "Healthy", _checked(len(p.gpus), "nvlink"), data={"nvlinks": nvlinks})


def _processes(p: NodeProfile, s: NodeSample) -> dict[str, Any]:
    c = "accelerator-nvidia-processes"
    procs = []
    for i in _by_uuid(p):
        g, ident = s.gpus[i], p.gpus[i]
        running: list[dict[str, Any]] | None = None
        if g.process_mem_bytes:
            running = [{
                "pid": ident.pid, "status": ["running"],
                "cmd_args": ["/usr/bin/python3", "train.py", "--config", "configs/llama-8b.yaml",
                             f"--local-rank={ident.index}"],
                "create_time": rfc3339(p.started_ts - 3600 - (p.seed % 3000)),
                "gpu_used_percent": g.mem_util_pct or None,
                "gpu_used_memory_bytes": g.process_mem_bytes,
                "gpu_used_memory_bytes_humanized": humanize_bytes_si(g.process_mem_bytes),
            }]
            if running[0]["gpu_used_percent"] is None:
                del running[0]["gpu_used_percent"]
        procs.append({"uuid": ident.uuid, "bus_id": ident.bus_id, "running_processes": running,
                      "get_compute_running_processes_supported": True,
                      "get_process_utilization_supported": True})
    return _state(c, s.ts, "Healthy", _checked(len(p.gpus), "process"), data={"processes": procs})


def _error_xid(p: NodeProfile, now: float, cleared_at: float | None = None) -> dict[str, Any]:
    """GPUd's evolved XID state: name `error_xid`, no component, `time` null, no extra_info.
    An XID logged before the last set-healthy (`cleared_at`) was purged with its event."""
    st: dict[str, Any] = {"time": None, "name": "error_xid"}
    inc = p.xid
    if inc is None or inc.ts > now or (cleared_at is not None and inc.ts <= cleared_at):
        st.update({"health": "Healthy", "reason": "XIDComponent is healthy"})
        return st
    entry = XID_CATALOG[inc.xid]
    ident: GpuIdentity = p.gpus[inc.gpu_index]
    health = {"Fatal": "Unhealthy", "Critical": "Degraded"}.get(entry.event_type, "Healthy")
    st["health"] = health
    st["reason"] = xid_reason(inc.xid, kmsg_device(ident.bus_id), ident.uuid)
    # GPUd keeps only the first repair action of the catalogue entry in the state.
    st["suggested_actions"] = {"description": "", "repair_actions": list(entry.repair_actions[:1])}
    return st


def _disk_blob(s: NodeSample) -> dict[str, Any]:
    h = s.host
    usage = {"total_bytes": h.disk_total_bytes, "free_bytes": h.disk_free_bytes,
             "used_bytes": h.disk_used_bytes}
    return {
        "ext_partitions": [{"device": "/dev/nvme0n1p2", "fstype": "ext4", "mount_point": "/",
                            "mounted": True, "stat_timed_out": False, "usage": usage}],
        "nfs_partitions": [],
        "block_devices": [
            {"name": "/dev/nvme0n1", "type": "disk", "size": 1920383410176, "serial": "S64ANS0T512873",
             "model": "SAMSUNG MZQL21T9HCJR-00A07", "children": ["/dev/nvme0n1p1", "/dev/nvme0n1p2"]},
            {"name": "/dev/nvme0n1p1", "type": "part", "size": 1127219200, "mountpoint": "/boot/efi",
             "fstype": "vfat", "fsused": 6451200, "parents": ["/dev/nvme0n1"]},
            {"name": "/dev/nvme0n1p2", "type": "part", "size": 1919254093824, "mountpoint": "/",
             "fstype": "ext4", "fsused": h.disk_used_bytes, "parents": ["/dev/nvme0n1"]},
        ],
        "device_usages": [{"device_name": "/dev/nvme0n1p2", "mountpoint": "/", **usage}],
        "mount_target_usages": None,
    }

