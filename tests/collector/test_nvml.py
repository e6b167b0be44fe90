"""The NVML reader: a fake NVML at the boundary (as gpustat's tests do), and the real absence here."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from flow.health.collector.nvml import NvmlReader, NvmlUnavailable


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    def __str__(self) -> str:
        return "Not Supported"


def _not_supported(*_: Any) -> Any:
    raise NotSupported()


def _field(ret: int, vtype: int, **value: Any) -> SimpleNamespace:
    return SimpleNamespace(nvmlReturn=ret, valueType=vtype, value=SimpleNamespace(**value))


def fake_nvml(*, gpus: int = 2, old_gpu: int | None = None) -> SimpleNamespace:
    """Two H100-like GPUs; GPU `old_gpu` supports none of the optional readings."""

    def supported(index: int, fn: Any) -> Any:
        def call(handle: int, *args: Any) -> Any:
            if handle == old_gpu:
                raise NotSupported()
            return fn(handle, *args)
        return call

    def ecc(handle: int, kind: int, counter: int) -> int:
        return {(0, 0): 2, (1, 0): 5, (0, 1): 100, (1, 1): 300}[(kind, counter)]

    return SimpleNamespace(
        NVML_TEMPERATURE_GPU=0, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN=1, NVML_TEMPERATURE_THRESHOLD_MEM_MAX=5,
        NVML_CLOCK_GRAPHICS=0, NVML_CLOCK_MEM=2, NVML_MEMORY_ERROR_TYPE_CORRECTED=0,
        NVML_MEMORY_ERROR_TYPE_UNCORRECTED=1, NVML_VOLATILE_ECC=0, NVML_AGGREGATE_ECC=1,
        NVML_NVLINK_ERROR_DL_REPLAY=0, NVML_NVLINK_ERROR_DL_RECOVERY=1, NVML_NVLINK_ERROR_DL_CRC_FLIT=2,
        NVML_NVLINK_MAX_LINKS=4,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"550.54.15",
        nvmlSystemGetCudaDriverVersion=lambda: 12040,
        nvmlDeviceGetCount=lambda: gpus,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}",
        nvmlDeviceGetName=lambda h: "NVIDIA H100 80GB HBM3",
        nvmlDeviceGetPciInfo=lambda h: SimpleNamespace(busId=f"00000000:0{h}:00.0".encode()),
        nvmlDeviceGetTemperature=lambda h, sensor: 61,
        nvmlDeviceGetTemperatureThreshold=supported(0, lambda h, kind: {1: 90, 5: 95}[kind]),
        nvmlDeviceGetPowerUsage=lambda h: 350_500,  # mW
        nvmlDeviceGetEnforcedPowerLimit=supported(0, lambda h: 700_000),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=40 * 2**30, total=80 * 2**30),
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=97, memory=40),
        nvmlDeviceGetClockInfo=lambda h, clock: {0: 1980, 2: 2619}[clock],
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0x4 | 0x40,  # sw_power_cap + hw_thermal
        nvmlDeviceGetTotalEccErrors=supported(0, ecc),
        nvmlDeviceGetRemappedRows=supported(0, lambda h: (0, 3, 1, 0)),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [object(), object()],
        nvmlDeviceGetFieldValues=supported(0, lambda h, ids: [
            _field(0, 1, uiVal=70),   # HBM temperature
            _field(0, 3, ullVal=4),   # NVLink replay total
            _field(3, 3, ullVal=0),   # recovery: NOT_SUPPORTED for this field
            _field(0, 3, ullVal=1),   # CRC flit total
        ]),
        nvmlDeviceGetNvLinkState=_not_supported,
        nvmlDeviceGetNvLinkErrorCounter=_not_supported,
    )


def test_reads_every_metric_with_units_converted() -> None:
    reader = NvmlReader(fake_nvml(gpus=1))
    reader.open()
    [gpu] = reader.read_gpus()
    assert (gpu.index, gpu.uuid, gpu.bus_id, gpu.model) == (0, "GPU-0", "00000000:00:00.0",
                                                             "NVIDIA H100 80GB HBM3")
    assert (gpu.temp_c, gpu.temp_hbm_c, gpu.slowdown_temp_c, gpu.mem_max_temp_c) == (61.0, 70.0, 90.0, 95.0)
    assert (gpu.power_w, gpu.power_limit_w) == (350.5, 700.0)
    assert (gpu.mem_used_bytes, gpu.mem_total_bytes) == (40 * 2**30, 80 * 2**30)
    assert (gpu.util_gpu_pct, gpu.util_mem_pct) == (97.0, 40.0)
    assert (gpu.clock_graphics_mhz, gpu.clock_mem_mhz) == (1980.0, 2619.0)
    assert gpu.throttle_reasons == ("sw_power_cap", "hw_thermal_slowdown")
    assert (gpu.ecc_volatile_corrected, gpu.ecc_volatile_uncorrected) == (2, 5)
    assert (gpu.ecc_aggregate_corrected, gpu.ecc_aggregate_uncorrected) == (100, 300)
    assert (gpu.remapped_rows_uncorrectable, gpu.remap_pending, gpu.remap_failed) == (3, True, False)
    assert (gpu.nvlink_replay_errors, gpu.nvlink_recovery_errors, gpu.nvlink_crc_errors) == (4, None, 1)
    assert gpu.processes == 2
    assert (reader.driver_version, reader.cuda_version) == ("550.54.15", "12.4")
    status = reader.status(gpu_product=gpu.model, error="GPUd unreachable")
    assert (status.reachable, status.state, status.driver_version) == (False, "nvml", "550.54.15")


def test_not_supported_readings_are_none_not_zero_nor_an_error() -> None:
    reader = NvmlReader(fake_nvml(gpus=2, old_gpu=1))
    reader.open()
    new, old = reader.read_gpus()
    assert new.ecc_volatile_uncorrected == 5
    assert old.temp_c == 61.0  # what it supports is still read
    assert old.slowdown_temp_c is None and old.power_limit_w is None and old.temp_hbm_c is None
    assert old.ecc_volatile_corrected is None and old.ecc_aggregate_uncorrected is None
    assert old.remapped_rows_uncorrectable is None and old.remap_pending is None
    assert old.nvlink_replay_errors is None and old.nvlink_errors is None


def test_old_driver_throttle_api_and_per_link_nvlink_counters() -> None:
    nvml = fake_nvml(gpus=1)
    del nvml.nvmlDeviceGetCurrentClocksEventReasons
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 0x8 | 0x80 | 0x1
    nvml.nvmlDeviceGetFieldValues = _not_supported
    nvml.nvmlDeviceGetNvLinkState = lambda h, link: 1 if link < 2 else 0
    nvml.nvmlDeviceGetNvLinkErrorCounter = lambda h, link, counter: 10 * counter + link
    reader = NvmlReader(nvml)
    reader.open()
    [gpu] = reader.read_gpus()
    assert gpu.throttle_reasons == ("gpu_idle", "hw_slowdown", "hw_power_brake_slowdown")
    # two active links: replay 0+1, recovery 10+11, crc 20+21
    assert (gpu.nvlink_replay_errors, gpu.nvlink_recovery_errors, gpu.nvlink_crc_errors) == (1, 21, 41)


def test_init_failure_is_a_clear_absence() -> None:
    nvml = fake_nvml()

    def broken() -> None:
        raise NVMLError("NVML Shared Library Not Found")

    nvml.nvmlInit = broken
    with pytest.raises(NvmlUnavailable, match=r"^NVML not available: NVML Shared Library Not Found"):
        NvmlReader(nvml).open()


def test_this_host_has_no_nvml_and_says_so() -> None:
    """The real pynvml on a machine without a driver: a message, not a traceback."""
    reader = NvmlReader()
    try:
        reader.open()
    except NvmlUnavailable as exc:
        assert str(exc).startswith("NVML not available: ")
    else:  # pragma: no cover - only on a GPU machine
        reader.close()
        pytest.skip("not applicable: this machine has NVML")


def test_reading_before_open_is_refused() -> None:
    with pytest.raises(NvmlUnavailable, match="not open"):
        NvmlReader(fake_nvml()).read_gpus()
