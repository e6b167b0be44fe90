"""`flow ssh` and `flow logs` end to end: a task in the inventory, a real sshd, the real ssh client."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flow.cli.main import main
from flow.fleet import Inventory
from flow.ssh.known_hosts import KnownHostsStore
from sshd_support import SshdFactory, SshdServer

pytestmark = pytest.mark.skipif(
    shutil.which("ssh") is None, reason="the OpenSSH client (ssh) is not installed"
)


def _add_task(server: SshdServer, name: str = "train-a") -> None:
    code = main(
        ["tasks", "add", name, "--host", f"{server.user}@{server.host}:{server.port}",
         "--key", str(server.client_key.path), "--instance-type", "h100.8xlarge"]
    )  # fmt: skip
    assert code == 0


def _flow(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flow.cli.main", *argv],
        env={**os.environ, "SSH_AUTH_SOCK": ""}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_flow_ssh_runs_a_command_and_passes_the_exit_code_through(sshd: SshdServer, flow_home: Path) -> None:
    _add_task(sshd)
    result = _flow("ssh", "train-a", "--", "echo", "hi", ";", "exit", "7")
    assert result.returncode == 7, result.stderr
    assert result.stdout == "hi\n"
    # accept-new: ssh recorded the key in flow's known_hosts, where flow's own SSH layer finds it.
    store = KnownHostsStore([], flow_home / "known_hosts")
    entries = store.lookup(sshd.host, sshd.port)
    recorded = [e.key.export_public_key("openssh").decode().split()[:2] for e in entries]
    assert recorded == [sshd.host_key.public.split()]
    assert _flow("ssh", "train-a", "--", "true").returncode == 0


def test_flow_ssh_refuses_a_changed_host_key(
    sshd: SshdServer, sshd_factory: SshdFactory, flow_home: Path
) -> None:
    _add_task(sshd)
    assert _flow("ssh", "train-a", "--", "true").returncode == 0
    sshd.stop()
    sshd_factory.start(port=sshd.port)  # same address, new host key
    result = _flow("ssh", "train-a", "--", "echo", "should-not-run")
    assert result.returncode == 255
    assert "should-not-run" not in result.stdout
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_flow_ssh_unknown_task_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ssh", "nope", "--", "true"]) == 2
    assert "ERROR: no task 'nope'" in capsys.readouterr().err


def test_flow_ssh_node_selection(sshd_factory: SshdFactory, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = sshd_factory.start_many(2)
    code = main(
        ["tasks", "add", "pair", "--host", f"{first.host}:{first.port}",
         "--node", f"{second.host}:{second.port}", "--user", first.user, "--key", str(first.client_key.path)]
    )  # fmt: skip
    assert code == 0
    result = _flow("ssh", "pair", "--node", "1", "--", "echo", "$SSH_CONNECTION")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == str(second.port)
    assert main(["ssh", "pair", "--node", "5", "--", "true"]) == 2
    assert "has no node '5'; its nodes: 0: " in capsys.readouterr().err


@pytest.fixture
def node_with_logs(sshd_factory: SshdFactory, tmp_path: Path) -> SshdServer:
    """A real sshd whose sessions see a fake `journalctl` (this container has no systemd) and a
    startup log at $FLOW_STARTUP_LOG: what flow logs reads on a real node."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    journalctl = fake_bin / "journalctl"
    journalctl.write_text('#!/bin/sh\necho "journal $*"\necho "gpud: healthy"\n')
    journalctl.chmod(0o755)
    startup = tmp_path / "startup.log"
    startup.write_text("".join(f"startup line {i}\n" for i in range(1, 11)))
    server = sshd_factory.start(
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", "FLOW_STARTUP_LOG": str(startup)}
    )
    _add_task(server)
    return server


def test_flow_logs_shows_startup_gpud_and_collector(
    node_with_logs: SshdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", "train-a", "--lines", "3"]) == 0
    out = capsys.readouterr().out
    assert out == (
        "==> startup <==\n"
        "startup line 8\nstartup line 9\nstartup line 10\n"
        "==> gpud <==\n"
        "journal -u gpud --no-pager -o short-iso -n 3\ngpud: healthy\n"
        "==> collector <==\n"
        "journal -u flow-metrics-streamer --no-pager -o short-iso -n 3\ngpud: healthy\n"
    )


def test_flow_logs_follow_streams_one_source(
    node_with_logs: SshdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", "train-a", "--source", "gpud", "--follow", "-n", "5"]) == 0
    assert capsys.readouterr().out == "journal -u gpud --no-pager -o short-iso -n 5 -f\ngpud: healthy\n"


def test_flow_logs_reads_the_fallback_files_on_a_node_without_systemd(
    sshd_factory: SshdFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The installer's no-systemd fallback logs to $FLOW_LOG_DIR/{gpud,collector}.log.
    log_dir = tmp_path / "var-log-flow"
    log_dir.mkdir()
    (log_dir / "gpud.log").write_text("".join(f"gpud line {i}\n" for i in range(1, 6)))
    server = sshd_factory.start(env={"FLOW_LOG_DIR": str(log_dir)})
    _add_task(server)
    capsys.readouterr()
    assert main(["logs", "train-a", "--source", "gpud", "--lines", "2"]) == 0
    assert capsys.readouterr().out == "gpud line 4\ngpud line 5\n"


def test_flow_logs_missing_log_exits_1_with_a_warning(
    sshd: SshdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_task(sshd)  # this node has no journalctl and no startup log
    assert main(["logs", "train-a", "--source", "startup"]) == 1
    err = capsys.readouterr().err
    assert "No such file or directory" in err
    assert "WARNING: the startup log could not be read: exit status 1" in err


def test_flow_logs_unreachable_node_is_an_ssh_error(
    sshd: SshdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_task(sshd)
    sshd.stop()
    assert main(["logs", "train-a"]) == 1
    assert "connection refused" in capsys.readouterr().err


def test_logs_of_an_inventory_task_by_id_prefix(node_with_logs: SshdServer, flow_home: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    task_id = Inventory.load(flow_home / "tasks.yaml").resolve("train-a").id
    assert main(["logs", task_id[:8], "--source", "collector", "-n", "1"]) == 0
    assert "flow-metrics-streamer" in capsys.readouterr().out
