"""docs/troubleshooting.md cannot rot: every command in its code blocks runs, as a user types it.

Each `flow ...` line of the page's code blocks runs in bash (pipes included, `pipefail` on) with
the installed `flow` command, against the simulated GPUd (scenario xid-fatal: an XID 79 state and
a Fatal event) behind a real OpenSSH sshd. `TASK` becomes the task's name and `15132` the
simulator's port, which the tests set as the user would: `FLOW_GPUD_PORT`.

This machine has no systemd and no GPUd binary, so the node's PATH has stand-ins for
`systemctl`, `journalctl` and `gpud` that print what the real ones would; what is tested there
is that the command reaches the node as written (quoting, `--`, exit status).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flow.health.sim import FleetThread, start_fleet_in_thread
from sshd_support import SshdFactory

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
TASK = "train-a"
DOC_PORT = "15132"

FAKE_TOOLS = {
    "systemctl": 'echo "* gpud.service - GPUd"; echo "     Active: active (running) since $*"',
    "journalctl": 'echo "journal $*"; echo "gpud[1]: started"',
    "gpud": 'echo "gpud version v0.5.1"',
}

#: What some commands must print (a part of stdout), beyond exiting 0.
EXPECTED = {
    "flow health gpud TASK /healthz": '"status": "ok"',
    "flow health gpud TASK": '"accelerator-nvidia-error-xid"',
    "flow health gpud TASK /v1/events": '"Fatal"',
    "flow health gpud TASK /v1/events --since 2h --query components=accelerator-nvidia-error-xid": "XID 79",
    "flow health gpud TASK /v1/metrics --query components=accelerator-nvidia-temperature":
        "accelerator_nvidia_temperature_current_celsius",
    "flow health gpud TASK /machine-info": '"gpuInfo"',
    "flow health gpud TASK /v1/components": '"accelerator-nvidia-ecc"',
    "flow health gpud TASK /metrics": "gpud_component=",
    "flow health gpud TASK /v1/events --json": '"kind": "gpud"',
    "flow ssh TASK -- curl -sk https://127.0.0.1:15132/healthz": '{"status":"ok"',
    "flow ssh TASK -- curl -sk https://127.0.0.1:15132/v1/states": '"component": "accelerator-nvidia',
    "/v1/states?components=accelerator-nvidia-error-xid": '"health":"Unhealthy"',
    "/v1/events?startTime=": '"type":"Fatal"',
    "/v1/metrics?since=1h&components=accelerator-nvidia-temperature": "accelerator_nvidia_temperature",
    "flow ssh TASK -- curl -sk https://127.0.0.1:15132/machine-info": '"gpuDriverVersion"',
    "flow ssh TASK -- curl -sk https://127.0.0.1:15132/metrics": "gpud_component=",
    "flow ssh TASK -- systemctl status gpud --no-pager": "Active: active (running)",
    "flow ssh TASK -- journalctl -u gpud -n 100 --no-pager": "journal -u gpud -n 100",
    "flow logs TASK": "==> gpud <==",
    "flow logs TASK --source startup": "startup: done",
    "flow ssh TASK -- gpud --version": "v0.5.1",
    "flow health --task TASK": "critical",
}


def doc_commands() -> list[str]:
    """Every `flow ...` line inside the page's fenced code blocks, in order."""
    commands, fenced = [], False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced and line.startswith("flow "):
            commands.append(line.strip())
    return commands


def _applies(key: str, command: str) -> bool:
    """An EXPECTED key is a whole command (before any pipe), or a URL path found in one."""
    return key == command.split(" | ")[0] or (key.startswith("/") and key in command)


def expected_for(command: str) -> str | None:
    return next((want for key, want in EXPECTED.items() if _applies(key, command)), None)


def test_the_page_covers_the_classic_commands() -> None:
    text = "\n".join(doc_commands())
    for path in ("/healthz", "/v1/events", "/v1/metrics", "/machine-info", "/v1/components"):
        assert f"flow health gpud TASK {path}" in text, path
        assert f"https://127.0.0.1:15132{path}" in text, path
    assert "flow health gpud TASK\n" in text and "https://127.0.0.1:15132/v1/states" in text
    for command in ("flow ssh TASK -- systemctl status gpud", "flow ssh TASK -- journalctl -u gpud",
                    "flow logs TASK", "flow ssh TASK --", "flow health --task TASK"):
        assert command in text, command
    assert "http://" not in text  # GPUd has no plain-HTTP listener
    # Every expectation above still names a command of the page.
    assert [key for key in EXPECTED if not any(_applies(key, c) for c in doc_commands())] == []


@pytest.fixture(scope="module")
def sim() -> Iterator[FleetThread]:
    fleet = start_fleet_in_thread(1, scenario="xid-fatal")
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def user_env(sim: FleetThread, sshd_factory: SshdFactory, flow_home: Path, tmp_path: Path) -> dict[str, str]:
    fake_bin = tmp_path / "node-bin"
    fake_bin.mkdir()
    for name, body in FAKE_TOOLS.items():
        (fake_bin / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake_bin / name).chmod(0o755)
    startup = tmp_path / "startup.log"
    startup.write_text("startup: installing gpud\nstartup: done\n")
    server = sshd_factory.start(env={"PATH": f"{fake_bin}:/usr/bin:/bin", "FLOW_STARTUP_LOG": str(startup)})
    home = tmp_path / "user-home"
    home.mkdir()
    env = {
        **os.environ, "HOME": str(home), "SSH_AUTH_SOCK": "", "COLUMNS": "160",
        "FLOW_GPUD_PORT": str(sim.nodes[0].port),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    added = subprocess.run(
        ["flow", "tasks", "add", TASK, "--host", f"{server.user}@{server.host}:{server.port}",
         "--key", str(server.client_key.path), "--instance-type", "h100.8xlarge"],
        env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert added.returncode == 0, added.stderr
    return env


@pytest.mark.parametrize("command", doc_commands())
def test_every_command_of_the_page_works(command: str, user_env: dict[str, str]) -> None:
    line = re.sub(r"\bTASK\b", TASK, command).replace(DOC_PORT, user_env["FLOW_GPUD_PORT"])
    result = subprocess.run(["bash", "-o", "pipefail", "-c", line], env=user_env, capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (line, result.stdout[-2000:], result.stderr[-2000:])
    assert result.stdout.strip() or command.strip() == "flow ssh TASK", line
    want = expected_for(command)
    if want is not None:
        assert want in result.stdout, (line, want, result.stdout[-2000:])
