"""`flow health serve`: the exporter sweeps the real fleet (through real sshd) and serves it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flow.fleet.inventory import Inventory
from flow.fleet.model import Node, Task
from flow.health.sim import start_fleet_in_thread
from sshd_support import SshdServer

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ok_sweeps(body: str) -> float:
    found = re.search(r'^flow_sweeps_total\{result="ok"\} (\S+)$', body, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_serve_exports_the_swept_fleet(flow_home: Path, sshd: SshdServer, tmp_path: Path) -> None:
    fleet = start_fleet_in_thread(2, scenario=["healthy", "hot"])
    try:
        node_args = {"host": sshd.host, "port": sshd.port, "user": sshd.user,
                     "identity_file": str(sshd.client_key.path)}
        Inventory(flow_home / "tasks.yaml", [
            Task(id=f"task-serve{i}", name=f"serve-{n.scenario}", instance_type="h100.8xlarge",
                 gpud_port=n.port, nodes=(Node(**node_args),))  # type: ignore[arg-type]
            for i, n in enumerate(fleet.nodes)]).save()
        home = tmp_path / "user-home"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "FLOW_HOME": str(flow_home)}
        env.pop("SSH_AUTH_SOCK", None)
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "flow.cli.main", "health", "serve",
                                 "--listen", f"127.0.0.1:{port}", "--interval", "2"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            body = ""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and 'task_name="serve-hot"' not in body:
                time.sleep(0.5)
                try:
                    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                except httpx.HTTPError:
                    continue
            scores = dict(re.findall(r'flow_node_health_score\{[^}]*task_name="([^"]+)"[^}]*\} (\S+)', body))
            assert float(scores["serve-healthy"]) == 100.0, body[:2000]
            assert float(scores["serve-hot"]) < 60
            status_lines = [line for line in body.splitlines()
                            if line.startswith("flow_node_status{") and 'task_name="serve-hot"' in line]
            critical = [line for line in status_lines if 'status="critical"' in line]
            assert len(critical) == 1 and float(critical[0].rsplit(" ", 1)[1]) == 1.0, status_lines
            assert "flow_gpu_temperature_celsius" in body
            # Sweeps every 2 s over one kept SSH connection: the node sees one login in all.
            while time.monotonic() < deadline and _ok_sweeps(body) < 3:
                time.sleep(0.5)
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert _ok_sweeps(body) >= 3
            assert sshd.log().count("Accepted publickey") == 1, sshd.log()[-2000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        fleet.stop()
