"""SlurmBackend against a real slurmctld (tests/slurm_support.py), here and over a real sshd.

The shared cluster's nodes are split among the tests (each drains nodes of its own), so the
tests do not depend on their order. What Slurm says is checked with Slurm's own tools:
`scontrol show node` and `sinfo -R`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flow.errors import ConfigError
from flow.health.remediate.backend import NodeState
from flow.health.remediate.slurm import (
    MAX_REASON_CHARS,
    SlurmBackend,
    parse_node_line,
    slurm_node_name,
    slurm_reason,
)
from flow.ssh import SSHOptions
from slurm_support import SlurmCluster, SlurmFactory
from sshd_support import SshdServer

REASON = "flow: XID 79 GPU has fallen off the bus on GPU 3 (2026-08-01T12:00:00Z)"


def _odd_reason(marker: Path) -> str:
    """Quotes, a newline, unicode, escapes and shell syntax that would create `marker` if run."""
    return (
        "flow: \"q\" 'single' ünïcødé ✓ \x1b]0;title\x07 a\nb \\ "
        f"$(touch {marker}) `touch {marker}`; touch {marker}"
    )


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path, so that the whole odd reason fits MAX_REASON_CHARS."""
    path = Path(tempfile.mkdtemp(prefix="fl", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _ssh_options() -> SSHOptions:
    return SSHOptions(host_key_policy="off", known_hosts_file=None, user_known_hosts_files=(),
                      ssh_config_files=(), connect_timeout_s=10.0)


# -- pure parsing ---------------------------------------------------------------------------


def test_parse_state_flags_and_reason_without_user_and_time() -> None:
    line = ("NodeName=gpu007 Arch=x86_64 CoresPerSocket=1 State=IDLE+DRAIN ThreadsPerCore=1 "
            "Partitions=gpu Reason=flow: [x@y] bad GPU [root@2026-08-01T12:00:00] Comment=(null)\n")
    state = parse_node_line("gpu007", line)
    assert state == NodeState(name="gpu007", states=frozenset({"IDLE", "DRAIN"}),
                              reason="flow: [x@y] bad GPU")
    assert state.drained


def test_parse_not_responding_star_and_no_reason() -> None:
    state = parse_node_line("gpu7", "NodeName=gpu7 State=DOWN* CPUTot=1\n")
    assert state.states == {"DOWN", "NOT_RESPONDING"}
    assert state.reason is None and state.error is None and not state.drained


def test_parse_other_node_or_garbage_is_an_error() -> None:
    assert parse_node_line("gpu1", "NodeName=gpu10 State=IDLE\n").error
    assert "no State=" in (parse_node_line("gpu1", "NodeName=gpu1 CPUTot=1\n").error or "")


def test_reason_is_cleaned_single_line_and_cut() -> None:
    assert slurm_reason("  a\nb\x1b[2J\tc \x00 ") == "a b c"
    long = slurm_reason("x" * 1000)
    assert len(long) == MAX_REASON_CHARS and long.endswith("…")


@pytest.mark.parametrize("name", ["gpu[001-100]", "gpu1,gpu2", "-h", "NodeName=x", "gpu 1", "", "ü1"])
def test_host_lists_and_odd_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="allowed: one Slurm node name"):
        slurm_node_name(name)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"scontrol": "-v"}, "scontrol="), ({"slurm_conf": "slurm.conf"}, "slurm_conf="),
     ({"timeout_s": float("nan")}, "timeout_s="), ({"timeout_s": 601}, "timeout_s="),
     ({"max_concurrency": 0}, "max_concurrency=")],
)
def test_bad_settings_name_the_culprit(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SlurmBackend(**kwargs)  # type: ignore[arg-type]


def test_missing_scontrol_is_a_clear_error() -> None:
    backend = SlurmBackend("/nonexistent/bin/scontrol")
    state = asyncio.run(backend.node_state("gpu001"))
    assert state.error is not None and "not found" in state.error and "slurm-client" in state.error
    result = asyncio.run(backend.drain("gpu001", REASON))
    assert not result.ok and "not found" in result.answer


# -- the real slurmctld -----------------------------------------------------------------------


def test_node_state_of_an_idle_node(slurm: SlurmCluster) -> None:
    state = asyncio.run(SlurmBackend(slurm_conf=str(slurm.conf)).node_state("gpu002"))
    assert state == NodeState(name="gpu002", states=frozenset({"IDLE"}))


def test_slurm_conf_from_the_environment(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    state = asyncio.run(SlurmBackend().node_state("gpu003"))
    assert state.error is None and state.states == {"IDLE"}


def test_drain_shows_in_scontrol_and_sinfo(slurm: SlurmCluster) -> None:
    result = asyncio.run(SlurmBackend(slurm_conf=str(slurm.conf)).drain("gpu010", REASON))
    assert result.ok, result.answer
    line = slurm.show_node("gpu010")
    assert "State=IDLE+DRAIN " in line
    assert f"Reason={REASON} [" in line
    assert slurm.node_fields("gpu010") == ("drained", REASON)
    assert slurm.reasons()["gpu010"] == REASON
    assert any(row.startswith(REASON[:20]) and row.endswith("gpu010") for row in slurm.sinfo_r().splitlines())


def test_resume_returns_the_node_to_idle(slurm: SlurmCluster) -> None:
    backend = SlurmBackend(slurm_conf=str(slurm.conf))
    assert asyncio.run(backend.drain("gpu011", REASON)).ok
    result = asyncio.run(backend.resume("gpu011"))
    assert result.ok, result.answer
    state, _reason = slurm.node_fields("gpu011")
    assert state.startswith("idle") and "drain" not in state
    assert "gpu011" not in slurm.reasons()
    assert asyncio.run(backend.node_state("gpu011")).reason is None


def test_resume_twice_is_decided_by_reading_back(slurm: SlurmCluster) -> None:
    # The second `State=RESUME` exits 1 ("Invalid node state specified"): the node is already in
    # service, which the read back shows, so it is done. scontrol's exit status never decides.
    backend = SlurmBackend(slurm_conf=str(slurm.conf))
    assert asyncio.run(backend.drain("gpu014", REASON)).ok
    assert asyncio.run(backend.resume("gpu014")).ok
    again = asyncio.run(backend.resume("gpu014"))
    assert again.ok, again.answer
    assert "Invalid node state specified" in again.answer and "reads back State=IDLE" in again.answer


def test_drain_of_an_unknown_node_says_what_slurm_said(slurm: SlurmCluster) -> None:
    result = asyncio.run(SlurmBackend(slurm_conf=str(slurm.conf)).drain("gpu999", REASON))
    assert not result.ok
    assert "Invalid node name specified" in result.answer
    assert "gpu999 not found" in result.answer
    state = asyncio.run(SlurmBackend(slurm_conf=str(slurm.conf)).node_state("gpu999"))
    assert state.error is not None and "gpu999 not found" in state.error


def test_a_host_list_never_reaches_slurm(slurm: SlurmCluster) -> None:
    backend = SlurmBackend(slurm_conf=str(slurm.conf))
    for name in ("gpu[090-099]", "gpu090,gpu091", "gpu090 gpu091"):
        result = asyncio.run(backend.drain(name, REASON))
        assert not result.ok and "allowed: one Slurm node name" in result.answer
    assert not any(node.startswith("gpu09") for node in slurm.reasons())


def test_odd_reason_is_stored_inertly(slurm: SlurmCluster, short_tmp: Path) -> None:
    marker = short_tmp / "ran"
    text = _odd_reason(marker)
    result = asyncio.run(SlurmBackend(slurm_conf=str(slurm.conf)).drain("gpu012", text))
    assert result.ok, result.answer
    expected = slurm_reason(text)
    assert "\n" not in expected and "\x1b" not in expected and "ünïcødé ✓ a b \\" in expected
    assert expected.endswith(f"; touch {marker}")
    assert slurm.reasons()["gpu012"] == expected
    assert not marker.exists()


def test_long_reason_is_cut(slurm: SlurmCluster) -> None:
    result = asyncio.run(SlurmBackend(slurm_conf=str(slurm.conf)).drain("gpu013", REASON * 10))
    assert result.ok, result.answer
    stored = slurm.reasons()["gpu013"]
    assert len(stored) == MAX_REASON_CHARS and stored.startswith(REASON) and stored.endswith("…")


def test_controller_stopped_mid_run(slurm_factory: SlurmFactory) -> None:
    cluster = slurm_factory.start()
    backend = SlurmBackend(slurm_conf=str(cluster.conf))
    assert asyncio.run(backend.node_state("gpu020")).states == {"IDLE"}
    cluster.stop_controller()

    state = asyncio.run(backend.node_state("gpu020"))
    assert state.error is not None and "Unable to contact slurm controller" in state.error
    assert not state.states and not state.drained
    drained = asyncio.run(backend.drain("gpu020", REASON))
    assert not drained.ok
    assert "Unable to contact slurm controller" in drained.answer
    assert "reading gpu020 back failed" in drained.answer
    resumed = asyncio.run(backend.resume("gpu021"))
    assert not resumed.ok and "Unable to contact slurm controller" in resumed.answer

    cluster.start_controller()  # nothing was done meanwhile
    assert "gpu020" not in cluster.reasons()


def test_a_hung_controller_is_cut_at_the_timeout(slurm_factory: SlurmFactory) -> None:
    cluster = slurm_factory.start()
    process = cluster.daemons["slurmctld"].process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)  # accepts connections (the kernel does), never answers
    try:
        backend = SlurmBackend(slurm_conf=str(cluster.conf), timeout_s=0.5)
        state = asyncio.run(backend.node_state("gpu030"))
        result = asyncio.run(backend.drain("gpu030", REASON))
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert state.error is not None and "gave no answer within 0.5 s" in state.error
    assert not result.ok and "gave no answer within 0.5 s" in result.answer
    # The request was sent before scontrol was killed: slurmctld may still apply it; the answer
    # says so rather than claiming either outcome.
    assert "whether Slurm applies the update is unknown" in result.answer
    assert "unknown" not in (state.error or "")


# -- over SSH on a login node -------------------------------------------------------------------


def test_drain_and_resume_over_ssh(slurm: SlurmCluster, sshd: SshdServer, short_tmp: Path) -> None:
    marker = short_tmp / "ran"
    text = _odd_reason(marker)

    async def go() -> tuple[NodeState, bool, str, NodeState, bool]:
        async with SlurmBackend(slurm_conf=str(slurm.conf), login=sshd.params(),
                                ssh_options=_ssh_options()) as backend:
            before = await backend.node_state("gpu040")
            drained = await backend.drain("gpu040", text)
            after = await backend.node_state("gpu040")
            stored = slurm.reasons().get("gpu040", "")
            resumed = await backend.resume("gpu040")
            return before, drained.ok, stored, after, resumed.ok

    before, drained, stored, after, resumed = asyncio.run(go())
    assert before.states == {"IDLE"}
    assert drained and after.drained and after.reason == slurm_reason(text)
    assert stored == slurm_reason(text)
    assert resumed and "gpu040" not in slurm.reasons()
    assert not marker.exists()
    assert "Accepted publickey" in sshd.log()


def test_missing_scontrol_on_the_login_node(slurm: SlurmCluster, sshd: SshdServer) -> None:
    backend = SlurmBackend("/nonexistent/bin/scontrol", slurm_conf=str(slurm.conf),
                           login=sshd.params(), ssh_options=_ssh_options())

    async def go() -> NodeState:
        async with backend:
            return await backend.node_state("gpu041")

    state = asyncio.run(go())
    assert state.error is not None and f"not found on {sshd.params().label} (exit 127)" in state.error


def test_unreachable_login_node(slurm: SlurmCluster, sshd: SshdServer) -> None:
    params = sshd.params()
    sshd.stop()
    backend = SlurmBackend(slurm_conf=str(slurm.conf), login=params, ssh_options=_ssh_options())
    result = asyncio.run(backend.drain("gpu042", REASON))
    assert not result.ok and "did not run" in result.answer
    assert "gpu042" not in slurm.reasons()
