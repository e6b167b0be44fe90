"""`flow health demo`: the product on a laptop with nothing installed."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.rule import Rule

from flow.cli.common import EXIT_OK, print_json
from flow.cli.numbers import DEMO_TIMEOUT_RANGE, Bounded
from flow.config import load_config
from flow.health.sim.demo import DEMO_EXTRA_SCENARIOS, DemoFleet
from flow.health.snapshot import HealthStatus
from flow.health.storage import MetricsStore
from flow.health.sweep.checker import Checker, SweepOptions, SweepResult, targets_for
from flow.views.documents import fleet_document
from flow.views.render import TaskDetail, fleet_view

__all__ = ["demo"]


@click.command("demo")
@click.option("--nodes", type=click.IntRange(1, 2000), default=None,
              help="Simulated nodes (default: one per scenario, 19). Past 19 the rest are healthy.")
@click.option("--timeout", "timeout_s", type=Bounded(DEMO_TIMEOUT_RANGE), default=5.0, show_default=True,
              help="Deadline per node, 0.5-3600 s (the gpud-slow node answers after 30 s, so it hits this).")
@click.option("--json", "as_json", is_flag=True, help="Print the sweep as JSON instead of tables.")
@click.option("--keep", is_flag=True,
              help="Keep the fleet running after the sweep (until Ctrl-C or SIGTERM) to try other "
                   "commands on it: flow health, flow ssh, flow logs.")
def demo(nodes: int | None, timeout_s: float, as_json: bool, keep: bool) -> None:
    """Sweep a simulated fleet that covers every scenario, through real SSH tunnels.

    Starts simulated GPUd nodes (healthy, hot, warm, throttled, ECC, fatal and application
    XIDs, row remapping pending/failed, NVLink errors, memory pressure, idle, GPUd down/slow/
    garbage, SSH refused, GPUd not installed), each behind its own SSH server on 127.0.0.1,
    writes a throw-away inventory under a temporary FLOW_HOME and runs the real `flow health
    --gpu` sweep. Nothing outside the temporary directory is touched, and the directory (its
    private key included) is deleted when the demo ends: normally, on Ctrl-C, SIGTERM or SIGHUP.

    The nodes take `flow ssh` and `flow logs`: a command sent to a demo node runs on this
    machine, as you, in the node's directory under the temporary FLOW_HOME.
    """
    home = Path(tempfile.mkdtemp(prefix="flow-demo-"))
    try:
        asyncio.run(_run(home, nodes=nodes, timeout_s=timeout_s, as_json=as_json, keep=keep))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass  # Ctrl-C, or SIGTERM/SIGHUP (below): the fleet has stopped; now its directory goes
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _cancel_on_signals(task: asyncio.Task[int]) -> None:
    """SIGTERM (kill, systemd, a CI runner) and SIGHUP (the terminal closed) end the demo as
    Ctrl-C does: the fleet stops and the temporary directory with its private key is deleted.
    Their default action would end the process on the spot and leave both behind."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # Where the loop cannot take signal handlers (not the main thread: RuntimeError; a
        # platform without them: NotImplementedError), the signal keeps its default action.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)


async def _run(home: Path, *, nodes: int | None, timeout_s: float, as_json: bool, keep: bool) -> int:
    current = asyncio.current_task()
    if current is not None:
        _cancel_on_signals(current)
    config = load_config({"FLOW_HOME": str(home)})
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    async with DemoFleet(home, nodes=nodes) as fleet:
        if not as_json:
            err.print(f"[dim]Started {len(fleet.nodes)} simulated GPU nodes behind SSH on 127.0.0.1; "
                      f"FLOW_HOME={home}[/dim]")
        checker = Checker(fleet.ssh_options, SweepOptions(timeout_s=timeout_s, thresholds=config.thresholds))
        targets = targets_for(fleet.tasks, config)
        if as_json:
            result: SweepResult = await checker.sweep(targets)
        else:
            with Progress(TextColumn("sweeping"), BarColumn(), MofNCompleteColumn(), TextColumn("nodes"),
                          TimeElapsedColumn(), console=err, transient=True) as bar:
                job = bar.add_task("sweep", total=len(targets))
                result = await checker.sweep(
                    targets, progress=lambda done, total: bar.update(job, completed=done, total=total))
        MetricsStore(config.metrics_dir).write_snapshots(result.snapshots)
        if as_json:
            print_json(fleet_document(result.snapshots, elapsed_s=result.elapsed_s))
        else:
            out.print(fleet_view(result.snapshots, elapsed_s=result.elapsed_s))
            worst = next((s for s in result.snapshots if s.status is HealthStatus.CRITICAL), None)
            if worst is not None:
                out.print(Rule(f"flow health --task {worst.task_name}"))
                out.print(TaskDetail(worst))
        if keep:
            example = next((n.task.name for n in fleet.nodes if n.scenario not in DEMO_EXTRA_SCENARIOS),
                           fleet.nodes[0].task.name)
            err.print(f"\nThe demo fleet keeps running. In another shell:\n"
                      f"  export FLOW_HOME={home} FLOW_SSH_HOST_KEY_POLICY=accept-new\n"
                      f"  flow health --gpu\n"
                      f"  flow logs {example}\n"
                      f"  flow ssh {example} -- 'ls log; echo $FLOW_GPUD_PORT'\n"
                      f"Demo nodes run commands on this machine, as you, in $FLOW_HOME/nodes/TASK-ID.\n"
                      f"Ctrl-C (or SIGTERM) stops it and deletes {home}.", markup=False)
            await asyncio.Event().wait()
    return EXIT_OK
