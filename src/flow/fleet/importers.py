"""Importers: hosts from an OpenSSH client config (`~/.ssh/config`) or from a plain host list.

ssh_config: every concrete alias of a `Host` line (no `*`, `?` or `!`) becomes one host; its
HostName, User, Port and IdentityFile are evaluated as OpenSSH does (blocks in file order, the first
value obtained wins, `Host *` defaults included, `Include` followed, `%h` in HostName expanded).
`Match` blocks cannot be evaluated offline and are ignored. Wildcard-only `Host` lines are skipped.

Host list: one `[user@]host[:port] [name]` per line; `#` starts a comment.
"""

from __future__ import annotations

import fnmatch
import glob
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flow.config import read_regular_file
from flow.errors import InventoryError
from flow.fleet.model import FieldError, Node, parse_node_spec

__all__ = [
    "MAX_HOSTS_FILE_BYTES",
    "MAX_SSH_CONFIG_BYTES",
    "ImportedHost",
    "read_hosts_file",
    "read_ssh_config",
    "task_name_for",
]

#: The largest host list read (a line per node: hundreds of thousands of nodes).
MAX_HOSTS_FILE_BYTES = 16 * 1024 * 1024
#: The largest ssh_config (or file it includes) read.
MAX_SSH_CONFIG_BYTES = 4 * 1024 * 1024

_SETTINGS = ("hostname", "user", "port", "identityfile")
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_LINE_RE = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+)(?P<rest>.*)$")


@dataclass(frozen=True)
class ImportedHost:
    """A host found by an importer: the task name to give it, its node, and where it came from."""

    name: str
    node: Node
    source: str  # "file:line"


def task_name_for(text: str) -> str:
    """A valid task name from an alias or host (`[::1]` -> `1`, `a b` -> `a-b`)."""
    return _INVALID_NAME_CHARS.sub("-", text).strip("-._")[:64] or "host"


@dataclass
class _Block:
    patterns: list[str]  # empty: the global section before any Host line
    match: bool  # a Match block (never applies here)
    settings: list[tuple[str, str, str]]  # (keyword, value, file:line)
    where: str = ""  # file:line of the Host line

    def applies(self, alias: str) -> bool:
        if self.match:
            return False
        if not self.patterns:
            return True
        alias = alias.lower()
        positive = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatchcase(alias, pattern[1:].lower() if negated else pattern.lower()):
                if negated:
                    return False
                positive = True
        return positive


def _split(line: str, where: str) -> tuple[str, list[str]]:
    found = _LINE_RE.match(line)
    if found is None:
        raise InventoryError(f"{where}: cannot parse {line!r}; expected: Keyword value")
    try:
        args = shlex.split(found["rest"], comments=False, posix=True)
    except ValueError as exc:
        raise InventoryError(f"{where}: cannot parse {line!r}: {exc}") from None
    return found["key"].lower(), args


def _read_blocks(path: Path, blocks: list[_Block], depth: int = 0) -> None:
    if depth > 8:
        raise InventoryError(f"{path}: Include nested too deep (a loop?)", path=path)
    lines = _read_lines(path, MAX_SSH_CONFIG_BYTES)
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        keyword, args = _split(line, where)
        if keyword == "host":
            blocks.append(_Block(patterns=args, match=False, settings=[], where=where))
        elif keyword == "match":
            blocks.append(_Block(patterns=[], match=args[:1] != ["all"], settings=[], where=where))
        elif keyword == "include":
            for pattern in args:
                full = Path(pattern).expanduser()
                if not full.is_absolute():
                    full = path.parent / full
                for included in sorted(glob.glob(str(full))):
                    _read_blocks(Path(included), blocks, depth + 1)
        elif keyword in _SETTINGS and args:
            blocks[-1].settings.append((keyword, args[0], where))


def read_ssh_config(path: Path, *, match: str | None = None) -> list[ImportedHost]:
    """Concrete hosts of an ssh_config file, in file order; `match` filters aliases (glob).

    Raises:
        InventoryError: the file cannot be read, or a value (e.g. Port) is malformed.
    """
    blocks: list[_Block] = [_Block(patterns=[], match=False, settings=[])]
    _read_blocks(path.expanduser(), blocks)
    aliases: dict[str, str] = {}
    for block in blocks:
        if block.match:
            continue
        for pattern in block.patterns:
            if not any(c in pattern for c in "*?!") and pattern not in aliases:
                aliases[pattern] = block.where
    found: list[ImportedHost] = []
    for alias, where in aliases.items():
        if match is not None and not fnmatch.fnmatchcase(alias, match):
            continue
        values: dict[str, tuple[str, str]] = {}
        for block in blocks:
            if block.applies(alias):
                for keyword, value, line_where in block.settings:
                    values.setdefault(keyword, (value, line_where))
        host = values.get("hostname", (alias, where))[0].replace("%h", alias).replace("%%", "%")
        port: int | None = None
        if "port" in values:
            text, port_where = values["port"]
            if not text.isdigit() or not 1 <= int(text) <= 65535:
                raise InventoryError(f"{port_where}: Port {text!r} is not a port; allowed: 1-65535")
            port = int(text)
        try:
            node = Node(
                host=host,
                port=port,
                user=values["user"][0] if "user" in values else None,
                identity_file=values["identityfile"][0] if "identityfile" in values else None,
            )
        except FieldError as exc:
            raise InventoryError(f"{where}: Host {alias}: {exc.field}: {exc.message}") from None
        found.append(ImportedHost(task_name_for(alias), node, where))
    return found


def read_hosts_file(path: Path) -> list[ImportedHost]:
    """Hosts of a list file: `[user@]host[:port] [name]` per line, `#` comments.

    Raises:
        InventoryError: naming the file and line of a malformed entry.
    """
    return list(_parse_hosts(_read_lines(path.expanduser(), MAX_HOSTS_FILE_BYTES), path))


def _read_lines(path: Path, max_bytes: int) -> list[str]:
    # A regular file, bounded: a FIFO, a device or /dev/zero (an Include can name anything)
    # would otherwise block the import or read without end.
    text = read_regular_file(path, max_bytes=max_bytes, error=InventoryError)
    if text is None:
        raise InventoryError(f"{path}: cannot read: No such file or directory", path=path)
    return text.splitlines()


def _parse_hosts(lines: Iterable[str], path: Path) -> Iterable[ImportedHost]:
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{number}"
        fields = line.split()
        if len(fields) > 2:
            raise InventoryError(
                f"{where}: {line!r} has {len(fields)} fields; allowed: [user@]host[:port] [name]", path=path
            )
        try:
            node = parse_node_spec(fields[0])
        except FieldError as exc:
            raise InventoryError(f"{where}: {exc.message}", path=path) from None
        name = fields[1] if len(fields) == 2 else task_name_for(node.host)
        yield ImportedHost(name, node, where)
