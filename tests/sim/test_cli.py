"""`flow health sim` and the stand-in `gpud` executable, as real subprocesses."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from flow.cli.main import main
from flow.health.sim import host_boot_id


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _read_urls(proc: subprocess.Popen[str], count: int, deadline_s: float = 30) -> list[str]:
    assert proc.stdout is not None
    urls: list[str] = []
    end = time.monotonic() + deadline_s
    while len(urls) < count and time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"https://127\.0\.0\.1:\d+", line)
        if m:
            urls.append(m.group(0))
    return urls


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_flow_health_sim_serves_until_sigterm() -> None:
    proc = _spawn("-m", "flow.cli.main", "health", "sim", "--nodes", "3", "--base-port", "0",
                  "--scenario", "mixed", "--gpus", "1", "--model", "A100-80GB", "--seed", "3")
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert [line.split()[1] for line in lines] == ["healthy", "hot", "warm"]
        assert all("A100-80GB" in line for line in lines)
        url = re.search(r"https://127\.0\.0\.1:\d+", lines[1])
        assert url is not None
        r = httpx.get(url.group(0) + "/machine-info", verify=False, timeout=10)
        assert r.json()["gpuInfo"]["product"] == "NVIDIA A100-SXM4-80GB"
    finally:
        code = _stop(proc)
    assert code == 0


@pytest.mark.parametrize(("argv", "needle"), [
    (["--gpus", "0"], "--gpus"),
    (["--model", "V100"], "V100"),
    (["--scenario", "melting"], "melting"),
    (["--gpud-version", "five"], "five"),
    (["--nodes", "10", "--base-port", "65530"], "65535"),
    (["--model", "L4", "--scenario", "row-remap-failed"], "row remapping"),
    (["--nodes", "2", "--host-boot-id"], "--host-boot-id"),
])
def test_bad_options_exit_2_with_a_clear_message(argv: list[str], needle: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "sim", *argv]) == 2
    assert needle in capsys.readouterr().err


def test_help_mentions_the_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "sim", "--help"]) == 0
    out = capsys.readouterr().out
    assert "xid-fatal" in out and "--base-port" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_gpud_standin_run_and_version() -> None:
    out = subprocess.run([sys.executable, "-m", "flow.health.sim.gpud_standin", "--version"],
                         capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == "gpud version v0.5.1"
    out = subprocess.run([sys.executable, "-m", "flow.health.sim.gpud_standin", "version"],
                         capture_output=True, text=True, check=True, timeout=30,
                         env={**os.environ, "FLOW_SIM_GPUD_VERSION": "v0.4.4"})
    assert out.stdout.strip() == "gpud version v0.4.4"

    port = _free_port()
    proc = _spawn("-m", "flow.health.sim.gpud_standin", "run", f"--listen-address=127.0.0.1:{port}",
                  "--scenario", "xid-fatal", "--log-level=info")
    try:
        assert _read_urls(proc, 1) == [f"https://127.0.0.1:{port}"]
        r = httpx.get(f"https://127.0.0.1:{port}/v1/states",
                      params={"components": "accelerator-nvidia-error-xid"}, verify=False, timeout=10)
        assert r.json()[0]["states"][0]["health"] == "Unhealthy"
        # It stands in for this host's GPUd, so it reports this host's boot id.
        info = httpx.get(f"https://127.0.0.1:{port}/machine-info", verify=False, timeout=10).json()
        assert info["bootID"] == host_boot_id()
    finally:
        code = _stop(proc)
    assert code == 0


def test_gpud_standin_rejects_a_bad_address() -> None:
    out = subprocess.run([sys.executable, "-m", "flow.health.sim.gpud_standin", "run",
                          "--listen-address=nowhere"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "HOST:PORT" in out.stderr
