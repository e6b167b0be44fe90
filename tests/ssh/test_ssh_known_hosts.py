"""known_hosts parsing and lookup (OpenSSH semantics), the ssh argv builder, and params validation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path

import asyncssh
import pytest

from flow.config import load_config
from flow.errors import ConfigError
from flow.ssh import KnownHostsStore, SSHOptions, SSHParams, ssh_argv
from flow.ssh.known_hosts import lookup_name, parse_known_hosts


def _key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519").convert_to_public()


def _public(key: asyncssh.SSHKey) -> str:
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def _hashed(name: str) -> str:
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def test_lookup_name_follows_openssh() -> None:
    assert lookup_name("Node-1", None) == "node-1"
    assert lookup_name("node-1", 22) == "node-1"
    assert lookup_name("10.0.0.5", 2222) == "[10.0.0.5]:2222"


def test_parse_matches_plain_wildcard_negated_and_hashed_entries(tmp_path: Path) -> None:
    keys = [_key() for _ in range(5)]
    text = "\n".join(
        [
            "# a comment",
            "",
            f"node-1,10.0.0.1 {_public(keys[0])}",
            f"gpu-* ,!gpu-bad {_public(keys[1])}".replace(" ,", ","),
            f"[10.0.0.9]:2222 {_public(keys[2])} a comment",
            f"{_hashed('secret-host')} {_public(keys[3])}",
            f"@revoked revoked-host {_public(keys[4])}",
            "garbage line",
            "host ssh-ed25519 not-base64!!",
        ]
    )
    path = tmp_path / "known_hosts"
    entries = parse_known_hosts(text, path)
    assert [e.line_no for e in entries] == [3, 4, 5, 6, 7]  # unreadable lines skipped, like OpenSSH
    path.write_text(text)
    store = KnownHostsStore([path], None)
    assert [e.key for e in store.lookup("10.0.0.1", 22)] == [keys[0]]
    assert [e.key for e in store.lookup("GPU-7", None)] == [keys[1]]
    assert store.lookup("gpu-bad", None) == []  # negated
    assert [e.key for e in store.lookup("10.0.0.9", 2222)] == [keys[2]]
    assert store.lookup("10.0.0.9", 22) == []  # another port is another host
    assert [e.key for e in store.lookup("secret-host", None)] == [keys[3]]
    revoked = store.lookup("revoked-host", None)
    assert [(e.marker, e.key) for e in revoked] == [("revoked", keys[4])]
    assert revoked[0].where == f"{path}:7"


def test_record_appends_to_flows_file_only_with_mode_0600(tmp_path: Path) -> None:
    user_file = tmp_path / "user_known_hosts"
    user_file.write_text("other-host " + _public(_key()))  # no trailing newline
    flow_file = tmp_path / "flow" / "known_hosts"
    store = KnownHostsStore([user_file], flow_file)
    key = _key()
    assert store.record("10.0.0.5", 2222, key) == flow_file
    assert flow_file.read_text() == f"[10.0.0.5]:2222 {_public(key)}\n"
    assert stat.S_IMODE(flow_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(flow_file.parent.stat().st_mode) == 0o700
    assert user_file.read_text().count("\n") == 0  # the user's file is never written
    store.record("10.0.0.5", 2222, key)  # already known: not recorded twice
    assert flow_file.read_text().count("\n") == 1
    assert [e.key for e in store.lookup("10.0.0.5", 2222)] == [key]


def test_record_adds_a_newline_when_the_file_lacks_one(tmp_path: Path) -> None:
    flow_file = tmp_path / "known_hosts"
    flow_file.write_text("a " + _public(_key()))
    KnownHostsStore([], flow_file).record("b", None, _key())
    assert [line.split()[0] for line in flow_file.read_text().splitlines()] == ["a", "b"]


def test_params_validate_and_label() -> None:
    assert SSHParams(host="h", port=2222, user="u").label == "u@h:2222"
    assert SSHParams(host="h").label == "h"
    with pytest.raises(ConfigError, match="port=0"):
        SSHParams(host="h", port=0)
    with pytest.raises(ConfigError, match="host="):
        SSHParams(host="two words")
    with pytest.raises(ConfigError, match="host_key_policy='sometimes'"):
        SSHOptions(host_key_policy="sometimes")


def test_options_from_config_use_flow_home(tmp_path: Path) -> None:
    config = load_config(
        {"FLOW_HOME": str(tmp_path), "FLOW_SSH_HOST_KEY_POLICY": "strict", "FLOW_SSH_CONNECT_TIMEOUT": "3"}
    )
    options = SSHOptions.from_config(config)
    assert options.known_hosts_file == tmp_path / "known_hosts"
    assert options.host_key_policy == "strict"
    assert options.connect_timeout_s == 3.0


def test_ssh_argv_carries_params_policy_and_both_known_hosts_files(tmp_path: Path) -> None:
    options = SSHOptions(
        host_key_policy="accept-new",
        known_hosts_file=tmp_path / "flow kh",
        user_known_hosts_files=(Path("/home/u/.ssh/known_hosts"),),
        connect_timeout_s=4.5,
    )
    params = SSHParams(host="10.0.0.5", port=2222, user="ubuntu", key_paths=(Path("/k/id"),))
    argv = ssh_argv(params, options, ["nvidia-smi", "-L"])
    assert argv == [
        "ssh", "-p", "2222", "-l", "ubuntu", "-i", "/k/id",
        "-o", "StrictHostKeyChecking=accept-new",
        "-o", f'UserKnownHostsFile="{tmp_path}/flow kh" /home/u/.ssh/known_hosts',
        "-o", "ConnectTimeout=5",
        "--", "10.0.0.5", "nvidia-smi", "-L",
    ]  # fmt: skip


def test_ssh_argv_for_strict_off_and_no_config(tmp_path: Path) -> None:
    strict = SSHOptions(host_key_policy="strict", known_hosts_file=tmp_path / "kh", user_known_hosts_files=())
    assert "StrictHostKeyChecking=yes" in ssh_argv(SSHParams(host="h"), strict)
    off = SSHOptions(host_key_policy="off", ssh_config_files=())
    argv = ssh_argv(SSHParams(host="h", use_agent=False), off)
    assert "StrictHostKeyChecking=no" in argv and "UserKnownHostsFile=/dev/null" in argv
    assert "IdentityAgent=none" in argv
    assert argv[argv.index("-F") + 1] == "/dev/null"
