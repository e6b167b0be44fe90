"""`flow health` with no option: is this machine ready to sweep the fleet?

Each check is (name, ok, message); a failed check's message says how to fix it. With --json the
same checks are one document of kind `self_check` (docs/json.md).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import click

from flow.cli.common import EXIT_OK, EXIT_PROBLEMS, print_json
from flow.config import Config
from flow.errors import FlowError
from flow.fleet.inventory import Inventory
from flow.fs import ensure_private_dir
from flow.health.snapshot import format_time, utcnow

__all__ = ["check_lines", "self_check", "self_check_document"]

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


def check_lines(config: Config) -> list[tuple[str, bool, str]]:
    """(check, ok, text) for each check; a failed check's text says how to fix it.

    The checks: configuration, inventory, ssh_key (one per key the inventory names),
    ssh_credentials (for nodes without a key), metrics_store.
    """
    lines: list[tuple[str, bool, str]] = [
        ("configuration", True, f"configuration valid ({config.config_file})")]
    try:
        inventory = Inventory.from_config(config)
    except FlowError as exc:
        lines.append(("inventory", False, f"inventory unreadable: {exc.message}"))
        inventory = None
    if inventory is not None:
        if not inventory.path.exists():
            lines.append(("inventory", False,
                          f"no inventory at {inventory.path}: add a task with `flow tasks add NAME "
                          "--host HOST` or `flow tasks import --ssh-config`"))
        else:
            gpu = sum(1 for t in inventory.tasks if t.has_gpu is not False)
            lines.append(("inventory", True,
                          f"inventory {inventory.path}: {len(inventory)} tasks ({gpu} with GPUs)"))
        keys = {n.identity_path for t in inventory.tasks for n in t.nodes if n.identity_path}
        for key in sorted(keys):
            problem = _key_problem(key)
            lines.append(("ssh_key", problem is None, problem or f"SSH key {key} readable"))
        if any(n.identity_path is None for t in inventory.tasks for n in t.nodes):
            defaults = [Path.home() / ".ssh" / k for k in _DEFAULT_KEYS]
            if os.environ.get("SSH_AUTH_SOCK"):
                lines.append(("ssh_credentials", True, "SSH agent available (SSH_AUTH_SOCK)"))
            elif any(p.exists() for p in defaults):
                lines.append(("ssh_credentials", True, "default SSH key found in ~/.ssh"))
            else:
                lines.append(("ssh_credentials", False,
                              "nodes without --key need an SSH agent or ~/.ssh/id_ed25519: "
                              "run ssh-agent / ssh-add, or give --key"))
    store = config.metrics_dir
    try:
        ensure_private_dir(store)
        with tempfile.NamedTemporaryFile(dir=store, prefix=".selfcheck-"):
            pass
        lines.append(("metrics_store", True, f"metrics store {store} writable"))
    except OSError as exc:
        lines.append(("metrics_store", False,
                      f"metrics store {store} not writable ({exc.strerror}): set FLOW_METRICS_DIR "
                      "or fix the directory's owner/mode"))
    return lines


def self_check_document(checks: list[tuple[str, bool, str]]) -> dict[str, object]:
    """The `--json` form: `ok` (every check passed) and the checks in order."""
    from flow.views.documents import JSON_SCHEMA_VERSION  # imports rich: only for --json

    return {"schema": JSON_SCHEMA_VERSION, "kind": "self_check", "generated_at": format_time(utcnow()),
            "ok": all(ok for _, ok, _ in checks),
            "checks": [{"check": name, "ok": ok, "message": text} for name, ok, text in checks]}


def self_check(config: Config, *, as_json: bool = False) -> int:
    """Print the checks (text or one JSON document); 1 when one needs fixing."""
    checks = check_lines(config)
    if as_json:
        print_json(self_check_document(checks))
    else:
        for _, ok, text in checks:
            click.echo(f"{'ok ' if ok else 'FIX'}  {text}")
    return EXIT_OK if all(ok for _, ok, _ in checks) else EXIT_PROBLEMS
