"""Importers: ~/.ssh/config Host entries (OpenSSH's first-value-wins) and plain host lists."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from flow.errors import InventoryError
from flow.fleet import Node, read_hosts_file, read_ssh_config

SSH_CONFIG = """\
# the user's config
Host gpu-1 gpu-2
    HostName %h.lan
    User ubuntu

Host gpu-1
    HostName 10.0.0.1
    Port 2222

Host gpu-2
    HostName=10.0.0.2
    IdentityFile ~/.ssh/gpu_key

Host bastion !gpu-*
    User admin

Host *.internal
    User ops

Host *
    User fallback
    Port 22
    IdentityFile ~/.ssh/id_ed25519

Match host gpu-1 exec "true"
    User never-applied

Host plain
"""


def test_concrete_hosts_with_openssh_first_value_wins(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(SSH_CONFIG)
    found = read_ssh_config(config)
    assert [h.name for h in found] == ["gpu-1", "gpu-2", "bastion", "plain"]  # wildcards skipped
    nodes = {h.name: h.node for h in found}
    # The first value obtained wins (the shared block's "%h.lan" comes first) and %h expands.
    assert nodes["gpu-1"] == Node(
        host="gpu-1.lan", user="ubuntu", port=2222, identity_file="~/.ssh/id_ed25519"
    )
    assert nodes["gpu-2"] == Node(host="gpu-2.lan", user="ubuntu", port=22, identity_file="~/.ssh/gpu_key")
    assert nodes["bastion"] == Node(host="bastion", user="admin", port=22, identity_file="~/.ssh/id_ed25519")
    assert nodes["plain"] == Node(host="plain", user="fallback", port=22, identity_file="~/.ssh/id_ed25519")
    assert found[0].source == f"{config}:2"


def test_match_filters_aliases(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host gpu-a\n  HostName 1.1.1.1\nHost cpu-a\n  HostName 2.2.2.2\nHost gpu-b\n")
    assert [h.name for h in read_ssh_config(config, match="gpu-*")] == ["gpu-a", "gpu-b"]


def test_include_is_followed_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "fleet.conf").write_text("Host node-9\n  HostName 10.9.9.9\n  Port 2200\n")
    config = tmp_path / "config"
    config.write_text("Include conf.d/*.conf\nHost *\n  User me\n")
    found = read_ssh_config(config)
    assert [(h.name, h.node) for h in found] == [("node-9", Node(host="10.9.9.9", port=2200, user="me"))]


def test_a_bad_port_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host a\n  Port ssh\n")
    with pytest.raises(InventoryError, match=f"{config}:2: Port 'ssh' is not a port"):
        read_ssh_config(config)


def test_hosts_file_with_users_ports_names_and_comments(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(
        "# fleet\n"
        "10.0.0.5\n"
        "ubuntu@10.0.0.6:2222   trainer   # with a name\n"
        "\n"
        "[fe80::1]:22\n"
    )
    found = read_hosts_file(hosts)
    assert [(h.name, h.node, h.source) for h in found] == [
        ("10.0.0.5", Node(host="10.0.0.5"), f"{hosts}:2"),
        ("trainer", Node(host="10.0.0.6", user="ubuntu", port=2222), f"{hosts}:3"),
        ("fe80-1", Node(host="fe80::1", port=22), f"{hosts}:5"),
    ]


def test_hosts_file_errors_name_the_line(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("ok-host\nbad:port:x:y:z host extra\n")
    with pytest.raises(InventoryError, match=f"{hosts}:2: .* has 3 fields"):
        read_hosts_file(hosts)
    hosts.write_text("ok-host\nh:notaport\n")
    with pytest.raises(InventoryError, match=f"{hosts}:2: 'notaport' in 'h:notaport' is not a port"):
        read_hosts_file(hosts)


def _within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """What `call` raised, failing the test if it is still running after `seconds` (a read
    that blocks must not hang the suite)."""
    caught: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            caught.append(None)
        except BaseException as exc:  # handed back to the test
            caught.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert caught, f"still reading after {seconds} s"
    return caught[0]


def test_a_fifo_or_a_device_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "hosts.fifo"
    os.mkfifo(fifo)  # no writer: reading it would wait forever
    refused = _within(10, lambda: read_hosts_file(fifo))
    assert isinstance(refused, InventoryError) and "is a FIFO, not a regular file" in str(refused)
    config = tmp_path / "config"
    config.write_text("Include /dev/zero\nHost a\n  HostName a.example\n")  # would read forever
    refused = _within(10, lambda: read_ssh_config(config))
    assert isinstance(refused, InventoryError) and "/dev/zero is a character device" in str(refused)


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_bytes(b"ok-host\nbad-\xff-host\n")
    with pytest.raises(InventoryError, match="line 2: byte 0xff is not UTF-8"):
        read_hosts_file(hosts)
