"""The named scenarios a simulated node can play, and how `mixed` spreads them over a fleet.

`SCENARIOS` are what GPUd says about GPUs (and GPUd down, slow or behind a wrong proxy);
`HOSTILE_SCENARIOS` are a node attacking its client (see hostile.py). A node plays either kind,
but `mixed` (and so the demo) spreads only `SCENARIOS`: a hostile node is asked for by name.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType

__all__ = [
    "HOSTILE_SCENARIOS",
    "MIXED",
    "SCENARIOS",
    "SCENARIO_DESCRIPTIONS",
    "TRANSPORT_SCENARIOS",
    "assign_scenarios",
    "validate_scenario",
]

SCENARIOS: tuple[str, ...] = (
    "healthy",
    "hot",
    "warm",
    "throttled",
    "ecc",
    "xid-fatal",
    "xid-app",
    "row-remap-pending",
    "row-remap-failed",
    "nvlink-errors",
    "memory-pressure",
    "idle",
    "gpu-missing",
    "gpu-silent",
    "gpud-down",
    "gpud-slow",
    "gpud-garbage",
)

HOSTILE_SCENARIOS: tuple[str, ...] = ("huge-body", "gzip-bomb", "drip", "control-chars")

MIXED = "mixed"

# Scenarios about the agent's transport rather than the GPUs.
TRANSPORT_SCENARIOS: frozenset[str] = frozenset({"gpud-down", "gpud-slow", "gpud-garbage"})

SCENARIO_DESCRIPTIONS: Mapping[str, str] = MappingProxyType({
    "healthy": "every GPU busy and cool; every component Healthy",
    "hot": "every GPU above 85 °C (below the slowdown threshold)",
    "warm": "every GPU between 75 and 85 °C",
    "throttled": "HW slowdown + power brake engaged on every GPU; hw-slowdown Unhealthy",
    "ecc": "uncorrected ECC errors on GPU 0 (GPUd keeps the component Healthy)",
    "xid-fatal": "XID 79 (fallen off the bus) on GPU 0: error_xid Unhealthy + a Fatal event",
    "xid-app": "XID 13 (graphics engine exception) on GPU 0: a Warning event only",
    "row-remap-pending": "GPU 0 has a pending row remap: remapped-rows Unhealthy, REBOOT_SYSTEM",
    "row-remap-failed": "GPU 0 failed a row remap: remapped-rows Unhealthy, HARDWARE_INSPECTION",
    "nvlink-errors": "CRC / replay / recovery errors climbing on GPU 0's NVLinks",
    "memory-pressure": "every GPU's framebuffer more than 95 % used",
    "idle": "every GPU below 10 % utilisation, clocks at idle",
    "gpu-missing": "GPU 3 (on 8) absent from NVML: machine-info, metrics and states list one GPU fewer",
    "gpu-silent": "GPU 3 (on 8) lost after GPUd started: machine-info lists it, no metric or state reads it",
    "gpud-down": "nothing listens on the port: connections are refused",
    "gpud-slow": "every answer comes after a delay (default 30 s)",
    "gpud-garbage": "HTTP 200 with a body that is not GPUd's",
    "huge-body": "hostile: every answer but /healthz is a 256 MiB JSON array, chunked",
    "gzip-bomb": "hostile: every answer but /healthz is 2 MiB of gzip inflating to 2 GiB",
    "drip": "hostile: answers but /healthz send headers, then one byte a second",
    "control-chars": "hostile: healthy, but every reason, event and host name carries terminal escapes",
})

# In a large `mixed` fleet, this share of the nodes past the first len(SCENARIOS) is unhealthy.
_MIXED_TAIL_FAULT_EVERY = 10


def validate_scenario(name: str) -> str:
    """Return `name` if it is a scenario or `mixed`; raise ValueError naming the choices."""
    if name in SCENARIOS or name in HOSTILE_SCENARIOS or name == MIXED:
        return name
    raise ValueError(
        f"unknown scenario {name!r}; choose one of: {', '.join((*SCENARIOS, *HOSTILE_SCENARIOS, MIXED))}"
    )


def assign_scenarios(
    nodes: int, scenario: str | Sequence[str], *, unsupported: Collection[str] = ()
) -> list[str]:
    """One scenario per node.

    A single name applies to every node. `mixed` gives node i `SCENARIOS[i]` for the first
    `len(SCENARIOS)` nodes (so a fleet that large shows every scenario once); after that every
    tenth node cycles through the faulty scenarios again and the rest are healthy, which is
    what a big real fleet looks like. A sequence gives each node its own scenario (its length
    must equal `nodes`). `mixed` skips the `unsupported` scenarios (those the GPU model
    cannot show, such as NVLink errors on an L4).
    """
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, got {nodes!r}")
    if isinstance(scenario, str):
        validate_scenario(scenario)
        if scenario != MIXED:
            return [scenario] * nodes
        playable = [s for s in SCENARIOS if s not in unsupported]
        faulty = [s for s in playable if s != "healthy"]
        out: list[str] = []
        for i in range(nodes):
            if i < len(playable):
                out.append(playable[i])
            elif i % _MIXED_TAIL_FAULT_EVERY == 0:
                out.append(faulty[(i // _MIXED_TAIL_FAULT_EVERY) % len(faulty)])
            else:
                out.append("healthy")
        return out
    names = list(scenario)
    if len(names) != nodes:
        raise ValueError(f"got {len(names)} scenarios for {nodes} nodes")
    for name in names:
        if name == MIXED:
            raise ValueError("'mixed' is a fleet-wide choice, not a per-node scenario")
        validate_scenario(name)
    return names
