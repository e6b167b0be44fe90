"""Per-GPU facts from several GPUd sources, merged into one `GpuReading` per GPU.

GPUd names a GPU by UUID in metrics, by UUID and bus id in state blobs and machine-info, and by
a kernel-log PCI id in XID messages. `GpuTable` joins them on either key and numbers the GPUs:
by machine-info `minorID` (the /dev/nvidiaN number) where known, then by bus id, then by UUID.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from flow.health.gpud.values import normalize_bus_id, opt_int, opt_text
from flow.health.snapshot import GpuReading

__all__ = ["GPU_FIELDS", "GpuFacts", "GpuTable"]

#: The GpuReading fields an adapter may fill (identity fields are the table's job).
GPU_FIELDS = frozenset(f.name for f in fields(GpuReading)) - {"index", "uuid", "bus_id"}


@dataclass
class GpuFacts:
    """What one source says about one GPU: readings keyed by GpuReading field name."""

    uuid: str | None
    bus_id: str | None
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Entry:
    uuid: str | None = None
    bus_id: str | None = None
    minor: int | None = None
    values: dict[str, Any] = field(default_factory=dict)


class GpuTable:
    """Find-or-create GPUs by UUID or bus id; the first source to give a reading wins."""

    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._by_uuid: dict[str, _Entry] = {}
        self._by_bus: dict[str, _Entry] = {}

    def _find(self, uuid: str | None, bus_id: str | None) -> _Entry | None:
        if uuid is not None and uuid in self._by_uuid:
            return self._by_uuid[uuid]
        if bus_id is not None and bus_id in self._by_bus:
            found = self._by_bus[bus_id]
            # A different UUID on the same bus id is a different GPU only if both are known.
            if uuid is None or found.uuid is None:
                return found
        return None

    def _entry(self, uuid: Any, bus_id: Any) -> _Entry | None:
        uuid_text = opt_text(uuid)
        bus = normalize_bus_id(bus_id)
        if uuid_text is None and bus is None:
            return None
        entry = self._find(uuid_text, bus)
        if entry is None:
            entry = _Entry()
            self._entries.append(entry)
        if entry.uuid is None and uuid_text is not None:
            entry.uuid = uuid_text
            self._by_uuid[uuid_text] = entry
        if entry.bus_id is None and bus is not None:
            entry.bus_id = bus
            self._by_bus.setdefault(bus, entry)
        return entry

    def add_inventory(self, gpus: Iterable[Mapping[str, Any]]) -> None:
        """machine-info `gpuInfo.gpus[]`: `uuid`, `busID`, `minorID` (a string in GPUd's JSON)."""
        for gpu in gpus:
            entry = self._entry(gpu.get("uuid"), gpu.get("busID"))
            if entry is not None and entry.minor is None:
                entry.minor = opt_int(gpu.get("minorID"))

    def merge(self, facts: GpuFacts) -> None:
        entry = self._entry(facts.uuid, facts.bus_id)
        if entry is None:
            return
        for name, value in facts.values.items():
            if name in GPU_FIELDS and value is not None and name not in entry.values:
                entry.values[name] = value

    def _ordered(self) -> list[_Entry]:
        def key(entry: _Entry) -> tuple[bool, int, str, str]:
            return (entry.minor is None, entry.minor or 0, entry.bus_id or "~", entry.uuid or "")

        return sorted(self._entries, key=key)

    def index_of(self, gpu: str | None) -> int | None:
        """The index of the GPU named by a UUID or any spelling of its bus id, or None."""
        if gpu is None:
            return None
        target = self._by_uuid.get(gpu)
        if target is None:
            bus = normalize_bus_id(gpu)
            target = self._by_bus.get(bus) if bus is not None else None
        if target is None:
            return None
        for index, entry in enumerate(self._ordered()):
            if entry is target:
                return index
        return None

    def readings(self, *, model: str | None = None) -> tuple[GpuReading, ...]:
        """One reading per GPU; a GPU only machine-info names (no reading at all) is `silent`."""
        result = []
        for index, entry in enumerate(self._ordered()):
            values = dict(entry.values)
            silent = not values
            values.setdefault("model", model)
            result.append(GpuReading(index=index, uuid=entry.uuid, bus_id=entry.bus_id, silent=silent,
                                     **values))
        return tuple(result)
