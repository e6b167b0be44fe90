"""`flow health status` reading a node, and reading the scripts' progress output.

The status script runs against an isolated root whose store and cursor are written by the real
MetricsStore and CursorFile, so the formats cannot drift apart unnoticed.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flow.health.install import InstallOptions, layout, parse_report, parse_status, status_script
from flow.health.snapshot import Snapshot, format_time, utcnow
from flow.health.storage import MetricsStore
from flow.health.streaming import CursorFile, CursorState
from install.support import run_script


def test_status_of_an_empty_root(root: Path) -> None:
    options = InstallOptions(root=str(root), systemd="no", gpud_port=1)
    status = parse_status("n1", run_script(status_script(options)).stdout)
    assert status.error is None
    assert (status.systemd, status.gpud_installed, status.collector_installed) == (False, False, False)
    assert status.gpud_service == "stopped" and status.collector_service == "stopped"
    assert status.gpud_healthy is False
    assert status.store_files == 0
    assert (status.last_sample, status.cursor, status.backlog_records) == (None, None, None)


def test_status_reads_the_store_and_the_cursor(root: Path) -> None:
    store_dir = root / layout.STORE_DIR.lstrip("/")
    now = utcnow().replace(microsecond=0)
    old = [now - timedelta(days=2, minutes=10 - i) for i in range(3)]
    new = [now - timedelta(minutes=30 - i) for i in range(5)]
    store = MetricsStore(store_dir, 7, 1, auto_cleanup=False)
    store.write_snapshots(Snapshot(timestamp=t, task_id="task-st1") for t in old + new)
    store.cleanup()  # seals the older day as .jsonl.gz
    assert sorted(p.suffix for p in store_dir.glob("*/*.jsonl*")) == [".gz", ".jsonl"]
    # The endpoint acknowledged everything up to the 2nd snapshot of today.
    CursorFile(root / layout.CURSOR_FILE.lstrip("/")).save(
        CursorState(destination="https://m.example.com/in", delivered=5, last_timestamp=format_time(new[1])))

    script = status_script(InstallOptions(root=str(root), systemd="no"))
    status = parse_status("n1", run_script(script).stdout)
    assert status.error is None
    assert status.store_files == 2
    assert status.store_bytes > 0
    assert status.store_newest is not None and status.store_newest.startswith("/var/lib/flow/metrics/")
    assert status.last_sample == new[-1]
    assert status.cursor is not None and status.cursor["delivered"] == 5
    assert status.last_delivered == format_time(new[1])
    assert status.backlog_records == 3


def test_status_without_its_end_marker_is_an_error() -> None:
    status = parse_status("n1", "systemd=no\ngpud.installed=yes\n")
    assert status.error == "the status script did not finish"


def test_report_of_a_changed_run() -> None:
    out = ("[flow] preflight: ok: linux/amd64\n[flow] gpud: changed: installed gpud v0.5.1\n"
           "[flow] gpud-config: unchanged: /etc/default/gpud is up to date\n[flow] result: changed\n")
    report = parse_report("n1", 0, out)
    assert report.outcome == "changed"
    assert [s.step for s in report.changed_steps] == ["gpud"]
    assert report.message == "1 step(s) changed"


def test_report_of_an_unchanged_run() -> None:
    report = parse_report("n1", 0, "[flow] gpud: unchanged: ok\n[flow] result: unchanged\n")
    assert (report.outcome, report.message, report.failed_step) == ("ok", "unchanged", None)


def test_report_of_a_failed_step_keeps_its_log_lines() -> None:
    out = ("[flow] gpud: failed: SHA-256 mismatch for /srv/g.tgz\n[flow] log| == gpud\n"
           "[flow] log| tar: not a gzip file\n[flow] result: failed\n")
    report = parse_report("n1", 1, out)
    assert (report.outcome, report.failed_step) == ("failed", "gpud")
    assert report.message == "SHA-256 mismatch for /srv/g.tgz"
    assert report.log_tail == ("== gpud", "tar: not a gzip file")


def test_report_of_a_script_that_died_uses_stderr() -> None:
    report = parse_report("n1", 137, "[flow] preflight: ok: x\n", "sh: 1: killed\n")
    assert (report.outcome, report.failed_step) == ("failed", "preflight")
    assert report.message == "the script stopped without a result (exit status 137)"
    assert report.log_tail == ("sh: 1: killed",)


def test_a_result_line_without_exit_zero_is_a_failure() -> None:
    report = parse_report("n1", 1, "[flow] result: changed\n")
    assert report.outcome == "failed"
