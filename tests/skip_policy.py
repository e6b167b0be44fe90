"""A pytest plugin: a run that skipped tests for want of a dependency fails, naming each.

A suite that reports success without its end-to-end tests (no sshd, no Prometheus) says
nothing about them. A skip whose reason starts with "not applicable" is a test that cannot
apply on this machine (one that needs a non-root user, one for machines without NVML) and is
only listed. `FLOW_TESTS_ALLOW_SKIPS=1` lets a partial run pass; it still lists what was skipped.
"""

from __future__ import annotations

import os

import pytest

__all__ = ["NOT_APPLICABLE", "pytest_sessionfinish"]

#: The prefix of a skip reason for a test that cannot apply here.
NOT_APPLICABLE = "not applicable"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Set the exit status to 1 when a test was skipped for a missing dependency."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    reasons: dict[str, int] = {}
    for report in reporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
        reason = reason.removeprefix("Skipped: ")
        if not reason.startswith(NOT_APPLICABLE):
            reasons[reason] = reasons.get(reason, 0) + 1
    if not reasons:
        return
    reporter.write_sep("=", "tests skipped for a missing dependency", red=True)
    for reason, count in sorted(reasons.items()):
        reporter.write_line(f"{count:4d}  {reason}")
    if os.environ.get("FLOW_TESTS_ALLOW_SKIPS") == "1":
        reporter.write_line("FLOW_TESTS_ALLOW_SKIPS=1: passing anyway")
        return
    reporter.write_line("install them (scripts/test-deps.sh, which `make test` runs) or set "
                        "FLOW_TESTS_ALLOW_SKIPS=1 for a partial run")
    if session.exitstatus == 0:
        session.exitstatus = 1
