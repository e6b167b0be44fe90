"""Helpers for the install tests: stand-in GPUd tarballs, an isolated root, running scripts.

Every script runs against an isolated root (a temp directory baked in as FLOW_ROOT), never
against this machine's /etc, /usr/local, /opt or /var.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import platform
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

__all__ = [
    "host_arch",
    "kill_root_processes",
    "make_gpud_tarball",
    "make_stand_in_collector",
    "pid_alive",
    "run_script",
    "sha256_of",
    "tree",
]


def host_arch() -> str:
    """The GPUd architecture name of this machine, as the script computes it from `uname -m`."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def _stand_in_gpud(version: str) -> bytes:
    # Answers --version itself (as the real binary does, instantly) and serves the simulator
    # (flow.health.sim.gpud_standin) for `run`, with the same version.
    return f"""#!/bin/sh
# stand-in gpud {version} for flow's install tests
case "${{1:-}}" in
    --version | version) echo "gpud version {version}"; exit 0 ;;
esac
FLOW_SIM_GPUD_VERSION={version}
export FLOW_SIM_GPUD_VERSION
exec {sys.executable} -m flow.health.sim.gpud_standin "$@"
""".encode()


def make_gpud_tarball(directory: Path, version: str = "v0.5.1", *, arch: str | None = None,
                      binary: bytes | None = None) -> Path:
    """`directory/gpud_<version>_linux_<arch>.tgz` holding `gpud_<version>_linux_<arch>/gpud`."""
    arch = arch or host_arch()
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"gpud_{version}_linux_{arch}"
    path = directory / f"{stem}.tgz"
    data = binary if binary is not None else _stand_in_gpud(version)
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(f"{stem}/gpud")
        info.size = len(data)
        info.mode = 0o755
        archive.addfile(info, io.BytesIO(data))
    return path


def make_stand_in_collector(root: Path) -> Path:
    """A stand-in `/opt/flow/venv/bin/flow` under `root`: it records how it was started (argv and
    the FLOW_* environment) in `<root>/collector-started.txt`, then waits like a daemon."""
    flow = root / "opt/flow/venv/bin/flow"
    flow.parent.mkdir(parents=True, exist_ok=True)
    record = root / "collector-started.txt"
    flow.write_text(f"""#!/bin/sh
if [ "${{1:-}}" = --version ]; then echo "flow, version 0.1.0"; exit 0; fi
{{ echo "argv=$*"; env | grep '^FLOW_' | sort; }} >{record}
exec sleep 300
""")
    flow.chmod(0o755)
    return flow


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_script(script: str, *, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run a generated script with `sh -s` (as `flow health install` does), script on stdin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True,
                          timeout=timeout_s, env=env, check=False)


def tree(root: Path) -> dict[str, int]:
    """Every path under `root` (relative) -> its permission bits."""
    return {
        str(path.relative_to(root)): path.lstat().st_mode & 0o7777
        for path in sorted(root.rglob("*"))
    }


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def kill_root_processes(root: Path) -> None:
    """Stop whatever the fallback started under `root` (a safety net when a test fails midway)."""
    for pidfile in (root / "run/flow").glob("*.pid") if (root / "run/flow").is_dir() else ():
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
