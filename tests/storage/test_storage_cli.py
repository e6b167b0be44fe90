"""`flow health cleanup` and `flow health store-stats`, in-process and as the installed command."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from flow.cli.main import main
from flow.health.snapshot import utcnow
from storage.builders import data_files, make_store, series

FLOW = Path(sys.executable).with_name("flow")
DAY = timedelta(days=1)


def old_store(root: Path) -> None:
    """Files 10, 3 and 0 days old (by the real clock: the CLI has no clock to inject)."""
    now = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    make_store(root).write_snapshots(
        series(now - 10 * DAY, 3) + series(now - 3 * DAY, 3) + series(now, 2))


def test_cleanup_compresses_and_deletes_and_says_so(
    flow_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = flow_home / "metrics"
    old_store(root)
    assert main(["health", "cleanup"]) == 0
    out = capsys.readouterr().out
    assert f"metrics store: {root} (compress after 1 d, delete after 7 d)" in out
    assert "compressed 1 file:" in out and "deleted 1 file:" in out and "freed " in out
    names = [Path(p).name for p in data_files(root)]
    assert len(names) == 2 and names[0].endswith(".jsonl.gz") and names[1].endswith(".jsonl")
    assert main(["health", "cleanup"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_dry_run_changes_nothing(flow_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = flow_home / "metrics"
    old_store(root)
    before = data_files(root)
    assert main(["health", "cleanup", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would compress 1 file:" in out and "would delete 1 file:" in out
    assert "would free at least" in out
    assert data_files(root) == before


def test_json_output_and_option_overrides(flow_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = flow_home / "metrics"
    old_store(root)
    assert main(["health", "cleanup", "--json", "--retention-days", "2", "--compress-after-days", "0",
                 "--dry-run"]) == 0
    result = orjson.loads(capsys.readouterr().out)
    assert len(result["deleted"]) == 2 and result["compressed"] == [] and result["dry_run"] is True


def test_settings_come_from_the_environment(
    flow_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = flow_home / "elsewhere"
    monkeypatch.setenv("FLOW_METRICS_DIR", str(root))
    monkeypatch.setenv("FLOW_METRICS_RETENTION_DAYS", "2")
    old_store(root)
    assert main(["health", "cleanup", "--json"]) == 0
    assert len(orjson.loads(capsys.readouterr().out)["deleted"]) == 2


@pytest.mark.parametrize(("args", "message"), [
    (["--retention-days", "0"], "Invalid value for '--retention-days': '0' is out of range; allowed: 1-3650"),
    (["--retention-days", "1000000000"], "'1000000000' is out of range; allowed: 1-3650 days"),
    (["--compress-after-days", "-1"], "Invalid value for '--compress-after-days'"),
    (["--retention-days", "seven"], "'seven' is not a whole number"),
])
def test_bad_options_exit_2_naming_the_option(args: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "cleanup", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_setting_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLOW_METRICS_RETENTION_DAYS", "zero")
    assert main(["health", "cleanup"]) == 2
    assert "FLOW_METRICS_RETENTION_DAYS" in capsys.readouterr().err


def test_files_that_cannot_be_handled_are_errors_exit_1(
    flow_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = flow_home / "metrics"
    old_store(root)
    # Something in the way that no one (not even root) can delete as a file.
    day = (utcnow() - 20 * DAY).date().isoformat()
    (root / "task-a" / f"{day}.jsonl").mkdir()
    assert main(["health", "cleanup"]) == 1
    captured = capsys.readouterr()
    assert f"ERROR: {root / 'task-a' / day}.jsonl: cannot delete" in captured.err
    assert "deleted 1 file:" in captured.out  # the rest was still done


def test_store_stats(flow_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old_store(flow_home / "metrics")
    assert main(["health", "store-stats"]) == 0
    out = capsys.readouterr().out
    assert "tasks          1" in out and "snapshots      8" in out and "corrupt lines  0" in out
    assert main(["health", "store-stats", "--quick", "--json"]) == 0
    stats = orjson.loads(capsys.readouterr().out)
    assert (stats["files"], stats["snapshots"]) == (3, None)


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "cleanup", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and "retention_days" in out and "Exit codes" in out
    assert main(["health", "store-stats", "--help"]) == 0
    assert "--quick" in capsys.readouterr().out
    assert main(["health", "--help"]) == 0
    out = capsys.readouterr().out
    assert "cleanup" in out and "store-stats" in out


@pytest.mark.slow  # one start of the real `flow` (several seconds on a loaded machine)
def test_the_installed_command(flow_home: Path) -> None:
    root = flow_home / "metrics"
    old_store(root)
    env = {**os.environ, "FLOW_HOME": str(flow_home)}
    done = subprocess.run([str(FLOW), "health", "cleanup"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "compressed 1 file:" in done.stdout and "deleted 1 file:" in done.stdout
    assert len(data_files(root)) == 2
