"""GPU readings straight from NVML, for nodes where GPUd is missing.

This is the one boundary where NVML errors become `None`: every call goes through `_query`,
so a reading the GPU does not support (NotSupported, or any other NVML error for that call)
is None, never 0 and never an exception. A host without NVML (no nvidia-ml-py, or no driver)
raises `NvmlUnavailable` from `open()` with a message that starts "NVML not available: ".

`pynvml` is imported lazily, and this module imports nothing heavier than the snapshot
model, so it works on a node that has only nvidia-ml-py installed.
"""

from __future__ import annotations

import importlib
import logging
import socket
from collections.abc import Callable
from types import ModuleType
from typing import Any

from flow.errors import FlowError
from flow.health.snapshot import GpudStatus, GpuReading

__all__ = ["THROTTLE_REASON_BITS", "NvmlReader", "NvmlUnavailable"]

log = logging.getLogger("flow.collector.nvml")

#: NVML clock-event (throttle) reason bits and the names the snapshot uses for them.
#: The values are NVML's own (nvml.h `nvmlClocksEventReason*`), stable across driver versions.
THROTTLE_REASON_BITS: tuple[tuple[int, str], ...] = (
    (0x0000000000000001, "gpu_idle"),
    (0x0000000000000002, "applications_clocks_setting"),
    (0x0000000000000004, "sw_power_cap"),
    (0x0000000000000008, "hw_slowdown"),
    (0x0000000000000010, "sync_boost"),
    (0x0000000000000020, "sw_thermal_slowdown"),
    (0x0000000000000040, "hw_thermal_slowdown"),
    (0x0000000000000080, "hw_power_brake_slowdown"),
    (0x0000000000000100, "display_clock_setting"),
)

# NVML field ids (nvml.h NVML_FI_DEV_*): HBM temperature, and NVLink error totals over all links.
_FI_MEMORY_TEMP = 82
_FI_NVLINK_CRC_FLIT_TOTAL = 38
_FI_NVLINK_REPLAY_TOTAL = 52
_FI_NVLINK_RECOVERY_TOTAL = 59
_FIELDS = (_FI_MEMORY_TEMP, _FI_NVLINK_REPLAY_TOTAL, _FI_NVLINK_RECOVERY_TOTAL, _FI_NVLINK_CRC_FLIT_TOTAL)
# nvmlValueType_t -> the member of the value union that holds it.
_VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


class NvmlUnavailable(FlowError):
    """NVML cannot be used on this host (no nvidia-ml-py, no driver, no GPU)."""


def _decode(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _throttle_names(mask: int) -> tuple[str, ...]:
    return tuple(name for bit, name in THROTTLE_REASON_BITS if mask & bit)


class NvmlReader:
    """Reads every GPU through NVML. Use `open()` first; `close()` when done.

    `module` replaces the `pynvml` module (tests pass a fake with the same functions).
    """

    def __init__(self, module: ModuleType | Any | None = None) -> None:
        self._module = module
        self._nvml: Any = None
        self.driver_version: str | None = None
        self.cuda_version: str | None = None

    @property
    def is_open(self) -> bool:
        return self._nvml is not None

    def open(self) -> None:
        """Initialise NVML.

        Raises:
            NvmlUnavailable: nvidia-ml-py is not installed, or NVML cannot start (no driver).
        """
        if self._nvml is not None:
            return
        nvml = self._module
        if nvml is None:
            try:
                nvml = importlib.import_module("pynvml")
            except ImportError as exc:
                raise NvmlUnavailable(
                    f"NVML not available: nvidia-ml-py is not installed ({exc})",
                    hint="pip install 'flow-health[nvml]' on GPU nodes without GPUd",
                ) from None
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError and its per-code subclasses, or a broken library
            raise NvmlUnavailable(
                f"NVML not available: {_decode(exc) or type(exc).__name__} "
                "(no NVIDIA driver or GPU on this host?)"
            ) from None
        self._nvml = nvml
        self.driver_version = self._query(nvml.nvmlSystemGetDriverVersion, map_=_decode)
        cuda = self._query(nvml.nvmlSystemGetCudaDriverVersion)
        self.cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else None

    def close(self) -> None:
        if self._nvml is not None:
            self._query(self._nvml.nvmlShutdown)
            self._nvml = None

    def _query(self, fn: Callable[..., Any], *args: Any, map_: Callable[[Any], Any] | None = None) -> Any:
        """Call one NVML function; any NVML error (NotSupported first of all) becomes None."""
        try:
            value = fn(*args)
        except Exception as exc:
            # NVMLError_NotSupported is the common case; any other error costs the reading only.
            log.debug("NVML %s%s: %s", getattr(fn, "__name__", fn), args[1:], exc)
            return None
        return map_(value) if map_ is not None else value

    def status(self, *, gpu_product: str | None = None, error: str | None = None) -> GpudStatus:
        """The GpudStatus of a snapshot read from NVML: GPUd is not reachable, state `nvml`."""
        return GpudStatus(
            reachable=False, state="nvml", error=error, driver_version=self.driver_version,
            cuda_version=self.cuda_version, hostname=socket.gethostname(), gpu_product=gpu_product,
        )

    def read_gpus(self) -> tuple[GpuReading, ...]:
        """One `GpuReading` per GPU; empty when NVML reports no device.

        Raises:
            NvmlUnavailable: `open()` was not called or failed.
        """
        nvml = self._nvml
        if nvml is None:
            raise NvmlUnavailable("NVML not available: the reader is not open")
        count = self._query(nvml.nvmlDeviceGetCount) or 0
        readings = []
        for index in range(count):
            handle = self._query(nvml.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                # NVML counts the device but cannot open it: listed, nothing read (scored silent).
                readings.append(GpuReading(index=index, silent=True))
                continue
            readings.append(self._read_one(nvml, index, handle))
        return tuple(readings)

    def _read_one(self, nvml: Any, index: int, handle: Any) -> GpuReading:
        q = self._query
        mem = q(nvml.nvmlDeviceGetMemoryInfo, handle)
        util = q(nvml.nvmlDeviceGetUtilizationRates, handle)
        power_mw = q(nvml.nvmlDeviceGetPowerUsage, handle)
        limit_mw = q(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        # Drivers >= 535 name them "clocks event reasons"; older ones only have "throttle".
        reasons_fn = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                      or nvml.nvmlDeviceGetCurrentClocksThrottleReasons)
        mask = q(reasons_fn, handle)
        remap = q(nvml.nvmlDeviceGetRemappedRows, handle)
        pci = q(nvml.nvmlDeviceGetPciInfo, handle)
        procs = q(nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        fields = self._fields(nvml, handle)
        nvlink = (_int(fields[_FI_NVLINK_REPLAY_TOTAL]), _int(fields[_FI_NVLINK_RECOVERY_TOTAL]),
                  _int(fields[_FI_NVLINK_CRC_FLIT_TOTAL]))
        if all(v is None for v in nvlink):
            nvlink = self._nvlink_per_link(nvml, handle)

        def ecc(kind: int, counter: int) -> int | None:
            value = q(nvml.nvmlDeviceGetTotalEccErrors, handle, kind, counter)
            return int(value) if value is not None else None

        return GpuReading(
            index=index,
            uuid=q(nvml.nvmlDeviceGetUUID, handle, map_=_decode),
            bus_id=_decode(pci.busId) if pci is not None else None,
            model=q(nvml.nvmlDeviceGetName, handle, map_=_decode),
            temp_c=q(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU, map_=float),
            temp_hbm_c=fields[_FI_MEMORY_TEMP],
            slowdown_temp_c=q(nvml.nvmlDeviceGetTemperatureThreshold, handle,
                              nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN, map_=float),
            mem_max_temp_c=q(nvml.nvmlDeviceGetTemperatureThreshold, handle,
                             nvml.NVML_TEMPERATURE_THRESHOLD_MEM_MAX, map_=float),
            power_w=power_mw / 1000.0 if power_mw is not None else None,  # NVML reports mW
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            mem_used_bytes=int(mem.used) if mem is not None else None,
            mem_total_bytes=int(mem.total) if mem is not None else None,
            util_gpu_pct=float(util.gpu) if util is not None else None,
            util_mem_pct=float(util.memory) if util is not None else None,
            clock_graphics_mhz=q(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_GRAPHICS, map_=float),
            clock_mem_mhz=q(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_MEM, map_=float),
            throttle_reasons=_throttle_names(int(mask)) if mask is not None else (),
            ecc_volatile_corrected=ecc(nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC),
            ecc_volatile_uncorrected=ecc(nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC),
            ecc_aggregate_corrected=ecc(nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_AGGREGATE_ECC),
            ecc_aggregate_uncorrected=ecc(nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                                          nvml.NVML_AGGREGATE_ECC),
            remapped_rows_uncorrectable=int(remap[1]) if remap is not None else None,
            remap_pending=bool(remap[2]) if remap is not None else None,
            remap_failed=bool(remap[3]) if remap is not None else None,
            nvlink_replay_errors=nvlink[0],
            nvlink_recovery_errors=nvlink[1],
            nvlink_crc_errors=nvlink[2],
            processes=len(procs) if procs is not None else None,
        )

    def _fields(self, nvml: Any, handle: Any) -> dict[int, float | None]:
        """HBM temperature and NVLink error totals in one NVML call; each field may be None."""
        out: dict[int, float | None] = dict.fromkeys(_FIELDS)
        values = self._query(nvml.nvmlDeviceGetFieldValues, handle, list(_FIELDS))
        if values is None:
            return out
        for field_id, value in zip(_FIELDS, values, strict=False):
            if getattr(value, "nvmlReturn", 1) != 0:  # NVML_SUCCESS is 0; anything else: no reading
                continue
            member = _VALUE_MEMBERS.get(getattr(value, "valueType", -1))
            raw = getattr(value.value, member, None) if member else None
            out[field_id] = float(raw) if isinstance(raw, (int, float)) else None
        return out

    def _nvlink_per_link(self, nvml: Any, handle: Any) -> tuple[int | None, int | None, int | None]:
        """Older drivers without the total fields: sum the counters of each active link."""
        counters = (nvml.NVML_NVLINK_ERROR_DL_REPLAY, nvml.NVML_NVLINK_ERROR_DL_RECOVERY,
                    nvml.NVML_NVLINK_ERROR_DL_CRC_FLIT)
        totals: list[int | None] = [None, None, None]
        for link in range(int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))):
            state = self._query(nvml.nvmlDeviceGetNvLinkState, handle, link)
            if state is None:
                break  # no NVLink on this GPU, or no more links
            if not state:
                continue
            for i, counter in enumerate(counters):
                value = self._query(nvml.nvmlDeviceGetNvLinkErrorCounter, handle, link, counter)
                if value is not None:
                    totals[i] = (totals[i] or 0) + int(value)
        return totals[0], totals[1], totals[2]


def _int(value: float | None) -> int | None:
    return int(value) if value is not None else None
