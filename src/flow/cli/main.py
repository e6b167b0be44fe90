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
from flow.cli.config_cmd import config_group
from flow.cli.health_cmd import health

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="flow")
def cli() -> None:
    """flow: GPU fleet health monitoring over GPUd and SSH.

    \b
    Exit codes: 0 ok, 1 problems found (with --fail-on) or an operation failed,
    2 usage or configuration error.
    """


cli.add_command(config_group)
cli.add_command(health)
# Each part's commands live in their own module under flow/cli/ and are added here.
from flow.cli import integrations_cmd as _integrations  # noqa: E402

for _command in (_integrations.serve, _integrations.export, _integrations.grafana_dashboard,
                 _integrations.sinks_cmd):
    health.add_command(_command)
from flow.cli.sim_cmd import sim as _sim  # noqa: E402

health.add_command(_sim)
from flow.cli.storage_cmd import cleanup_cmd, store_stats_cmd  # noqa: E402

health.add_command(cleanup_cmd)
health.add_command(store_stats_cmd)
from flow.cli.ssh_cmd import logs as _logs  # noqa: E402
from flow.cli.ssh_cmd import ssh as _ssh  # noqa: E402
from flow.cli.tasks_cmd import tasks_group as _tasks_group  # noqa: E402

cli.add_command(_tasks_group)
cli.add_command(_ssh)
cli.add_command(_logs)
from flow.cli.collect_cmd import collect as _collect  # noqa: E402

health.add_command(_collect)

from flow.cli import install_cmd as _install  # noqa: E402

for _command in (_install.startup_script_cmd, _install.install_cmd, _install.uninstall_cmd,
                 _install.status_cmd):
    health.add_command(_command)

from flow.cli.demo_cmd import demo as _demo  # noqa: E402

health.add_command(_demo)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call it with argv)."""
    return run_cli(cli, argv)


if __name__ == "__main__":
    sys.exit(main())
