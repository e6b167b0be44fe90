"""Hostile GPUd nodes (issue 12, classes 5 and 8): unbounded answers and text that reaches a terminal.

The simulator's hostile scenarios (huge-body, gzip-bomb, drip, control-chars) over real HTTPS,
read by the real client; the sweep end to end through a real OpenSSH sshd; SSH refusal reasons
from a real (in-process) asyncssh server. Time bounds here only prove "it did not hang".
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flow.cli.main import main
from flow.errors import SSHError
from flow.fleet.inventory import Inventory
from flow.fleet.model import Node, Task
from flow.health.gpud import GpudClient, read_gpud
from flow.health.sim import FleetThread, start_fleet_in_thread
from flow.health.sim.hostile import CONTROL_TEXT
from flow.health.snapshot import Snapshot
from flow.ssh import SSHOptions, SSHParams, connect
from flow.text import MAX_FIELD_CHARS, clean_text
from sshd_support import SshdServer

DEADLINE_S = 4.0
HANG_SLACK_S = 5.0  # generous: proves the read ended by its deadline, measures nothing
MEMORY_BOUND = 200 * 1024 * 1024  # generous: the limits hold 16 MiB; the bombs inflate to GiBs
# What must never come out of flow from a node: ESC, BEL, CSI/OSC in their 8-bit forms, NUL,
# the right-to-left override, and the JSON escapes a raw ESC or BEL would be written as.
FORBIDDEN = ("\x1b", "\x07", "\x9b", "\x9d", "\x00", "\u202e", "\r", "\\u001b", "\\u0007", "\\u0000")
CONTROL = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    "\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}


@pytest.fixture(scope="module")
def hostile() -> Iterator[dict[str, str]]:
    """One node per hostile scenario, plus a healthy one: scenario -> URL."""
    names = ["healthy", "huge-body", "gzip-bomb", "drip", "control-chars"]
    fleet = start_fleet_in_thread(len(names), scenario=names, gpu_count=2)
    try:
        yield {node.scenario: node.url for node in fleet.nodes}
    finally:
        fleet.stop()


def _read(url: str, **limits: int) -> tuple[Snapshot, float, int]:
    """Read once; the snapshot, the seconds it took and the peak memory allocated meanwhile."""

    async def go() -> Snapshot:
        async with GpudClient(url, timeout_s=2.0, deadline_s=DEADLINE_S, **limits) as client:
            return await client.read(task_id="t", node="n")

    tracemalloc.start()
    started = time.monotonic()
    try:
        snap = asyncio.run(go())
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return snap, elapsed, peak


@pytest.mark.parametrize(("scenario", "limit"), [
    ("gzip-bomb", "exceeds 16 MiB decompressed"),  # 2 MiB on the wire, 2 GiB inflated
    ("huge-body", "exceeds 16 MiB,"),  # 256 MiB of JSON, chunked: no length to refuse it by
])
def test_an_oversized_answer_is_bad_response_naming_the_limit(
    hostile: dict[str, str], scenario: str, limit: str
) -> None:
    snap, elapsed, peak = _read(hostile[scenario])
    assert not snap.gpud.reachable and snap.gpud.state == "bad_response"
    assert limit in (snap.gpud.error or "") and "/v1/states" in (snap.gpud.error or ""), snap.gpud.error
    assert elapsed < DEADLINE_S + HANG_SLACK_S
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.0f} MiB held while reading a {scenario}"


def test_the_limits_apply_to_what_is_sent_and_to_what_it_inflates_to(hostile: dict[str, str]) -> None:
    url = hostile["healthy"]  # GPUd's real answers: /v1/states is ~1 kB gzip, ~14 kB decoded here
    snap, _, _ = _read(url, max_compressed_bytes=512)
    assert snap.gpud.state == "bad_response" and "exceeds 512 bytes compressed" in (snap.gpud.error or "")
    snap, _, _ = _read(url, max_body_bytes=4096)
    assert snap.gpud.state == "bad_response" and "exceeds 4 KiB decompressed" in (snap.gpud.error or "")
    snap, _, _ = _read(url)
    assert snap.gpud.state == "ok" and len(snap.gpus) == 2  # the defaults are well above real answers
    with pytest.raises(ValueError, match="max_body_bytes=0 is not allowed"):
        GpudClient(url, max_body_bytes=0)


def test_a_drip_is_cut_at_the_deadline(hostile: dict[str, str]) -> None:
    # One byte a second: a 2 s read timeout never fires; only the deadline ends it.
    snap, elapsed, _ = _read(hostile["drip"])
    assert snap.gpud.state == "timeout" and "deadline" in (snap.gpud.error or "")
    assert elapsed < DEADLINE_S + HANG_SLACK_S


def test_control_characters_are_cleaned_where_they_enter(hostile: dict[str, str]) -> None:
    snap = asyncio.run(read_gpud(hostile["control-chars"], task_id="t", node="n", deadline_s=DEADLINE_S))
    assert snap.gpud.state == "ok" and len(snap.gpus) == 2
    text = orjson.dumps(snap.to_dict()).decode()
    for bad in FORBIDDEN:
        assert bad not in text, f"{bad!r} reached the snapshot"
    # Cleaned, not dropped: the readable words of each string stay.
    assert all("red  evil end" in c.reason for c in snap.components)
    assert any(e.message == "the node rebooted red  evil end" and e.name == "red  evil endreboot"
               and e.component == "red  evil endaccelerator-nvidia-info" for e in snap.events)
    assert (snap.gpud.hostname or "").endswith(" red  evil end")


@given(st.text(alphabet=st.characters(codec=None), max_size=300)
       | st.lists(st.sampled_from(["\x1b", "[", "]", "0;", "2J", "\x07", "\\", "\x9b", "\x9d", "\x9c",
                                   "P", "a", " ", "\n", "\u202e", "\ud800", "é"]), max_size=40).map("".join))
def test_clean_text_leaves_no_control_character_and_is_idempotent(value: str) -> None:
    cleaned = clean_text(value)
    assert not CONTROL & set(cleaned)
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in cleaned)
    assert clean_text(cleaned) == cleaned
    assert len(cleaned) <= MAX_FIELD_CHARS


def test_clean_text_removes_whole_sequences_and_bounds_length() -> None:
    assert clean_text("\x1b]0;owned\x07GPU \x1b[1;31mhot\x1b[0m") == "GPU hot"
    assert clean_text("a\r\nb\tc") == "a  b c"
    assert clean_text(CONTROL_TEXT) == "red  evil end"
    long = clean_text("x" * 100_000)
    assert len(long) == MAX_FIELD_CHARS and long.endswith("…")
    assert clean_text("60 °C, ok") == "60 °C, ok"


# -- end to end: `flow health --gpu` / `--task` through a real sshd --------------------------------


@pytest.fixture
def isolated_home(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOW_SSH_CONNECT_TIMEOUT", "4")
    return isolated_home


@pytest.mark.slow
def test_a_sweep_survives_hostile_nodes_and_prints_none_of_their_escapes(
    flow_home: Path, isolated_home: Path, sshd: SshdServer, capsys: pytest.CaptureFixture[str],
) -> None:
    names = ["healthy", "huge-body", "gzip-bomb", "drip", "control-chars"]
    fleet: FleetThread = start_fleet_in_thread(len(names), scenario=names, gpu_count=2)
    try:
        tasks = [Task(id=f"task-hostile{i}", name=f"hostile-{node.scenario}", gpud_port=node.port,
                      nodes=(Node(host="127.0.0.1", port=sshd.port, user=sshd.user,
                                  identity_file=str(sshd.client_key.path)),))
                 for i, node in enumerate(fleet.nodes)]
        Inventory(flow_home / "tasks.yaml", tasks).save()
        timeout_s = 6.0
        started = time.monotonic()
        assert main(["health", "--gpu", "--json", "--timeout", str(timeout_s)]) == 0
        elapsed = time.monotonic() - started
        doc = orjson.loads(capsys.readouterr().out)
        assert elapsed < timeout_s + 15  # the drip and the bombs cost their node, not the sweep
        nodes = {n["task_name"]: n for n in doc["nodes"]}
        assert nodes["hostile-healthy"]["verdict"]["status"] == "healthy"
        assert nodes["hostile-control-chars"]["gpud"]["state"] == "ok"
        for name, state, words in (("hostile-huge-body", "bad_response", "exceeds 16 MiB"),
                                   ("hostile-gzip-bomb", "bad_response", "exceeds 16 MiB decompressed"),
                                   ("hostile-drip", "timeout", "deadline")):
            gpud = nodes[name]["gpud"]
            assert (gpud["state"], nodes[name]["verdict"]["status"]) == (state, "unknown"), gpud
            assert words in gpud["error"]

        outputs = {}
        assert main(["health", "--gpu", "--timeout", str(timeout_s)]) == 0
        outputs["--gpu"] = capsys.readouterr().out
        assert main(["health", "--task", "task-hostile4"]) == 0
        outputs["--task"] = capsys.readouterr().out
        assert main(["health", "--task", "task-hostile4", "--json"]) == 0
        outputs["--task --json"] = capsys.readouterr().out
        assert "red" in outputs["--task --json"] and "evil end" in outputs["--task --json"]
        stored = flow_home / "metrics"
        outputs["the store"] = "".join(p.read_text() for p in stored.rglob("*.jsonl"))
        assert "hostile-control-chars" in outputs["the store"]
        for where, text in outputs.items():
            for bad in FORBIDDEN:
                assert bad not in text, f"{bad!r} from the node reached {where}"
    finally:
        fleet.stop()


# -- SSH: what the server says -----------------------------------------------------------------------


def test_an_ssh_servers_refusal_reason_is_cleaned() -> None:
    """The node's sshd names why it refused a channel (and why it hung up): its text, cleaned."""
    server_key = asyncssh.generate_private_key("ssh-ed25519")

    class Hostile(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            if username == "hangup":
                raise asyncssh.DisconnectError(asyncssh.DISC_BY_APPLICATION, f"bye {CONTROL_TEXT}")
            return False

        def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                                 orig_port: int) -> bool:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, f"refused {CONTROL_TEXT}")

    async def go() -> tuple[SSHError, SSHError]:
        server = await asyncssh.listen("127.0.0.1", 0, server_host_keys=[server_key], server_factory=Hostile)
        port = server.sockets[0].getsockname()[1]
        options = SSHOptions(host_key_policy="off", user_known_hosts_files=(), ssh_config_files=(),
                             connect_timeout_s=5.0)
        try:
            params = SSHParams(host="127.0.0.1", port=port, user="demo", use_agent=False)
            async with await connect(params, options) as conn:
                try:
                    await conn.tunnel("127.0.0.1", 15132)
                except SSHError as exc:
                    refused = exc
            try:
                await connect(SSHParams(host="127.0.0.1", port=port, user="hangup", use_agent=False), options)
            except SSHError as exc:
                hung_up = exc
            return refused, hung_up
        finally:
            server.close()
            await server.wait_closed()

    refused, hung_up = asyncio.run(go())
    assert refused.kind == "gpud_not_listening" and "refused red  evil end" in refused.message
    assert "bye red  evil end" in hung_up.message
    for error in (refused, hung_up):
        for bad in FORBIDDEN:
            assert bad not in f"{error.message} {error.hint or ''}", (bad, error.message)


def test_an_sftp_servers_error_reason_is_cleaned(tmp_path: Path) -> None:
    """`flow logs` copies files over SFTP: the server's refusal is its text, cleaned."""
    server_key = asyncssh.generate_private_key("ssh-ed25519")

    class AnyClient(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return False

    class Refusing(asyncssh.SFTPServer):
        def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
            raise asyncssh.SFTPPermissionDenied(f"denied {CONTROL_TEXT}")

        lstat = stat

    async def go() -> SSHError:
        server = await asyncssh.listen("127.0.0.1", 0, server_host_keys=[server_key],
                                       server_factory=AnyClient, sftp_factory=Refusing)
        port = server.sockets[0].getsockname()[1]
        options = SSHOptions(host_key_policy="off", user_known_hosts_files=(), ssh_config_files=(),
                             connect_timeout_s=5.0)
        try:
            params = SSHParams(host="127.0.0.1", port=port, user="demo", use_agent=False)
            async with await connect(params, options) as conn:
                with pytest.raises(SSHError) as failed:
                    await conn.download("/var/log", ["gpud.log"], tmp_path)
                return failed.value
        finally:
            server.close()
            await server.wait_closed()

    error = asyncio.run(go())
    assert "denied red  evil end" in error.message, error.message
    for bad in FORBIDDEN:
        assert bad not in error.message, (bad, error.message)
