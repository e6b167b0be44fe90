"""One collection cycle on the node: GPUd (or NVML), host metrics, scored into a snapshot.

`Sampler.sample()` never raises for what GPUd, NVML or psutil do: an unreachable GPUd gives a
snapshot with host metrics and an `unknown` verdict (or, where NVML works, GPU readings from
NVML with `gpud.state == "nvml"`). The log tells the story by its changes only: GPUd
unreachable once when it happens, once again when GPUd is back; NVML's absence once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from flow.config import Thresholds
from flow.health.collector.host import HostSampler
from flow.health.collector.nvml import NvmlReader, NvmlUnavailable
from flow.health.scoring import DEFAULT_THRESHOLDS, score_snapshot
from flow.health.snapshot import GpudStatus, HostMetrics, Snapshot, utcnow

__all__ = ["NVML_RETRY_S", "GpudReader", "Identity", "Sampler"]

log = logging.getLogger("flow.collector")

#: How often a host without NVML is asked again (a driver may be installed while we run).
NVML_RETRY_S = 300.0


class GpudReader(Protocol):
    """What the sampler needs from the GPUd client (`flow.health.gpud.GpudClient`)."""

    base_url: str

    async def read(self, *, task_id: str, task_name: str = "", node: str = "",
                   instance_type: str | None = None, boot_id: str | None = None) -> Snapshot: ...

    async def aclose(self) -> None: ...


class Identity(Protocol):
    """Who the snapshots are about (CollectorSettings is one)."""

    @property
    def task_id(self) -> str: ...
    @property
    def task_name(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def instance_type(self) -> str | None: ...


class Sampler:
    """Takes scored snapshots of this node, one per `sample()` call.

    Args:
        identity: task id, name, node and instance type written into each snapshot.
        gpud: the GPUd client, or None on a node without GPUd.
        host: the psutil sampler (None: no host metrics).
        nvml: the NVML reader used while GPUd is unreachable (None: never use NVML).
        boot_id: this machine's boot id (lets the GPUd client cache /machine-info per boot).
        expected_gpus: the GPUs this node should have (None: unknown); fewer seen is critical.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        gpud: GpudReader | None,
        host: HostSampler | None,
        nvml: NvmlReader | None,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        boot_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        expected_gpus: int | None = None,
    ) -> None:
        self._identity = identity
        self._expected_gpus = expected_gpus
        self._gpud = gpud
        self._host = host
        self._nvml = nvml
        self._thresholds = thresholds
        self._boot_id = boot_id
        self._clock = clock
        self._previous: Snapshot | None = None
        self._gpud_up: bool | None = None
        self._nvml_next_try = 0.0
        self._nvml_problem: str | None = None
        self.latest: Snapshot | None = None

    async def sample(self) -> Snapshot:
        ident = self._identity
        if self._gpud is not None:
            snap = await self._gpud.read(task_id=ident.task_id, task_name=ident.task_name, node=ident.node,
                                         instance_type=ident.instance_type, boot_id=self._boot_id)
        else:
            snap = Snapshot(timestamp=utcnow(), task_id=ident.task_id, task_name=ident.task_name,
                            node=ident.node, instance_type=ident.instance_type,
                            gpud=GpudStatus(reachable=False, state="not_installed",
                                            error="no GPUd configured on this node"))
        self._log_gpud_change(snap.gpud)
        host = self._host_metrics()
        if host is not None:
            snap = replace(snap, host=host)
        if not snap.gpud.reachable and self._nvml is not None:
            snap = await self._from_nvml(snap)
        snap = replace(snap, expected_gpus=self._expected_gpus)
        snap = snap.with_verdict(score_snapshot(snap, self._thresholds, previous=self._previous))
        self._previous = snap
        self.latest = snap
        return snap

    def _host_metrics(self) -> HostMetrics | None:
        if self._host is None:
            return None
        try:
            return self._host.sample()
        except Exception as exc:  # psutil readings are guarded one by one; this is the backstop
            log.warning("host metrics failed: %s", exc)
            return None

    async def _from_nvml(self, snap: Snapshot) -> Snapshot:
        """GPUd is not answering: read the GPUs from NVML if it is there, else say why not."""
        reader = self._nvml
        assert reader is not None
        gpud = snap.gpud
        why = f"GPUd unreachable ({gpud.state}): {gpud.error or 'no answer'}"
        if not reader.is_open and self._clock() >= self._nvml_next_try:
            try:
                await asyncio.to_thread(reader.open)
            except NvmlUnavailable as exc:
                self._nvml_next_try = self._clock() + NVML_RETRY_S
                if exc.message != self._nvml_problem:
                    log.info("%s; GPU readings need GPUd", exc.message)
                    self._nvml_problem = exc.message
            else:
                log.info("reading GPUs from NVML while GPUd is unreachable (driver %s)",
                         reader.driver_version or "unknown")
                self._nvml_problem = None
        if not reader.is_open:
            error = gpud.error or "no answer"
            if self._nvml_problem:
                error = f"{error}; {self._nvml_problem}"
            return replace(snap, gpud=replace(gpud, error=error))
        try:
            gpus = await asyncio.to_thread(reader.read_gpus)
        except Exception as exc:  # NVML went away under us (driver unloaded): drop and retry later
            log.warning("NVML read failed: %s", exc)
            await asyncio.to_thread(reader.close)
            self._nvml_next_try = self._clock() + NVML_RETRY_S
            error = f"{gpud.error or 'no answer'}; NVML read failed: {exc}"
            return replace(snap, gpud=replace(gpud, error=error))
        status = reader.status(gpu_product=gpus[0].model if gpus else None, error=why)
        return replace(snap, gpus=gpus, gpud=status, components=(), events=(), xids=(), read_errors=())

    def _log_gpud_change(self, status: GpudStatus) -> None:
        up = status.reachable
        if up == self._gpud_up:
            return
        where = self._gpud.base_url if self._gpud is not None else "(none)"
        if up:
            if self._gpud_up is None:
                log.info("GPUd %s reachable at %s", status.version or "", where)
            else:
                log.info("GPUd reachable again at %s (%s)", where, status.version or "version unknown")
        else:
            log.warning("GPUd unreachable at %s (%s): %s; snapshots carry host metrics until it is back",
                        where, status.state, status.error or "no answer")
        self._gpud_up = up
