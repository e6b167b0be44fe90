"""Instance type -> GPU model and count, from a small table of families.

flow's own naming is `<family>.<N>xlarge`: `h100.8xlarge` is 8 H100s, `a10g.xlarge` one A10G.
CPU-only families (`cpu.4xlarge`, `m5.2xlarge`, ...) have no GPU. A few cloud types whose size
does not count GPUs (`p5.48xlarge`) are listed exactly. Anything else is unknown (`None`); a task's
`gpus:` count overrides the table either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CPU_FAMILIES", "GPU_FAMILIES", "GpuSpec", "lookup_instance_type"]

#: family -> GPU model name, for `<family>.<N>xlarge` (N GPUs; plain `xlarge` is 1).
GPU_FAMILIES: dict[str, str] = {
    "b200": "B200",
    "gb200": "GB200",
    "h200": "H200",
    "h100": "H100",
    "gh200": "GH200",
    "a100": "A100",
    "a100-80gb": "A100 80GB",
    "a10g": "A10G",
    "a10": "A10",
    "a6000": "RTX A6000",
    "l40s": "L40S",
    "l40": "L40",
    "l4": "L4",
    "v100": "V100",
    "t4": "T4",
    "mi300x": "MI300X",
}

#: Families without GPUs (flow's `cpu` and the common AWS general/compute/memory families).
CPU_FAMILIES: frozenset[str] = frozenset(
    {"cpu", "m5", "m5a", "m6i", "m6a", "m7i", "m7a", "m7g", "c5", "c6i", "c6a", "c7i", "c7g",
     "r5", "r6i", "r7i", "t3", "t3a", "t4g"}
)

#: Exact cloud types whose size suffix is not a GPU count: type -> (model, count).
EXACT_TYPES: dict[str, tuple[str, int]] = {
    "p5.48xlarge": ("H100", 8),
    "p5e.48xlarge": ("H200", 8),
    "p5en.48xlarge": ("H200", 8),
    "p4d.24xlarge": ("A100", 8),
    "p4de.24xlarge": ("A100 80GB", 8),
    "g5.xlarge": ("A10G", 1),
    "g5.12xlarge": ("A10G", 4),
    "g5.48xlarge": ("A10G", 8),
    "g6.xlarge": ("L4", 1),
    "g6.12xlarge": ("L4", 4),
    "g6.48xlarge": ("L4", 8),
}

_SIZE_RE = re.compile(r"^(?P<n>\d*)xlarge$")


@dataclass(frozen=True)
class GpuSpec:
    """What an instance type says about GPUs. `count` 0 means none; None means unknown."""

    model: str | None
    count: int | None


def lookup_instance_type(instance_type: str | None) -> GpuSpec:
    """GPU model and count for an instance type; `GpuSpec(None, None)` when the table does not know it."""
    if not instance_type:
        return GpuSpec(None, None)
    name = instance_type.strip().lower()
    if name in EXACT_TYPES:
        model, count = EXACT_TYPES[name]
        return GpuSpec(model, count)
    family, _, size = name.partition(".")
    if family in CPU_FAMILIES:
        return GpuSpec(None, 0)
    if family in GPU_FAMILIES:
        match = _SIZE_RE.match(size)
        if match is None:
            return GpuSpec(GPU_FAMILIES[family], None)
        return GpuSpec(GPU_FAMILIES[family], int(match["n"] or 1))
    return GpuSpec(None, None)
