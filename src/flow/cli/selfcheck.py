"""`flow health` with no option: is this machine ready to sweep the fleet?"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import click

from flow.cli.common import EXIT_OK, EXIT_PROBLEMS
from flow.config import Config
from flow.errors import FlowError
from flow.fleet.inventory import Inventory
from flow.fs import ensure_private_dir

__all__ = ["check_lines", "self_check"]

_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def _key_problem(path: Path) -> str | None:
    try:
        info = path.stat()
    except OSError as exc:
        return f"cannot read SSH key {path}: {exc.strerror}"
    if not os.access(path, os.R_OK):
        return f"SSH key {path} is not readable by this user"
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"SSH key {path} is readable by others (ssh refuses it): chmod 600 {path}"
    return None


def check_lines(config: Config) -> list[tuple[bool, str]]:
    """(ok, text) for each check; a failed check's text says how to fix it."""
    lines: list[tuple[bool, str]] = [(True, f"configuration valid ({config.config_file})")]
    try:
        inventory = Inventory.from_config(config)
    except FlowError as exc:
        lines.append((False, f"inventory unreadable: {exc.message}"))
        inventory = None
    if inventory is not None:
        if not inventory.path.exists():
            lines.append((False, f"no inventory at {inventory.path}: add a task with "
                                 "`flow tasks add NAME --host HOST` or `flow tasks import --ssh-config`"))
        else:
            gpu = sum(1 for t in inventory.tasks if t.has_gpu is not False)
            lines.append((True, f"inventory {inventory.path}: {len(inventory)} tasks ({gpu} with GPUs)"))
        keys = {n.identity_path for t in inventory.tasks for n in t.nodes if n.identity_path}
        for key in sorted(keys):
            problem = _key_problem(key)
            lines.append((problem is None, problem or f"SSH key {key} readable"))
        if any(n.identity_path is None for t in inventory.tasks for n in t.nodes):
            defaults = [Path.home() / ".ssh" / k for k in _DEFAULT_KEYS]
            if os.environ.get("SSH_AUTH_SOCK"):
                lines.append((True, "SSH agent available (SSH_AUTH_SOCK)"))
            elif any(p.exists() for p in defaults):
                lines.append((True, "default SSH key found in ~/.ssh"))
            else:
                lines.append((False, "nodes without --key need an SSH agent or ~/.ssh/id_ed25519: "
                                     "run ssh-agent / ssh-add, or give --key"))
    store = config.metrics_dir
    try:
        ensure_private_dir(store)
        with tempfile.NamedTemporaryFile(dir=store, prefix=".selfcheck-"):
            pass
        lines.append((True, f"metrics store {store} writable"))
    except OSError as exc:
        lines.append((False, f"metrics store {store} not writable ({exc.strerror}): set FLOW_METRICS_DIR "
                             "or fix the directory's owner/mode"))
    return lines


def self_check(config: Config) -> int:
    failed = False
    for ok, text in check_lines(config):
        click.echo(f"{'ok ' if ok else 'FIX'}  {text}")
        failed = failed or not ok
    return EXIT_PROBLEMS if failed else EXIT_OK
