"""The `flow health startup-script / install / uninstall / status` command lines (no SSH needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flow.cli.main import main
from flow.fleet import Inventory, Node, Task
from sshd_support import free_port

TOKEN = "cli-Token.123"


def _flow(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _inventory(flow_home: Path) -> None:
    # Unreachable on purpose: nothing in this file may connect.
    Inventory(flow_home / "tasks.yaml", [
        Task(id="task-cli01", name="cli", nodes=(Node(host="127.0.0.1", port=free_port(), user="root"),)),
    ]).save()


def test_startup_script_uses_the_config_and_the_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_GPUD_VERSION", "v0.6.1")
    monkeypatch.setenv("FLOW_GPUD_PORT", "16001")
    code, out, err = _flow(capsys, "health", "startup-script", "--interval", "30", "--task-id", "task-a1b",
                           "--gpud-mirror", "https://mirror.internal/gpud", "--gpud-sha256", "a" * 64)
    assert code == 0, err
    assert out.startswith("#!/bin/sh\n")
    for line in ("GPUD_VERSION=v0.6.1", "GPUD_SOURCE=mirror", f"GPUD_SHA256={'a' * 64}",
                 "FLAGS='--listen-address=127.0.0.1:16001'", "FLOW_METRICS_INTERVAL='30'",
                 "FLOW_TASK_ID='task-a1b'", "FLOW_PACKAGE=flow-health==0.1.0"):
        assert line in out.splitlines()


def test_startup_script_holds_the_token_and_warns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_METRICS_AUTH_TOKEN", TOKEN)
    code, out, err = _flow(capsys, "health", "startup-script")
    assert code == 0
    assert f"FLOW_METRICS_AUTH_TOKEN='{TOKEN}'" in out
    assert "the script holds the metrics auth token" in err


def test_startup_script_when_monitoring_is_disabled(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_HEALTH_MONITORING", "false")
    code, out, _ = _flow(capsys, "health", "startup-script")
    assert code == 0
    assert "health monitoring is DISABLED" in out
    assert "gpud run" not in out


def test_package_none_skips_pip(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _flow(capsys, "health", "startup-script", "--package", "none")
    assert code == 0
    assert "FLOW_PACKAGE=''" in out


def test_token_file_must_be_private(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    code, out, err = _flow(capsys, "health", "startup-script", "--token-file", str(token_file))
    assert code == 2
    assert f"ERROR: --token-file='{token_file}' is readable by others (mode 0644)" in err
    assert TOKEN not in out + err
    token_file.chmod(0o600)
    code, out, err = _flow(capsys, "health", "startup-script", "--token-file", str(token_file))
    assert code == 0
    assert f"FLOW_METRICS_AUTH_TOKEN='{TOKEN}'" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpud-sha256", "xyz", "--gpud-tarball", "/srv/g.tgz"],
         "--gpud-sha256='xyz' is not a SHA-256 digest"),
        (["--gpud-sha256", "a" * 64], "--gpud-sha256 needs --gpud-tarball or --gpud-mirror"),
        (["--gpud-tarball", "/a.tgz", "--gpud-mirror", "https://m/x"], "both set"),
        (["--gpud-version", "latest"], "--gpud-version='latest' is not a GPUd release tag"),
        (["--endpoint", "ftp://x"], "--endpoint='ftp://x' is not a URL"),
        (["--interval", "0"], "Invalid value for '--interval'"),
        (["--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["--systemd", "maybe"], "Invalid value for '--systemd'"),
        (["--root", "relative/dir"], "--root='relative/dir' is not allowed"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _flow(capsys, "health", "startup-script", *args)
    assert code == 2
    assert message in err
    assert out == ""


def test_install_needs_a_task_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _flow(capsys, "health", "install")
    assert code == 2
    assert "name one TASK, or pass --all" in err


def test_install_unknown_task(flow_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _inventory(flow_home)
    code, _, err = _flow(capsys, "health", "install", "nope", "--dry-run")
    assert code == 2
    assert "ERROR:" in err and "nope" in err


def test_install_dry_run_redacts_the_token_and_connects_nowhere(
    flow_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _inventory(flow_home)
    monkeypatch.setenv("FLOW_METRICS_AUTH_TOKEN", TOKEN)
    code, out, err = _flow(capsys, "health", "install", "cli", "--dry-run")
    assert code == 0, err
    assert out.startswith("# ---- task cli (task-cli01): root@127.0.0.1:")
    assert "#!/bin/sh" in out
    assert "FLOW_TASK_ID='task-cli01'" in out
    assert "FLOW_METRICS_AUTH_TOKEN='<redacted>'" in out
    assert TOKEN not in out + err


def test_install_when_disabled_connects_nowhere(
    flow_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _inventory(flow_home)
    monkeypatch.setenv("FLOW_HEALTH_MONITORING", "off")
    code, out, _ = _flow(capsys, "health", "install", "cli")
    assert code == 0
    assert "health monitoring is disabled" in out


def test_uninstall_dry_run(flow_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _inventory(flow_home)
    code, out, _ = _flow(capsys, "health", "uninstall", "cli", "--purge", "--dry-run")
    assert code == 0
    assert "PURGE=1" in out.splitlines()


def test_status_of_an_unreachable_node_is_an_error_row(
    flow_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _inventory(flow_home)
    monkeypatch.setenv("FLOW_SSH_CONNECT_TIMEOUT", "5")
    code, out, _ = _flow(capsys, "health", "status", "cli")
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("cli/root@127.0.0.1:"))
    assert "  error  " in row and "(below)" in row
    # The reason has a line of its own under the table, not a cell that widens every row.
    reason = out.splitlines()[-1]
    assert reason.startswith("cli/root@127.0.0.1:") and "refused" in reason
    assert max(len(line) for line in out.splitlines()[:2]) < 120
