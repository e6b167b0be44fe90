"""A GPUd-compatible simulator: serves GPUd's HTTPS API from named scenarios.

It stands in for leptonai's GPUd in `flow health demo`, the tests and the benchmarks, and
speaks GPUd's wire format only (it shares no parsing code with flow's GPUd client).

```python
async with SimFleet(nodes=3, scenario="mixed") as fleet:
    for node in fleet.nodes:
        print(node.url, node.scenario, node.gpu_model)
```
See docs/simulator.md for the scenarios and what each one looks like on the wire.
"""

from __future__ import annotations

from flow.health.sim.background import FleetThread, start_fleet_in_thread
from flow.health.sim.hardware import DEFAULT_GPU_MODEL, GPU_MODELS, GpuModel, resolve_model
from flow.health.sim.scenarios import (
    HOSTILE_SCENARIOS,
    MIXED,
    SCENARIO_DESCRIPTIONS,
    SCENARIOS,
    assign_scenarios,
)
from flow.health.sim.server import (
    DEFAULT_GPU_COUNT,
    DEFAULT_GPUD_VERSION,
    DEFAULT_SLOW_DELAY_S,
    GARBAGE_BODY,
    SimFleet,
    SimNode,
    host_boot_id,
)

__all__ = [
    "DEFAULT_GPUD_VERSION",
    "DEFAULT_GPU_COUNT",
    "DEFAULT_GPU_MODEL",
    "DEFAULT_SLOW_DELAY_S",
    "GARBAGE_BODY",
    "GPU_MODELS",
    "HOSTILE_SCENARIOS",
    "MIXED",
    "SCENARIOS",
    "SCENARIO_DESCRIPTIONS",
    "FleetThread",
    "GpuModel",
    "SimFleet",
    "SimNode",
    "assign_scenarios",
    "host_boot_id",
    "resolve_model",
    "start_fleet_in_thread",
]
