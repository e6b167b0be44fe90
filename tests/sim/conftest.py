"""One simulated fleet per test module: a node for every scenario, served over real HTTPS."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from flow.health.sim import SCENARIOS, FleetThread, SimNode, start_fleet_in_thread


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetThread]:
    """Node i plays SCENARIOS[i] (a `mixed` fleet exactly len(SCENARIOS) large), 2 GPUs each."""
    handle = start_fleet_in_thread(len(SCENARIOS), scenario="mixed", gpu_count=2, seed=7)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def by_scenario(fleet: FleetThread) -> dict[str, SimNode]:
    return {n.scenario: n for n in fleet.nodes}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(verify=False, timeout=10.0) as c:
        yield c
