"""GPU models the simulator can stand in for: names, memory sizes and limits as NVML reports them.

Values are what `nvidia-smi -q` / NVML show on real boards (memory totals are NVML's
`memory.total`, in bytes; thresholds in °C; power limits in mW). Where a board has no HBM
sensor (L4), the memory threshold is 0, as NVML reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["DEFAULT_GPU_MODEL", "GPU_MODELS", "GpuModel", "resolve_model"]

_MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuModel:
    """One GPU product, as GPUd would see it through NVML."""

    key: str                      # the name used on the command line: "H100-80GB"
    product_name: str             # NVML product name: "NVIDIA H100 80GB HBM3"
    architecture: str             # lower-case NVML architecture name
    memory_total_bytes: int       # NVML memory.total
    memory_label: str             # /machine-info gpuInfo.memory, e.g. "80GB"
    memory_reserved_bytes: int    # NVML v2 "reserved" (driver/firmware)
    threshold_shutdown_c: int
    threshold_slowdown_c: int
    threshold_mem_max_c: int      # 0 where the board has no HBM sensor
    threshold_gpu_max_c: int
    power_limit_mw: int           # enforced = management limit
    idle_power_mw: int
    max_graphics_mhz: int
    idle_graphics_mhz: int
    memory_mhz: int
    nvlink_links: int             # 0: no NVLink (PCIe board)
    row_remapping: bool           # memory error management capabilities (GPUd's table)
    fabric_manager: bool          # NVSwitch systems run nv-fabricmanager
    driver_version: str
    cuda_version: str


GPU_MODELS: Mapping[str, GpuModel] = MappingProxyType({
    m.key: m
    for m in (
        GpuModel(
            key="H100-80GB", product_name="NVIDIA H100 80GB HBM3", architecture="hopper",
            memory_total_bytes=81559 * _MIB, memory_label="80GB", memory_reserved_bytes=328 * _MIB,
            threshold_shutdown_c=92, threshold_slowdown_c=89, threshold_mem_max_c=95,
            threshold_gpu_max_c=87, power_limit_mw=700_000, idle_power_mw=70_000,
            max_graphics_mhz=1980, idle_graphics_mhz=345, memory_mhz=2619, nvlink_links=18,
            row_remapping=True, fabric_manager=True, driver_version="550.90.07", cuda_version="12.4",
        ),
        GpuModel(
            key="A100-80GB", product_name="NVIDIA A100-SXM4-80GB", architecture="ampere",
            memory_total_bytes=81920 * _MIB, memory_label="80GB", memory_reserved_bytes=584 * _MIB,
            threshold_shutdown_c=92, threshold_slowdown_c=89, threshold_mem_max_c=95,
            threshold_gpu_max_c=85, power_limit_mw=400_000, idle_power_mw=55_000,
            max_graphics_mhz=1410, idle_graphics_mhz=210, memory_mhz=1593, nvlink_links=12,
            row_remapping=True, fabric_manager=True, driver_version="535.183.01", cuda_version="12.2",
        ),
        GpuModel(
            key="H200-141GB", product_name="NVIDIA H200", architecture="hopper",
            memory_total_bytes=143771 * _MIB, memory_label="141GB", memory_reserved_bytes=520 * _MIB,
            threshold_shutdown_c=92, threshold_slowdown_c=89, threshold_mem_max_c=95,
            threshold_gpu_max_c=87, power_limit_mw=700_000, idle_power_mw=75_000,
            max_graphics_mhz=1980, idle_graphics_mhz=345, memory_mhz=3201, nvlink_links=18,
            row_remapping=True, fabric_manager=True, driver_version="550.90.07", cuda_version="12.4",
        ),
        GpuModel(
            key="L4-24GB", product_name="NVIDIA L4", architecture="ada",
            memory_total_bytes=23034 * _MIB, memory_label="24GB", memory_reserved_bytes=318 * _MIB,
            threshold_shutdown_c=98, threshold_slowdown_c=95, threshold_mem_max_c=0,
            threshold_gpu_max_c=92, power_limit_mw=72_000, idle_power_mw=16_000,
            max_graphics_mhz=2040, idle_graphics_mhz=210, memory_mhz=6251, nvlink_links=0,
            row_remapping=False, fabric_manager=False, driver_version="535.183.01", cuda_version="12.2",
        ),
    )
})

DEFAULT_GPU_MODEL = "H100-80GB"


def resolve_model(name: str) -> GpuModel:
    """Find a model by key ("H100-80GB"), short name ("h100") or NVML product name.

    Raises ValueError naming the choices.
    """
    wanted = name.strip().lower()
    for m in GPU_MODELS.values():
        if wanted in (m.key.lower(), m.product_name.lower(), m.key.split("-")[0].lower()):
            return m
    raise ValueError(f"unknown GPU model {name!r}; choose one of: {', '.join(GPU_MODELS)}")
