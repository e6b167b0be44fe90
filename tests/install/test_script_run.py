"""Running the generated scripts for real, inside an isolated root (a temp dir as FLOW_ROOT),
with no systemd (the pid-file fallback) and a stand-in GPUd that serves the simulator.

Nothing here touches this machine's /etc, /usr/local, /opt, /run or /var.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from flow.health.install import (
    GpudSource,
    InstallOptions,
    parse_report,
    parse_status,
    startup_script,
    status_script,
    uninstall_script,
)
from install.support import (
    make_gpud_tarball,
    make_stand_in_collector,
    pid_alive,
    run_script,
    sha256_of,
    tree,
)

TOKEN = "tok-run-Secret.42"


def options_for(root: Path, tarballs: Path, port: int, **changes: Any) -> InstallOptions:
    values: dict[str, Any] = {
        "gpud_source": GpudSource(tarball=str(tarballs)),
        "gpud_port": port,
        "package": None,
        "root": str(root),
        "systemd": "no",
        "healthz_timeout_s": 30,
        "task_id": "task-run01",
        "task_name": "run-test",
        "metrics_endpoint": "https://metrics.example.com/ingest",
        "auth_token": TOKEN,
    }
    values.update(changes)
    return InstallOptions(**values)


def steps_of(stdout: str) -> dict[str, str]:
    return {s.step: s.status for s in parse_report("node", 0, stdout).steps}


def pid(root: Path, name: str) -> int:
    return int((root / "run/flow" / f"{name}.pid").read_text().strip())


def test_wrong_checksum_is_refused_and_changes_nothing(root: Path, tarballs: Path, gpud_port: int) -> None:
    options = options_for(root, tarballs, gpud_port, gpud_source=GpudSource(tarball=str(tarballs),
                                                                            sha256="0" * 64))
    result = run_script(startup_script(options))
    assert result.returncode == 1
    tarball = tarballs / next(p.name for p in tarballs.iterdir())
    assert (f"[flow] gpud: failed: SHA-256 mismatch for {tarball}: expected {'0' * 64}, "
            f"got {sha256_of(tarball)}; refusing to install it, nothing was changed") in result.stdout
    assert result.stdout.rstrip().endswith("[flow] result: failed")
    # Only the startup log (which records the refusal) exists; no binary, unit, env file, pid.
    # (`run` is the temp root's stand-in for /run, which every real system has.)
    assert tree(root) == {"run": 0o755, "var": 0o755, "var/log": 0o755, "var/log/flow": 0o755,
                          "var/log/flow/startup.log": 0o640}
    assert "SHA-256 mismatch" in (root / "var/log/flow/startup.log").read_text()


def test_missing_tarball_names_the_expected_file(root: Path, tmp_path: Path, gpud_port: int) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script(startup_script(options_for(root, empty, gpud_port)))
    assert result.returncode == 1
    assert f"GPUd tarball {empty}/gpud_v0.5.1_linux_" in result.stdout
    assert "not found on this node" in result.stdout
    assert not (root / "usr").exists()


def test_tarball_of_another_version_is_refused(root: Path, tmp_path: Path, gpud_port: int) -> None:
    # Named v0.5.1 but the binary inside says v0.5.0: installing it would loop forever.
    directory = tmp_path / "mislabelled"
    make_gpud_tarball(directory, "v0.5.1", binary=b"#!/bin/sh\necho gpud version v0.5.0\n")
    result = run_script(startup_script(options_for(root, directory, gpud_port)))
    assert result.returncode == 1
    assert "holds gpud v0.5.0, not v0.5.1" in result.stdout
    assert not (root / "usr/local/bin/gpud").exists()


def test_gpud_that_exits_fails_healthz_with_its_log(root: Path, tmp_path: Path, gpud_port: int) -> None:
    directory = tmp_path / "broken"
    make_gpud_tarball(directory, "v0.5.1", binary=(
        b"#!/bin/sh\ncase \"$1\" in --version) echo gpud version v0.5.1; exit 0;; esac\n"
        b"echo 'listen tcp 127.0.0.1: bind: address already in use' >&2\nexit 1\n"))
    result = run_script(startup_script(options_for(root, directory, gpud_port)))
    assert result.returncode == 1
    report = parse_report("node", result.returncode, result.stdout)
    assert report.outcome == "failed"
    assert report.failed_step == "healthz"
    assert "gpud exited before it answered" in report.message
    assert any("address already in use" in line for line in report.log_tail)


def test_a_live_lock_refuses_a_second_run_and_a_stale_one_is_taken_over(
    root: Path, tarballs: Path, gpud_port: int
) -> None:
    lock = root / "run/flow/install.lock"
    lock.mkdir(parents=True)
    (lock / "pid").write_text(f"{os.getpid()}\n")
    options = options_for(root, tarballs, gpud_port, gpud_source=GpudSource(tarball=str(tarballs),
                                                                            sha256="0" * 64))
    result = run_script(startup_script(options))
    assert f"another flow install or uninstall is running (pid {os.getpid()}" in result.stdout
    assert (lock / "pid").read_text().strip() == str(os.getpid())  # not ours: left alone
    (lock / "pid").write_text("999999999\n")  # no such process
    result = run_script(startup_script(options))
    assert "SHA-256 mismatch" in result.stdout  # got past the lock
    assert not lock.exists()


def test_disabled_script_only_logs(root: Path) -> None:
    result = run_script(startup_script(InstallOptions(enabled=False, root=str(root))))
    assert result.returncode == 0
    assert "[flow] monitoring: skipped: health monitoring is disabled" in result.stdout
    assert "[flow] result: unchanged" in result.stdout
    assert set(tree(root)) == {"var", "var/log", "var/log/flow", "var/log/flow/startup.log"}
    assert "health monitoring is disabled" in (root / "var/log/flow/startup.log").read_text()


@pytest.mark.slow
def test_lifecycle_rerun_reconfigure_upgrade_uninstall(root: Path, tarballs: Path, gpud_port: int) -> None:
    make_stand_in_collector(root)
    options = options_for(root, tarballs, gpud_port)

    first = run_script(startup_script(options))
    assert first.returncode == 0, first.stdout + first.stderr
    steps = steps_of(first.stdout)
    assert steps["gpud"] == "changed"
    assert steps["gpud-service"] == "changed"
    assert steps["collector-service"] == "changed"
    assert steps["healthz"] == "ok"
    gpud_pid, collector_pid = pid(root, "gpud"), pid(root, "collector")
    assert pid_alive(gpud_pid) and pid_alive(collector_pid)

    # The collector got its settings (and the token) through its environment, never argv.
    started = (root / "collector-started.txt").read_text()
    assert "argv=health collect\n" in started
    assert f"FLOW_METRICS_AUTH_TOKEN={TOKEN}\n" in started
    assert f"FLOW_METRICS_DIR={root}/var/lib/flow/metrics\n" in started
    assert "FLOW_TASK_ID=task-run01\n" in started
    for process in (gpud_pid, collector_pid):
        assert TOKEN not in Path(f"/proc/{process}/cmdline").read_text()
    assert TOKEN not in (root / "var/log/flow/startup.log").read_text()
    assert TOKEN not in first.stdout + first.stderr

    second = run_script(startup_script(options))
    assert second.returncode == 0
    assert second.stdout.rstrip().endswith("[flow] result: unchanged")
    assert "changed" not in set(steps_of(second.stdout).values())
    assert (pid(root, "gpud"), pid(root, "collector")) == (gpud_pid, collector_pid)

    # A new collector setting rewrites the env file and restarts only the collector.
    third = run_script(startup_script(options_for(root, tarballs, gpud_port, metrics_interval=15)))
    steps = steps_of(third.stdout)
    assert (steps["collector-env"], steps["collector-service"]) == ("changed", "changed")
    assert (steps["gpud"], steps["gpud-service"]) == ("unchanged", "unchanged")
    assert "FLOW_METRICS_INTERVAL='15'" in (root / "etc/flow/metrics.env").read_text()
    assert pid(root, "gpud") == gpud_pid and pid(root, "collector") != collector_pid
    assert not pid_alive(collector_pid)

    # A different GPUd version reinstalls and restarts GPUd.
    make_gpud_tarball(tarballs, "v0.5.2")
    upgraded = run_script(startup_script(options_for(root, tarballs, gpud_port, metrics_interval=15,
                                                     gpud_version="v0.5.2")))
    assert upgraded.returncode == 0, upgraded.stdout
    steps = steps_of(upgraded.stdout)
    assert (steps["gpud"], steps["gpud-service"], steps["healthz"]) == ("changed", "changed", "ok")
    assert "installed gpud v0.5.2 from the tarball (was v0.5.1)" in upgraded.stdout
    assert not pid_alive(gpud_pid)
    status = parse_status("node", run_script(status_script(options)).stdout)
    assert (status.gpud_version, status.gpud_healthy) == ("v0.5.2", True)
    assert status.collector_service is not None and status.collector_service.startswith("running")

    pids = (pid(root, "gpud"), pid(root, "collector"))
    removed = run_script(uninstall_script(options))
    assert removed.returncode == 0, removed.stdout
    assert not any(pid_alive(p) for p in pids)
    left = {p for p in tree(root) if not p.startswith("var/lib/flow")} - {"collector-started.txt"}
    assert left == {"etc", "etc/default", "etc/systemd", "etc/systemd/system", "opt", "run", "usr",
                    "usr/local", "usr/local/bin", "var", "var/lib", "var/log"}


def _wheel(directory: Path) -> Path:
    """A tiny offline wheel whose `flow` console script answers --version and then idles."""
    files = {
        "flowstub.py": "import sys, time\n\ndef main():\n    if '--version' in sys.argv:\n"
                       "        print('flow, version 9.9.9')\n        return 0\n    time.sleep(300)\n",
        "flowstub-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: flowstub\nVersion: 1.0\n",
        "flowstub-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: flow-tests\nRoot-Is-Purelib: true\n"
                                        "Tag: py3-none-any\n",
        "flowstub-1.0.dist-info/entry_points.txt": "[console_scripts]\nflow = flowstub:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("flowstub-1.0.dist-info/RECORD,,")
    files["flowstub-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    path = directory / "flowstub-1.0-py3-none-any.whl"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


@pytest.mark.slow
def test_collector_venv_from_a_local_wheel(
    root: Path, tarballs: Path, gpud_port: int, tmp_path: Path
) -> None:
    wheel = _wheel(tmp_path / "wheels")
    options = options_for(root, tarballs, gpud_port, package=str(wheel), python=sys.executable)
    first = run_script(startup_script(options), timeout_s=240)
    assert first.returncode == 0, first.stdout + first.stderr
    assert steps_of(first.stdout)["collector-venv"] == "changed"
    assert (root / "opt/flow/venv/bin/flow").is_file()
    marker = (root / "opt/flow/venv/.flow-package").read_text()
    assert marker == f"{wheel} sha256={sha256_of(wheel)}\n"
    status = parse_status("node", run_script(status_script(options)).stdout)
    assert status.collector_version == "flow, version 9.9.9"
    second = run_script(startup_script(options), timeout_s=240)
    assert steps_of(second.stdout)["collector-venv"] == "unchanged"
    assert second.stdout.rstrip().endswith("[flow] result: unchanged")
    assert run_script(uninstall_script(options)).returncode == 0
    assert not (root / "opt/flow").exists()
