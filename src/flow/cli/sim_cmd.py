"""`flow health sim`: serve simulated GPUd nodes in the foreground until Ctrl-C / SIGTERM."""

from __future__ import annotations

import asyncio

import click

from flow.cli.common import raise_open_file_limit, stop_on_signals
from flow.cli.numbers import SIM_DELAY_RANGE, Bounded
from flow.health.sim import (
    DEFAULT_GPU_COUNT,
    DEFAULT_GPU_MODEL,
    DEFAULT_GPUD_VERSION,
    DEFAULT_SLOW_DELAY_S,
    GPU_MODELS,
    HOSTILE_SCENARIOS,
    MIXED,
    SCENARIOS,
    SimFleet,
    resolve_model,
)
from flow.health.sim import host_boot_id as read_host_boot_id
from flow.health.sim.api import parse_version

__all__ = ["sim"]


def _check_version(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_version(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a GPUd version; use the form v0.5.1 or v0.4.4") from None
    return value


def _check_model(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return resolve_model(value).key
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a known GPU model; choose one of: "
                                 f"{', '.join(GPU_MODELS)}") from None


@click.command("sim")
@click.option("--nodes", type=click.IntRange(1, 5000), default=1, show_default=True,
              help="How many simulated nodes to serve.")
@click.option("--base-port", type=click.IntRange(0, 65535), default=15132, show_default=True,
              help="Port of the first node; the others follow consecutively. 0: any free ports.")
@click.option("--scenario", type=click.Choice([*SCENARIOS, *HOSTILE_SCENARIOS, MIXED]), default="healthy",
              show_default=True,
              help="What every node plays; 'mixed' spreads the GPU and GPUd scenarios over the fleet. "
                   "huge-body, gzip-bomb, drip and control-chars are hostile nodes, never part of 'mixed'.")
@click.option("--gpud-version", default=DEFAULT_GPUD_VERSION, show_default=True, callback=_check_version,
              help="GPUd version to imitate; before v0.5.0 the v0.4 API shapes are served.")
@click.option("--gpus", type=click.IntRange(1, 8), default=DEFAULT_GPU_COUNT, show_default=True,
              help="GPUs per node (1-8).")
@click.option("--model", "gpu_model", default=DEFAULT_GPU_MODEL, show_default=True, callback=_check_model,
              help=f"GPU model: {', '.join(GPU_MODELS)}.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed for the simulated values, 0-4294967295 (same seed, same readings).")
@click.option("--slow-delay", "slow_delay_s", type=Bounded(SIM_DELAY_RANGE), default=DEFAULT_SLOW_DELAY_S,
              show_default=True, help="Seconds a gpud-slow node waits before answering.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--host-boot-id", is_flag=True,
              help="Report this machine's boot id, as a GPUd on this host would (one node only): "
                   "a collector here then keeps /machine-info for the boot, as on a real node.")
def sim(nodes: int, base_port: int, scenario: str, gpud_version: str, gpus: int, gpu_model: str,
        seed: int, slow_delay_s: float, host: str, host_boot_id: bool) -> None:
    """Serve simulated GPUd nodes (HTTPS, self-signed) until Ctrl-C or SIGTERM.

    Prints one line per node: its URL, scenario and GPU model. Point flow (or curl -k) at them.

    \b
    Examples:
      flow health sim --nodes 20 --scenario mixed
      flow health sim --scenario xid-fatal --base-port 15132
      curl -sk https://127.0.0.1:15132/v1/states | python -m json.tool
    """
    if base_port and base_port + nodes - 1 > 65535:
        raise click.BadParameter(
            f"{base_port} + {nodes} nodes runs past port 65535", param_hint="'--base-port'")
    if scenario == "nvlink-errors" and not GPU_MODELS[gpu_model].nvlink_links:
        raise click.BadParameter(f"scenario 'nvlink-errors' needs NVLink; {gpu_model} has none",
                                 param_hint="'--scenario'")
    if scenario.startswith("row-remap") and not GPU_MODELS[gpu_model].row_remapping:
        raise click.BadParameter(f"scenario {scenario!r} needs row remapping; {gpu_model} has none",
                                 param_hint="'--scenario'")
    boot_id = None
    if host_boot_id:
        if nodes != 1:
            raise click.BadParameter(f"names one machine; serve one node with it, not {nodes}",
                                     param_hint="'--host-boot-id'")
        boot_id = read_host_boot_id()
        if boot_id is None:
            raise click.BadParameter("this machine has no /proc/sys/kernel/random/boot_id to report",
                                     param_hint="'--host-boot-id'")
    fleet = SimFleet(nodes, base_port=base_port, scenario=scenario, gpud_version=gpud_version,
                     gpu_model=gpu_model, gpu_count=gpus, seed=seed, slow_delay_s=slow_delay_s, host=host,
                     boot_id=boot_id)
    try:
        raise_open_file_limit()
        asyncio.run(_serve(fleet))
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


async def _serve(fleet: SimFleet) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with fleet:
        for node in fleet.nodes:
            click.echo(f"{node.url}  {node.scenario:<17}  {node.gpu_model} x{node.gpu_count}  "
                       f"gpud {node.gpud_version}")
        click.echo(f"serving {len(fleet.nodes)} simulated GPUd node(s); Ctrl-C to stop", err=True)
        await stop.wait()
    click.echo("stopped", err=True)


if __name__ == "__main__":  # python -m flow.cli.sim_cmd: the same as `flow health sim`
    sim.main(prog_name="python -m flow.cli.sim_cmd")
