"""`flow health demo --keep` as a newcomer uses it: `flow ssh` and `flow logs` on its nodes through
the real CLI and the system's OpenSSH client, then SIGTERM, which must leave nothing behind."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flow.fleet.inventory import Inventory

FLOW = [sys.executable, "-m", "flow.cli.main"]
HANG_BOUND_S = 120.0  # generous: only there so that a hang fails instead of blocking the run

pytestmark = pytest.mark.slow


class Demo:
    def __init__(self, proc: subprocess.Popen[bytes], err: Path, home: Path, env: dict[str, str]) -> None:
        self.proc, self.err, self.home = proc, err, home
        self.env = {**env, "FLOW_HOME": str(home)}

    def flow(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FLOW, *args], env=self.env, input=stdin, capture_output=True, text=True,
                              timeout=HANG_BOUND_S, stdin=None if stdin is not None else subprocess.DEVNULL)

    def task_id(self, name: str) -> str:
        inventory = Inventory.load(self.home / "tasks.yaml")
        return next(t.id for t in inventory.tasks if t.name == name)


def _wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + HANG_BOUND_S
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {HANG_BOUND_S} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env.update(HOME=str(tmp), COLUMNS="120", NO_COLOR="1", TMPDIR=str(tmp))
    env.pop("SSH_AUTH_SOCK", None)
    out, err = tmp / "demo.out", tmp / "demo.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([*FLOW, "health", "demo", "--keep", "--timeout", "3"], env=env,
                                stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    try:
        _wait_for(lambda: "keeps running" in err.read_text() or proc.poll() is not None, "kept fleet")
        assert proc.poll() is None, err.read_text()
        match = re.search(r"export FLOW_HOME=(\S+)", err.read_text())
        assert match, err.read_text()
        yield Demo(proc, err, Path(match.group(1)), env)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_flow_ssh_runs_the_command_on_the_demo_node(demo: Demo) -> None:
    done = demo.flow("ssh", "demo-hot", "--", 'echo "node=$FLOW_DEMO_NODE" $((6*7)); pwd; exit 3')
    task_id = demo.task_id("demo-hot")
    assert done.returncode == 3, done.stderr  # the command's own exit status comes back
    assert f"node={task_id} 42" in done.stdout
    assert str(demo.home / "nodes" / task_id) in done.stdout
    assert "runs no shell" not in done.stderr


def test_flow_ssh_without_a_command_opens_a_shell(demo: Demo) -> None:
    done = demo.flow("ssh", "demo-hot", stdin="echo shell-$((2+3))\nexit 4\n")
    assert done.returncode == 4 and "shell-5" in done.stdout, done.stderr


def test_flow_ssh_from_a_terminal_gets_a_terminal(demo: Demo) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen([*FLOW, "ssh", "demo-hot"], env=demo.env, stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    os.write(master, b"tty -s && echo on-a-tty-$((3+4)); exit 5\n")
    seen = b""
    deadline = time.monotonic() + HANG_BOUND_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: ssh has closed the terminal
                break
            if not data:
                break
            seen += data
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=HANG_BOUND_S) == 5, seen
    assert b"on-a-tty-7" in seen


def test_flow_logs_reads_the_demo_nodes_logs(demo: Demo) -> None:
    done = demo.flow("logs", "demo-hot")
    assert done.returncode == 0, done.stderr
    for header in ("==> startup <==", "==> gpud <==", "==> collector <=="):
        assert header in done.stdout
    assert "scenario hot" in done.stdout and "collector started" in done.stdout
    assert "gpud v0.5.1 installed" in done.stdout


def test_a_node_without_gpud_has_no_gpud_log_and_says_why(demo: Demo) -> None:
    done = demo.flow("logs", "demo-gpud-not-installed", "--source", "gpud")
    assert done.returncode == 0 and "-- No entries --" in done.stdout, done
    done = demo.flow("logs", "demo-gpud-not-installed", "--source", "startup")
    assert "gpud not installed" in done.stdout
    # What the checker's probe finds on it, and on a node that has GPUd.
    assert demo.flow("ssh", "demo-gpud-not-installed", "--", "command -v gpud").returncode != 0
    assert demo.flow("ssh", "demo-hot", "--", "command -v gpud").returncode == 0


def test_journal_and_sudo_stand_ins(demo: Demo) -> None:
    done = demo.flow("ssh", "demo-hot", "--", "journalctl -u gpud -u flow-metrics-streamer -n 4")
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and lines == sorted(lines), done
    # Both units, merged in time order as journalctl merges them.
    assert any("collector" in line for line in lines) and any("serving https" in line for line in lines)
    done = demo.flow("ssh", "demo-hot", "--", "sudo -n true")
    assert done.returncode == 1 and "never as root" in done.stderr


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def test_sigterm_stops_the_fleet_and_deletes_its_directory(demo: Demo, tmp_path: Path) -> None:
    # Last in this module: it ends the demo. A `flow logs --follow` is still reading a node.
    follow_out = tmp_path / "follow.out"
    with follow_out.open("wb") as out:
        follow = subprocess.Popen([*FLOW, "logs", "demo-hot", "--follow"], env=demo.env, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_for(lambda: "scenario hot" in follow_out.read_text() or follow.poll() is not None,
                  "followed log line")
        assert follow.poll() is None, follow_out.read_text()
        assert demo.home.is_dir() and (demo.home / "demo_id_ed25519").is_file()
        demo.proc.send_signal(signal.SIGTERM)
        assert demo.proc.wait(timeout=HANG_BOUND_S) == 0, demo.err.read_text()
        assert not demo.home.exists(), "SIGTERM left the demo's directory (and private key) behind"
        follow.wait(timeout=HANG_BOUND_S)  # its node went away with the demo
        assert _processes_mentioning(str(demo.home)) == []  # no `tail -F` left running
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
