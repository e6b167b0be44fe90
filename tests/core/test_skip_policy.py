"""The test command never reports success with tests skipped for a missing dependency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

SAMPLE = '''
import pytest
def test_runs(): pass
def test_needs_a_server(): pytest.skip("prometheus is not installed (Debian package prometheus)")
def test_cannot_apply(): pytest.skip("not applicable as root: permissions cannot refuse root")
'''


def run(tmp_path: Path, sample: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(sample)
    environment = {k: v for k, v in os.environ.items() if k != "FLOW_TESTS_ALLOW_SKIPS"}
    environment.update(env, PYTHONPATH=str(TESTS))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "skip_policy",
               "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)]
    return subprocess.run(command,
                          capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120)


def test_a_skip_for_a_missing_dependency_fails_the_run_naming_it(tmp_path: Path) -> None:
    result = run(tmp_path, SAMPLE)
    assert result.returncode == 1, result.stdout
    assert "tests skipped for a missing dependency" in result.stdout
    assert "prometheus is not installed (Debian package prometheus)" in result.stdout
    assert "not applicable as root" not in result.stdout.split("missing dependency")[1]


def test_not_applicable_skips_pass_and_a_partial_run_can_be_allowed(tmp_path: Path) -> None:
    assert run(tmp_path, SAMPLE.replace("prometheus is not installed", "not applicable: x")).returncode == 0
    allowed = run(tmp_path, SAMPLE, FLOW_TESTS_ALLOW_SKIPS="1")
    assert allowed.returncode == 0 and "passing anyway" in allowed.stdout
