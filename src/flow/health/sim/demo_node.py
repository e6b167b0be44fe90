"""What a demo node does with `flow ssh` and `flow logs`: it runs the command, on this machine.

A demo node is simulated, but the commands sent to it are real: each session runs `/bin/sh -c
COMMAND` (or a shell when none is given, in a pseudo-terminal when the client asked for one)
as the user running `flow health demo`, in the node's own directory under the demo's FLOW_HOME
(`nodes/TASK-ID/`, also its HOME). That is what a real node does with the same commands; the
difference is only where they run, and the demo says so.

The node's directory holds what `flow logs` reads on a node without systemd: `log/startup.log`,
`log/gpud.log` and `log/collector.log` (written when the demo starts; `FLOW_LOG_DIR` and
`FLOW_STARTUP_LOG` point at them), and `bin/`, first on PATH, with three stand-ins:

- `gpud`: present unless the node's scenario is `gpud-not-installed`, so the checker's
  `command -v gpud` probe tells the two apart as on a real node;
- `journalctl`: the operator's machine may run systemd, and its journal has no demo units, so
  `journalctl -u gpud|flow-metrics-streamer [-n N] [-f]` prints the node's log files instead;
- `sudo`: refuses (`sudo -n true` fails), so nothing runs as root on the operator's machine.

A session ends its command's process group when the client goes away (Ctrl-C on `flow logs
--follow`), so nothing outlives the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncssh

from flow.fs import ensure_private_dir

__all__ = ["DemoNodeHome", "session_handler"]

_JOURNALCTL = r"""#!/bin/sh
# flow health demo: this node has no systemd journal. Its units log to files in $FLOW_LOG_DIR;
# this stand-in prints them for `journalctl -u UNIT [-n N] [-f]`.
n=10 follow= files=
while [ $# -gt 0 ]; do
    case "$1" in
        -u) shift; case "$1" in
                gpud) files="$files $FLOW_LOG_DIR/gpud.log" ;;
                flow-metrics-streamer) files="$files $FLOW_LOG_DIR/collector.log" ;;
            esac ;;
        -n) shift; n=$1 ;;
        -f) follow=1 ;;
    esac
    shift
done
present=
for f in $files; do [ -f "$f" ] && present="$present $f"; done
if [ -z "$present" ]; then
    [ -n "$follow" ] && exec sleep 2147483647
    echo "-- No entries --"; exit 0
fi
# Lines start with their UTC time: sorted, several units merge in time order as journalctl does.
if [ -n "$follow" ]; then exec tail -q -n "$n" -F $present; fi
sort $present | tail -n "$n"
"""

_SUDO = """#!/bin/sh
echo "sudo: flow health demo runs node commands as $(id -un) on this machine, never as root" >&2
exit 1
"""

_GPUD = """#!/bin/sh
echo "gpud: simulated by flow health demo; its API: https://127.0.0.1:$FLOW_GPUD_PORT (self-signed)"
"""


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class DemoNodeHome:
    """One demo node's directory: its logs, its stand-ins and the environment of its sessions."""

    def __init__(self, root: Path, *, task_id: str, scenario: str, gpud_port: int, gpu_model: str,
                 gpu_count: int, gpud_version: str) -> None:
        self.root = root
        self.task_id, self.scenario = task_id, scenario
        self.gpud_port, self.gpu_model, self.gpu_count = gpud_port, gpu_model, gpu_count
        self.gpud_version = gpud_version

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def gpud_installed(self) -> bool:
        return self.scenario != "gpud-not-installed"

    def create(self, *, now: datetime | None = None) -> DemoNodeHome:
        """Write the directory: logs as the node's last boot left them, and the stand-ins."""
        now = now or datetime.now(timezone.utc)
        boot = now - timedelta(minutes=30)
        ensure_private_dir(self.log_dir)
        bin_dir = self.root / "bin"
        ensure_private_dir(bin_dir)
        stand_ins = {"journalctl": _JOURNALCTL, "sudo": _SUDO}
        if self.gpud_installed:
            stand_ins["gpud"] = _GPUD
        for name, text in stand_ins.items():
            path = bin_dir / name
            path.write_text(text)
            path.chmod(0o700)
        t = [_stamp(boot + timedelta(seconds=s)) for s in range(0, 40, 2)]
        startup = [f"{t[0]} flow startup script (simulated by flow health demo): node {self.task_id}"]
        if self.gpud_installed:
            startup += [f"{t[1]} installing gpud {self.gpud_version}",
                        f"{t[3]} gpud {self.gpud_version} installed; started (listening on "
                        f"127.0.0.1:{self.gpud_port})",
                        f"{t[4]} collector flow-metrics-streamer started",
                        f"{t[5]} done"]
        else:
            startup += [f"{t[1]} gpud not installed on this node (scenario gpud-not-installed)"]
        self._write("startup.log", startup)
        if self.gpud_installed:
            gpud = [f"{t[3]} gpud {self.gpud_version} (simulated by flow health demo) starting",
                    f"{t[4]} found {self.gpu_count} x NVIDIA {self.gpu_model}",
                    f"{t[5]} serving https://127.0.0.1:{self.gpud_port} (scenario {self.scenario})"]
            if self.scenario == "gpud-down":
                gpud.append(f"{_stamp(now - timedelta(minutes=5))} gpud stopped: no longer listening")
            self._write("gpud.log", gpud)
            self._write("collector.log", [
                f"{t[4]} INFO collector started: every 60 s, store /var/lib/flow/metrics",
                f"{t[7]} INFO collector first snapshot stored",
            ])
        return self

    def _write(self, name: str, lines: list[str]) -> None:
        (self.log_dir / name).write_text("".join(line + "\n" for line in lines))

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The session's environment: `base` (the operator's, without FLOW_*) and the node's own."""
        env = {k: v for k, v in base.items() if not k.startswith("FLOW_")}
        env.update(
            HOME=str(self.root), PWD=str(self.root),
            PATH=f"{self.root / 'bin'}{os.pathsep}{base.get('PATH', os.defpath)}",
            FLOW_LOG_DIR=str(self.log_dir), FLOW_STARTUP_LOG=str(self.log_dir / "startup.log"),
            FLOW_GPUD_PORT=str(self.gpud_port), FLOW_DEMO_NODE=self.task_id,
        )
        return env


def _set_window(fd: int, size: tuple[int, int, int, int]) -> None:
    cols, rows, width_px, height_px = size
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, width_px, height_px))


def _controlling_tty() -> None:  # in the child, before exec: the pty is its terminal
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _end_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGHUP)
        os.killpg(proc.pid, signal.SIGTERM)


async def _pump_in(process: Any, write: Callable[[bytes], object], close: Callable[[], None],
                   pty_fd: int | None, proc: asyncio.subprocess.Process) -> None:
    """The client's input to the command, and its window size and signals."""
    while True:
        try:
            data = await process.stdin.read(65536)
        except asyncssh.TerminalSizeChanged as change:
            if pty_fd is not None:
                _set_window(pty_fd, (change.width, change.height, change.pixwidth, change.pixheight))
            continue
        except asyncssh.SignalReceived as sig:
            number = getattr(signal, "SIG" + sig.signal, None)
            if number is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, number)
            continue
        except asyncssh.BreakReceived:
            continue
        except (asyncssh.Error, OSError):
            break
        if not data:
            break
        write(data)
    if pty_fd is None:  # a pty stays open: its EOF is the user's Ctrl-D, already passed on
        close()


async def _run(home: DemoNodeHome, process: Any) -> None:
    command = process.command
    env = home.environment(os.environ)
    shell = os.environ.get("SHELL") or "/bin/sh"
    argv = ["/bin/sh", "-c", command] if command is not None else [shell]
    loop = asyncio.get_running_loop()
    pty_fd: int | None = None
    term_type = process.get_terminal_type()
    if term_type is not None:  # the client asked for a terminal (`flow ssh TASK` from a tty)
        master, slave = os.openpty()
        pty_fd = master
        _set_window(slave, process.get_terminal_size())
        env["TERM"] = term_type
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, cwd=home.root, env=env,
                preexec_fn=_controlling_tty)
        except OSError:
            os.close(master)
            raise
        finally:
            os.close(slave)
    else:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=home.root, env=env, start_new_session=True)

    outputs: list[asyncio.Future[None]] = []
    if pty_fd is not None:
        fd = pty_fd
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: every holder of the terminal has gone
                data = b""
            if data:
                process.stdout.write(data)
                return
            loop.remove_reader(fd)
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, readable)
        outputs.append(done)
        stdin_task = asyncio.ensure_future(_pump_in(
            process, lambda data: os.write(fd, data), lambda: None, fd, proc))
    else:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin_w = proc.stdin

        def close_stdin() -> None:
            with contextlib.suppress(OSError):
                stdin_w.close()

        async def copy(reader: asyncio.StreamReader, writer: Any) -> None:
            while data := await reader.read(65536):
                writer.write(data)

        outputs += [asyncio.ensure_future(copy(proc.stdout, process.stdout)),
                    asyncio.ensure_future(copy(proc.stderr, process.stderr))]
        stdin_task = asyncio.ensure_future(_pump_in(process, stdin_w.write, close_stdin, None, proc))

    finished = asyncio.ensure_future(asyncio.gather(proc.wait(), *outputs))
    closed = asyncio.ensure_future(process.wait_closed())
    try:
        await asyncio.wait({finished, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stdin_task.cancel()
        if not finished.done():  # the client went away, or the demo is stopping
            _end_group(proc)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
            finished.cancel()
        closed.cancel()
        if pty_fd is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(pty_fd)
            os.close(pty_fd)
    if finished.done() and not finished.cancelled():
        code = proc.returncode if proc.returncode is not None else 255
        process.exit(code if code >= 0 else 128 - code)


def session_handler(home: DemoNodeHome) -> Callable[[Any], Any]:
    """The asyncssh `process_factory` of one demo node: every session runs as described above."""

    async def handle(process: Any) -> None:
        try:
            await _run(home, process)
        except OSError as exc:
            process.stderr.write(f"demo node: cannot run the command: {exc.strerror}\n".encode())
            process.exit(127)

    return handle
