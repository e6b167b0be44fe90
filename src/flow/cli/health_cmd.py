"""`flow health`: the fleet views, and the subcommands of the health system."""

from __future__ import annotations

import click

from flow.cli.common import get_config

__all__ = ["health"]


@click.group("health", invoke_without_command=True)
@click.pass_context
def health(ctx: click.Context) -> None:
    """Health of the GPU fleet.

    \b
    flow health --gpu                 every GPU task in the fleet
    flow health --gpu --all           include non-GPU tasks
    flow health --task ID             one task, in depth
    flow health --task ID --history H the last H hours of its history
    flow health --gpu --json          machine-readable
    flow health                       self-check of the local setup
    """
    if ctx.invoked_subcommand is None:
        get_config()
        click.echo("ok: configuration is valid")
