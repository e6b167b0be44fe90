"""Building fleets and nodes: scenario spreading, ports, models, validation, determinism."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from flow.health.sim import GPU_MODELS, SCENARIOS, SimFleet, SimNode, assign_scenarios, resolve_model
from flow.health.sim.gofmt import go_duration_s, humanize_bytes_si, pct
from flow.health.sim.physics import make_profile, sample


def test_mixed_covers_every_scenario_then_is_mostly_healthy() -> None:
    names = assign_scenarios(200, "mixed")
    assert names[: len(SCENARIOS)] == list(SCENARIOS)
    tail = names[len(SCENARIOS):]
    assert tail.count("healthy") / len(tail) >= 0.85
    assert assign_scenarios(200, "mixed") == names  # deterministic
    assert assign_scenarios(3, "mixed") == ["healthy", "hot", "warm"]


def test_mixed_skips_what_the_model_cannot_show() -> None:
    names = assign_scenarios(40, "mixed", unsupported={"nvlink-errors"})
    assert "nvlink-errors" not in names and "row-remap-failed" in names


@pytest.mark.parametrize(("args", "message"), [
    ((2, "sideways"), "unknown scenario 'sideways'"),
    ((2, ["healthy"]), "got 1 scenarios for 2 nodes"),
    ((1, ["mixed"]), "fleet-wide"),
    ((0, "healthy"), "at least 1"),
])
def test_assign_scenarios_rejects_bad_input(args: tuple[int, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assign_scenarios(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"gpu_count": 9}, "between 1 and 8"),
    ({"gpu_model": "V100"}, "unknown GPU model"),
    ({"gpud_version": "latest"}, "v0.5.1"),
    ({"scenario": "nvlink-errors", "gpu_model": "L4"}, "NVLink"),
    ({"scenario": "row-remap-pending", "gpu_model": "L4"}, "row remapping"),
    ({"scenario": "mixed"}, "fleet"),
])
def test_sim_node_validates(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimNode(**kwargs)  # type: ignore[arg-type]


def test_gpu_models_have_real_sizes_and_thresholds() -> None:
    assert set(GPU_MODELS) >= {"H100-80GB", "A100-80GB", "H200-141GB", "L4-24GB"}
    assert GPU_MODELS["H100-80GB"].memory_total_bytes == 81559 * 2**20
    assert GPU_MODELS["H200-141GB"].memory_total_bytes > 140 * 10**9
    assert GPU_MODELS["L4-24GB"].memory_total_bytes < 25 * 10**9
    for m in GPU_MODELS.values():
        assert m.threshold_slowdown_c < m.threshold_shutdown_c
    assert resolve_model("h100").key == "H100-80GB"
    assert resolve_model("NVIDIA L4").key == "L4-24GB"


def test_same_seed_same_readings_different_seed_different() -> None:
    model = GPU_MODELS["A100-80GB"]
    a = make_profile(index=0, seed=5, scenario="healthy", model=model, gpu_count=4, started_ts=1_800_000_000)
    b = make_profile(index=0, seed=5, scenario="healthy", model=model, gpu_count=4, started_ts=1_800_000_000)
    c = make_profile(index=0, seed=6, scenario="healthy", model=model, gpu_count=4, started_ts=1_800_000_000)
    assert a == b and sample(a, a.started_ts) == sample(b, b.started_ts)
    assert a.gpus[0].uuid != c.gpus[0].uuid
    assert len({g.uuid for g in a.gpus}) == 4


def test_go_formatting_matches_gpud() -> None:
    assert humanize_bytes_si(85520809984) == "86 GB"
    assert humanize_bytes_si(1048576) == "1.0 MB"
    assert pct(61, 92) == "66.30" and pct(1, 0) == "0.0"
    assert go_duration_s("1h30m") == 5400 and go_duration_s("90s") == 90
    with pytest.raises(ValueError, match="missing unit"):
        go_duration_s("30")


def _free_base_port(count: int) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65000:
            continue
        ok = True
        for p in range(base, base + count):
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    pytest.skip("no run of free consecutive ports")


def test_fleet_on_consecutive_ports_with_async_api() -> None:
    base = _free_base_port(3)

    async def main() -> list[int]:
        async with SimFleet(3, base_port=base, scenario=["healthy", "gpud-down", "idle"], gpu_count=1,
                            gpu_model="L4") as fleet:
            assert [n.port for n in fleet.nodes] == [base, base + 1, base + 2]
            assert [n.gpu_model for n in fleet.nodes] == ["L4-24GB"] * 3
            async with httpx.AsyncClient(verify=False, timeout=5) as c:
                codes = []
                for n in fleet.nodes:
                    try:
                        codes.append((await c.get(n.url + "/healthz")).status_code)
                    except httpx.ConnectError:
                        codes.append(-1)
                return codes

    assert asyncio.run(main()) == [200, -1, 200]


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]

        async def main() -> None:
            async with SimNode(port=port):
                pass

        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            asyncio.run(main())


def test_l4_node_has_no_nvlink_or_row_remapping() -> None:
    async def main() -> list[dict[str, object]]:
        async with SimNode(gpu_model="L4", gpu_count=1) as node, httpx.AsyncClient(verify=False) as c:
            r = await c.get(node.url + "/v1/states", params={
                "components": "accelerator-nvidia-remapped-rows,accelerator-nvidia-fabric-manager"})
            return [e["states"][0] for e in r.json()]

    fabric, remap = asyncio.run(main())
    assert remap["reason"] == '"NVIDIA L4" does not support row remapping' and "extra_info" not in remap
    assert fabric["reason"] == "NVIDIA L4 does not support fabric manager"


def test_a_node_can_report_a_given_boot_id_and_counts_what_it_served() -> None:
    async def main() -> tuple[str, str, dict[str, int]]:
        async with SimFleet(1, boot_id="6a3f0c1e-0000-4000-8000-000000000001") as fleet, \
                SimFleet(1, seed=1) as seeded:
            async with httpx.AsyncClient(verify=False, timeout=5) as c:
                given = (await c.get(fleet.nodes[0].url + "/machine-info")).json()["bootID"]
                await c.get(fleet.nodes[0].url + "/machine-info")
                await c.get(fleet.nodes[0].url + "/v1/states")
                own = (await c.get(seeded.nodes[0].url + "/machine-info")).json()["bootID"]
            return given, own, dict(fleet.nodes[0].requests)

    given, own, served = asyncio.run(main())
    assert given == "6a3f0c1e-0000-4000-8000-000000000001"
    assert own != given and len(own) == 36  # a seeded UUID of its own otherwise
    assert served == {"/machine-info": 2, "/v1/states": 1}


def test_boot_id_names_one_machine_so_only_a_one_node_fleet_takes_it() -> None:
    with pytest.raises(ValueError, match="one-node fleet"):
        SimFleet(2, boot_id="b")
