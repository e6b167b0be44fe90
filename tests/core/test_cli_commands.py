"""The command tree: every lazily imported command exists and has help; defaults agree."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from flow.cli import health_cmd
from flow.cli.main import COMMANDS, cli, main
from flow.health.sweep import checker


@pytest.mark.parametrize("group,name", [(cli, n) for n in COMMANDS]
                         + [(health_cmd.health, n) for n in health_cmd.SUBCOMMANDS])
def test_every_command_imports_and_has_help(group: click.Group, name: str) -> None:
    command = group.get_command(click.Context(group), name)
    assert command is not None and command.name == name
    assert (command.help or "").strip(), f"{name} has no --help text"


def test_every_command_answers_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name in COMMANDS:
        assert main([name, "--help"]) == 0, name
    for name in health_cmd.SUBCOMMANDS:
        assert main(["health", name, "--help"]) == 0, name
    assert "Usage:" in capsys.readouterr().out


def test_the_views_defaults_are_the_checkers() -> None:
    # health_cmd keeps copies so that `flow health --help` need not import the SSH stack.
    assert health_cmd.DEFAULT_CONCURRENCY == checker.DEFAULT_CONCURRENCY
    assert health_cmd.DEFAULT_NODE_TIMEOUT_S == checker.DEFAULT_NODE_TIMEOUT_S


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["helth"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_importing_the_ssh_layer_prints_no_warnings() -> None:
    # Every SSH command imports asyncssh; with recent cryptography that printed fifteen DSA
    # deprecation warnings on stderr before the output. `-W default` shows any that remain.
    code = "import flow.health.sim.demo, flow.ssh.connection, flow.health.sweep.checker"
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
