"""`flow ssh TASK [-- CMD...]` and `flow logs TASK`: a shell, a command or the logs of a task's node."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

import click

from flow.cli.common import EXIT_PROBLEMS, get_config
from flow.errors import FlowError
from flow.fleet import Inventory, node_params, pick_node
from flow.fleet.logs import LOG_SOURCES, log_command
from flow.fs import ensure_private_dir
from flow.ssh import SSHOptions, SSHParams, ssh_argv

__all__ = ["logs", "ssh"]


@click.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("task")
@click.option("--node", help="Which node of a multi-node task: 0-based index or host (default 0).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(task: str, node: str | None, command: tuple[str, ...]) -> None:
    """Open a shell on a task's node, or run CMD there (after `--`).

    \b
    flow ssh train-a
    flow ssh train-a --node 1 -- nvidia-smi -L

    Runs the system `ssh` with the task's host, port, user and key, the configured host-key
    policy, and flow's known_hosts ($FLOW_HOME/known_hosts) next to ~/.ssh/known_hosts. The exit
    status is the remote command's (255 if ssh itself failed).
    """
    config = get_config()
    found = Inventory.from_config(config).resolve(task)
    params = node_params(pick_node(found, node))
    binary = shutil.which("ssh")
    if binary is None:
        raise FlowError("the ssh client is not installed", hint="install OpenSSH's client (openssh-client)")
    # ssh records new host keys in flow's known_hosts but does not create its directory.
    ensure_private_dir(config.home)
    argv = ssh_argv(params, SSHOptions.from_config(config), command, ssh_binary=binary)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(binary, argv)


def _echo_out(line: str) -> None:
    click.echo(line, nl=False)


def _echo_err(line: str) -> None:
    click.echo(line, nl=False, err=True)


async def _show_logs(
    params: SSHParams, options: SSHOptions, plan: list[tuple[str, str]], *, headers: bool
) -> list[tuple[str, int]]:
    from flow.ssh import connect  # asyncssh: imported only by the commands that use it

    failures: list[tuple[str, int]] = []
    async with await connect(params, options) as conn:
        for title, command in plan:
            if headers:
                click.echo(f"==> {title} <==")
            status = await conn.stream(command, on_stdout=_echo_out, on_stderr=_echo_err)
            if status != 0:
                failures.append((title, status))
    return failures


@click.command("logs")
@click.argument("task")
@click.option("--node", help="Which node of a multi-node task: 0-based index or host (default 0).")
@click.option("--source", type=click.Choice(LOG_SOURCES),
              help="One log: gpud (journal of gpud), collector (flow-metrics-streamer) or startup "
                   "(/var/log/flow/startup.log). Default: all three.")
@click.option("--lines", "-n", type=click.IntRange(1, 1_000_000), default=100, show_default=True,
              help="How many of the last lines to show.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new lines (Ctrl-C stops). Without --source: gpud and collector, merged.")
def logs(task: str, node: str | None, source: str | None, lines: int, follow: bool) -> None:
    """Print the logs of a task's node over SSH: startup, GPUd and the metrics collector.

    Exit status 1 when a log could not be read (missing file, no journal, permission).
    """
    config = get_config()
    found = Inventory.from_config(config).resolve(task)
    params = node_params(pick_node(found, node))
    if source is not None:
        plan = [(source, log_command([source], lines=lines, follow=follow))]
    elif follow:
        plan = [("gpud + collector", log_command(["gpud", "collector"], lines=lines, follow=True))]
    else:
        plan = [(s, log_command([s], lines=lines, follow=False)) for s in LOG_SOURCES]
    failures = asyncio.run(
        _show_logs(params, SSHOptions.from_config(config), plan, headers=len(plan) > 1)
    )
    for title, status in failures:
        hint = " (command not found on the node)" if status == 127 else ""
        click.echo(f"WARNING: the {title} log could not be read: exit status {status}{hint}", err=True)
    if failures:
        sys.exit(EXIT_PROBLEMS)
