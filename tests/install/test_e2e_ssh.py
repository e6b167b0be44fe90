"""End to end: `flow health install / status / uninstall` over a REAL OpenSSH sshd, into an
ISOLATED ROOT (a temp directory baked into the script as FLOW_ROOT), with no systemd (the
pid-file fallback) and a local GPUd tarball whose `gpud` serves the simulator.

Nothing here touches this machine's /etc, /usr/local, /opt, /run or /var.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from flow.cli.main import main
from flow.fleet import Inventory, Node, Task
from flow.health.install import units
from install.support import make_stand_in_collector, pid_alive, sha256_of, tree
from sshd_support import SshdServer, free_port

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

TOKEN = "e2e-Token.9f8e7d"


def _inventory(flow_home: Path, *nodes: Node) -> None:
    Inventory(flow_home / "tasks.yaml", [
        Task(id="task-e2e01", name="e2e", instance_type="h100.8xlarge", gpus=8, nodes=nodes),
    ]).save()


def _node(server: SshdServer) -> Node:
    return Node(host=server.host, port=server.port, user=server.user,
                identity_file=str(server.client_key.path))


def _flow(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_install_status_uninstall_over_ssh(
    sshd: SshdServer, flow_home: Path, root: Path, tarballs: Path, gpud_port: int, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _inventory(flow_home, _node(sshd))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    monkeypatch.setenv("FLOW_GPUD_PORT", str(gpud_port))
    monkeypatch.setenv("FLOW_METRICS_ENDPOINT", "https://metrics.example.com/ingest")
    make_stand_in_collector(root)  # `--package none`: the venv's `flow` is a recording stand-in
    tarball = next(tarballs.iterdir())
    install = ["health", "install", "e2e", "--root", str(root), "--systemd", "no", "--package", "none",
               "--gpud-tarball", str(tarballs), "--gpud-sha256", sha256_of(tarball),
               "--token-file", str(token_file)]

    code, out, err = _flow(capsys, *install, "--json")
    assert code == 0, out + err
    [report] = orjson.loads(out)
    assert report["node"] == f"e2e/{sshd.user}@127.0.0.1:{sshd.port}"
    assert report["outcome"] == "changed", report
    steps = {s["step"]: s["status"] for s in report["steps"]}
    assert steps["healthz"] == "ok"
    assert steps["gpud-service"] == "changed" and steps["collector-service"] == "changed"

    # Files and modes.
    modes = tree(root)
    assert modes["etc/flow/metrics.env"] == 0o600
    assert modes["etc/default/gpud"] == 0o644
    assert modes["etc/systemd/system/gpud.service"] == 0o644
    assert modes["etc/systemd/system/flow-metrics-streamer.service"] == 0o644
    assert modes["usr/local/bin/gpud"] == 0o755
    assert modes["var/lib/flow/metrics"] == 0o700

    # The env file names the task from the inventory, the endpoint from the environment and the
    # token from --token-file; the units are exactly the documented ones.
    env = (root / "etc/flow/metrics.env").read_text()
    for line in ("FLOW_TASK_ID='task-e2e01'", "FLOW_TASK_NAME='e2e'", "FLOW_INSTANCE_TYPE='h100.8xlarge'",
                 "FLOW_EXPECTED_GPUS='8'",
                 f"FLOW_GPUD_PORT='{gpud_port}'", "FLOW_GPUD_BIND='127.0.0.1'",
                 "FLOW_METRICS_ENDPOINT='https://metrics.example.com/ingest'",
                 f"FLOW_METRICS_AUTH_TOKEN='{TOKEN}'", "FLOW_METRICS_DIR='/var/lib/flow/metrics'"):
        assert line in env.splitlines()
    assert (root / "etc/systemd/system/gpud.service").read_text() == units.gpud_unit()
    assert (root / "etc/systemd/system/flow-metrics-streamer.service").read_text() == units.collector_unit()
    assert f"FLAGS='--listen-address=127.0.0.1:{gpud_port}'" in (root / "etc/default/gpud").read_text()

    # GPUd (the simulator behind the stand-in) answers on the configured loopback address.
    answer = httpx.get(f"https://127.0.0.1:{gpud_port}/healthz", verify=False, timeout=5)
    assert answer.json()["status"] == "ok"
    gpud_pid = int((root / "run/flow/gpud.pid").read_text())
    collector_pid = int((root / "run/flow/collector.pid").read_text())
    assert pid_alive(gpud_pid) and pid_alive(collector_pid)

    # The token is in no process's argv, not in the log, not in what the operator saw.
    for pid in (gpud_pid, collector_pid):
        assert TOKEN not in Path(f"/proc/{pid}/cmdline").read_text()
    assert TOKEN not in (root / "var/log/flow/startup.log").read_text()
    assert TOKEN not in out + err
    assert f"FLOW_METRICS_AUTH_TOKEN={TOKEN}" in (root / "collector-started.txt").read_text()

    # A second run changes nothing, and says so.
    code, out, err = _flow(capsys, *install)
    assert code == 0, out + err
    assert f"e2e/{sshd.user}@127.0.0.1:{sshd.port}  ok      unchanged" in out
    assert "1 node(s): 0 changed, 1 unchanged, 0 failed" in out
    assert int((root / "run/flow/gpud.pid").read_text()) == gpud_pid

    # Status, read over SSH.
    code, out, err = _flow(capsys, "health", "status", "e2e", "--root", str(root), "--systemd", "no",
                           "--json")
    assert code == 0, out + err
    [status] = orjson.loads(out)
    assert status["gpud"]["version"] == "v0.5.1"
    assert status["gpud"]["healthz"] is True
    assert status["gpud"]["service"] == f"running (pid {gpud_pid}, no systemd)"
    assert status["collector"]["service"] == f"running (pid {collector_pid}, no systemd)"
    assert status["collector"]["env_mode"] == "600"
    code, out, err = _flow(capsys, "health", "status", "e2e", "--root", str(root), "--systemd", "no")
    assert code == 0 and "v0.5.1" in out and "ok" in out

    # Uninstall stops both processes and leaves nothing behind but the stored metrics.
    code, out, err = _flow(capsys, "health", "uninstall", "e2e", "--root", str(root), "--systemd", "no")
    assert code == 0, out + err
    assert "changed" in out
    assert not pid_alive(gpud_pid) and not pid_alive(collector_pid)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"https://127.0.0.1:{gpud_port}/healthz", verify=False, timeout=2)
    files = [p for p, _ in tree(root).items() if (root / p).is_file() or (root / p).is_symlink()]
    assert files == ["collector-started.txt"]  # the test's own record, outside the install
    assert (root / "var/lib/flow/metrics").is_dir()

    code, out, err = _flow(capsys, "health", "uninstall", "e2e", "--root", str(root), "--systemd", "no",
                           "--purge")
    assert code == 0
    assert not (root / "var/lib/flow").exists()


def test_failures_are_reported_per_node(
    sshd: SshdServer, flow_home: Path, root: Path, tarballs: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    closed = Node(host="127.0.0.1", port=free_port(), user=sshd.user, identity_file=str(sshd.client_key.path))
    _inventory(flow_home, _node(sshd), closed)
    code, out, err = _flow(capsys, "health", "install", "e2e", "--root", str(root), "--systemd", "no",
                           "--package", "none", "--gpud-tarball", str(tarballs), "--gpud-sha256", "1" * 64)
    assert code == 1, out + err
    lines = out.splitlines()
    good = next(line for line in lines if line.startswith(f"e2e/{sshd.user}@127.0.0.1:{sshd.port} "))
    assert "failed  gpud: SHA-256 mismatch" in good
    assert "refusing to install it, nothing was changed" in good
    bad = next(line for line in lines if line.startswith(f"e2e/{closed.label} "))
    assert "failed  connect:" in bad
    assert f"--- e2e/{sshd.user}@127.0.0.1:{sshd.port}: last log lines of step gpud:" in out
    assert "2 node(s): 0 changed, 0 unchanged, 2 failed" in out
    assert not (root / "usr").exists() and not (root / "etc").exists()
