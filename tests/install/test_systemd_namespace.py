"""The systemd path of the scripts, at the REAL paths (/etc/systemd/system, /usr/local/bin, ...),
made harmless by a private mount namespace: `unshare --mount` with an overlay over /etc,
/usr/local, /opt, /var and /run whose upper layers live in a temp directory. Whatever the
script writes lands there; this machine's real directories are never written.

`systemctl` is a fake put first on the script's PATH (/usr/local/sbin, inside the overlay): it
records each call, tracks enabled/active units, and starts a unit's ExecStart the way systemd
would (EnvironmentFile sourced), so the script's healthz check talks to a real (simulated) GPUd.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flow.health.install import GpudSource, InstallOptions, parse_report, startup_script, uninstall_script
from install.support import make_stand_in_collector, pid_alive, tree

pytestmark = pytest.mark.slow

_OVERLAID = ("/etc", "/usr/local", "/opt", "/var", "/run")

_FAKE_SYSTEMCTL = r"""#!/bin/sh
# fake systemctl for flow's tests: records calls, tracks units, runs ExecStart like systemd would
S=/run/fake-systemd
mkdir -p "$S"
echo "$*" >>"$S/calls"
set -- $(printf '%s\n' "$@" | grep -v '^--quiet$')
cmd=$1
unit=${2:-}
stop() {  # like systemd: TERM, then wait for the process to go
    if [ -f "$S/$unit.pid" ]; then
        pid=$(cat "$S/$unit.pid")
        kill "$pid" 2>/dev/null
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        rm -f "$S/$unit.pid"
    fi
}
case $cmd in
    daemon-reload) ;;
    enable) touch "$S/$unit.enabled" ;;
    disable) rm -f "$S/$unit.enabled" ;;
    is-enabled) [ -f "$S/$unit.enabled" ] || exit 1 ;;
    is-active)
        if [ -f "$S/$unit.pid" ] && kill -0 "$(cat "$S/$unit.pid")" 2>/dev/null; then echo active; else
            echo inactive; exit 3; fi ;;
    stop) stop ;;
    start | restart)
        stop
        case $unit in
            gpud.service)
                FLAGS=
                . /etc/default/gpud
                setsid /usr/local/bin/gpud run $FLAGS </dev/null >>"$S/gpud.out" 2>&1 &
                echo $! >"$S/$unit.pid" ;;
            flow-metrics-streamer.service)
                (set -a; . /etc/flow/metrics.env; set +a
                 setsid /opt/flow/venv/bin/flow health collect </dev/null >>"$S/collector.out" 2>&1 &
                 echo $! >"$S/$unit.pid") ;;
        esac ;;
    *) echo "fake systemctl: unsupported: $*" >&2; exit 1 ;;
esac
"""


class Namespace:
    """Runs a script as root at the real paths, inside a private mount namespace with overlays."""

    def __init__(self, base: Path) -> None:
        self.upper = base / "upper"  # mirrors the paths the script wrote: upper/etc/..., upper/run/...
        self.work = base / "work"
        for path in _OVERLAID:
            (self.upper / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
            (self.work / path.strip("/").replace("/", "-")).mkdir(parents=True, exist_ok=True)
        systemctl = self.upper / "usr/local/sbin/systemctl"
        systemctl.parent.mkdir(parents=True, exist_ok=True)
        systemctl.write_text(_FAKE_SYSTEMCTL)
        systemctl.chmod(0o755)

    def _mounts(self) -> str:
        return "".join(
            f"mount -t overlay overlay -o lowerdir={p},"
            f"upperdir={shlex.quote(str(self.upper / p.lstrip('/')))},"
            f"workdir={shlex.quote(str(self.work / p.strip('/').replace('/', '-')))} {p} || exit 99\n"
            for p in _OVERLAID
        )

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", self._mounts() + "exec sh -s"],
            input=script, capture_output=True, text=True, timeout=120, env=env, check=False,
        )

    def calls(self) -> list[str]:
        path = self.upper / "run/fake-systemd/calls"
        return path.read_text().splitlines() if path.exists() else []

    def unit_pid(self, unit: str) -> int | None:
        path = self.upper / "run/fake-systemd" / f"{unit}.pid"
        return int(path.read_text()) if path.exists() else None

    def stop_all(self) -> None:
        for pidfile in (self.upper / "run/fake-systemd").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


def _namespaces_work(base: Path) -> str | None:
    if os.geteuid() != 0:
        return "not applicable without root: needs root for unshare --mount and overlay mounts"
    probe = Namespace(base / "probe")
    result = probe.run("exit 0\n")
    if result.returncode != 0:
        return f"private mount namespaces with overlays are not available here: {result.stderr.strip()}"
    return None


@pytest.fixture
def namespace(tmp_path: Path) -> Iterator[Namespace]:
    reason = _namespaces_work(tmp_path)
    if reason:
        pytest.skip(reason)
    ns = Namespace(tmp_path / "ns")
    try:
        yield ns
    finally:
        ns.stop_all()


_REAL = ("/etc/flow", "/etc/default/gpud", "/etc/systemd/system/gpud.service", "/usr/local/bin/gpud",
         "/opt/flow", "/var/lib/flow", "/var/log/flow", "/run/flow")


def test_systemd_path_at_the_real_paths(namespace: Namespace, tarballs: Path, gpud_port: int) -> None:
    untouched = [p for p in _REAL if not os.path.lexists(p)]
    make_stand_in_collector(namespace.upper)  # -> upper/opt/flow/venv/bin/flow, seen as /opt/flow/...
    options = InstallOptions(gpud_source=GpudSource(tarball=str(tarballs)), gpud_port=gpud_port,
                             package=None, systemd="yes", healthz_timeout_s=30, task_id="task-sd1")
    first = namespace.run(startup_script(options))
    assert first.returncode == 0, first.stdout + first.stderr
    report = parse_report("node", first.returncode, first.stdout)
    steps = {s.step: s for s in report.steps}
    assert steps["gpud-service"].message == "gpud.service enabled, restarted"
    assert steps["collector-service"].message == "flow-metrics-streamer.service enabled, restarted"
    assert steps["healthz"].status == "ok"
    calls = namespace.calls()
    assert calls.index("daemon-reload") < calls.index("enable gpud.service") < calls.index(
        "restart gpud.service")
    assert "restart flow-metrics-streamer.service" in calls

    # Everything the script wrote is in the overlay's upper layers, at the documented paths.
    written = tree(namespace.upper)
    for path, mode in (("etc/systemd/system/gpud.service", 0o644),
                       ("etc/systemd/system/flow-metrics-streamer.service", 0o644),
                       ("etc/default/gpud", 0o644), ("etc/flow/metrics.env", 0o600),
                       ("usr/local/bin/gpud", 0o755), ("var/log/flow/startup.log", 0o640)):
        assert written[path] == mode, path
    gpud_pid = namespace.unit_pid("gpud.service")
    assert gpud_pid is not None and pid_alive(gpud_pid)

    # Second run: only queries, nothing started, enabled or reloaded.
    before = len(namespace.calls())
    second = namespace.run(startup_script(options))
    assert second.returncode == 0, second.stdout
    assert second.stdout.rstrip().endswith("[flow] result: unchanged")
    new_calls = namespace.calls()[before:]
    assert new_calls and all(c.split()[0] in ("is-enabled", "is-active") for c in new_calls), new_calls
    assert namespace.unit_pid("gpud.service") == gpud_pid

    # Uninstall: stop + disable both units, reload, remove the files.
    before = len(namespace.calls())
    removed = namespace.run(uninstall_script(options))
    assert removed.returncode == 0, removed.stdout
    new_calls = namespace.calls()[before:]
    for call in ("stop flow-metrics-streamer.service", "disable flow-metrics-streamer.service",
                 "stop gpud.service", "disable gpud.service", "daemon-reload"):
        assert call in new_calls
    assert not pid_alive(gpud_pid)
    left = {p for p in tree(namespace.upper) if (namespace.upper / p).is_file()}
    assert left <= {"usr/local/sbin/systemctl", "collector-started.txt", "run/fake-systemd/calls",
                    "run/fake-systemd/gpud.out", "run/fake-systemd/collector.out"}, left
    # ...and this machine's own directories never saw any of it.
    assert [p for p in _REAL if not os.path.lexists(p)] == untouched
