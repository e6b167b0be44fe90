"""The `flow` command: parses options, loads the config, calls the library, renders.

Exit codes: 0 ok; 1 the checked fleet has problems (only with --fail-on) or an operation
failed; 2 usage or configuration error. Errors print `ERROR: ...` (and `HINT: ...`) on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from flow import __version__
from flow.cli.common import run_cli
from flow.cli.lazy import LazyGroup

__all__ = ["COMMANDS", "cli", "main"]


# Each part's commands live in their own module under flow/cli/, imported on first use.
COMMANDS = {
    "config": "flow.cli.config_cmd:config_group",
    "health": "flow.cli.health_cmd:health",
    "tasks": "flow.cli.tasks_cmd:tasks_group",
    "ssh": "flow.cli.ssh_cmd:ssh",
    "logs": "flow.cli.ssh_cmd:logs",
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="flow")
def cli() -> None:
    """flow: GPU fleet health monitoring over GPUd and SSH.

    \b
    Exit codes: 0 ok, 1 problems found (with --fail-on) or an operation failed,
    2 usage or configuration error.
    """



def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call it with argv)."""
    return run_cli(cli, argv)


if __name__ == "__main__":
    sys.exit(main())
