"""Host-key checking: OpenSSH known_hosts files and the strict / accept-new / off policies.

flow reads the user's `~/.ssh/known_hosts` and its own `$FLOW_HOME/known_hosts`, and records new
keys only in its own file, so it never edits the user's. Entries are parsed here (not by asyncssh)
because a changed key must be reported with the file and line that hold the old one, as OpenSSH
does. Lookup follows OpenSSH: the name is `host` on port 22 and `[host]:port` otherwise; patterns
may use `*`, `?`, `!negation` and hashed (`|1|salt|hash`) names; `@cert-authority` and `@revoked`
markers are honoured.

Stricter than OpenSSH on one point: if any key is known for the host and the presented key
matches none of them (whatever its algorithm), the key counts as changed and is refused.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from flow.fs import ensure_private_dir

__all__ = [
    "HostKeyCheck",
    "KnownHostEntry",
    "KnownHostsStore",
    "fingerprint",
    "lookup_name",
    "parse_known_hosts",
]

_MARKERS = {"@cert-authority": "cert-authority", "@revoked": "revoked"}


def lookup_name(host: str, port: int | None) -> str:
    """The name OpenSSH files a host under: `host`, or `[host]:port` off port 22."""
    host = host.lower()
    return host if port in (None, 22) else f"[{host}]:{port}"


def fingerprint(key: Any) -> str:
    """`SHA256:...` fingerprint of an asyncssh public key, as `ssh-keygen -l` prints it."""
    return str(key.get_fingerprint("sha256"))


@functools.lru_cache(maxsize=4096)
def _wildcard_re(pattern: str) -> re.Pattern[str]:
    # Only * and ? are special in known_hosts patterns; brackets are literal ([host]:port).
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.compile(f"^{body}$")


def _hashed_match(pattern: str, name: str) -> bool:
    parts = pattern.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt = base64.b64decode(parts[2])
        digest = base64.b64decode(parts[3])
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


@dataclass(frozen=True)
class KnownHostEntry:
    """One key line of a known_hosts file."""

    path: Path
    line_no: int
    marker: str | None  # None, "cert-authority" or "revoked"
    patterns: str
    key: Any  # asyncssh.SSHKey (untyped library)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line_no}"

    def matches(self, name: str) -> bool:
        """OpenSSH semantics: any positive pattern matches and no negated one does."""
        if self.patterns.startswith("|"):
            return _hashed_match(self.patterns, name)
        matched = False
        for pattern in self.patterns.split(","):
            negated = pattern.startswith("!")
            if _wildcard_re(pattern[1:] if negated else pattern).match(name):
                if negated:
                    return False
                matched = True
        return matched


def parse_known_hosts(text: str, path: Path) -> list[KnownHostEntry]:
    """Parse known_hosts text; lines that do not hold a readable key are skipped, like OpenSSH."""
    entries: list[KnownHostEntry] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = None
        if fields[0].startswith("@"):
            marker = _MARKERS.get(fields[0])
            if marker is None:
                continue
            fields = fields[1:]
        if len(fields) < 3:
            continue
        try:
            key = asyncssh.import_public_key(f"{fields[1]} {fields[2]}")
        except (asyncssh.KeyImportError, ValueError):
            continue
        entries.append(KnownHostEntry(path, line_no, marker, fields[0], key))
    return entries


class _Index:
    """A file's entries, with plain names in a dict: a sweep of N nodes looks each one up, and
    a linear scan of an N-line file per node made that O(N²)."""

    def __init__(self, entries: list[KnownHostEntry]) -> None:
        self.by_name: dict[str, list[KnownHostEntry]] = {}
        self.patterned: list[KnownHostEntry] = []
        for entry in entries:
            names = entry.patterns.lower().split(",")
            if entry.patterns.startswith("|") or any(c in entry.patterns for c in "*?!"):
                self.patterned.append(entry)
            else:
                for name in names:
                    self.by_name.setdefault(name, []).append(entry)

    def matching(self, name: str) -> list[KnownHostEntry]:
        found = list(self.by_name.get(name, ()))
        found.extend(e for e in self.patterned if e.matches(name))
        return sorted(found, key=lambda e: e.line_no)


class KnownHostsStore:
    """The known-hosts files of a sweep, parsed once and re-read when they change on disk."""

    def __init__(self, read_files: Sequence[Path], record_file: Path | None) -> None:
        files = [p.expanduser() for p in read_files]
        self.record_file = record_file.expanduser() if record_file is not None else None
        if self.record_file is not None and self.record_file not in files:
            files.append(self.record_file)
        self.files = tuple(files)
        self._cache: dict[Path, tuple[tuple[int, int, int], _Index]] = {}

    def _index(self, path: Path) -> _Index:
        try:
            info = path.stat()
        except OSError:
            return _Index([])
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return _Index([])
        index = _Index(parse_known_hosts(text, path))
        self._cache[path] = (stamp, index)
        return index

    def lookup(self, host: str, port: int | None) -> list[KnownHostEntry]:
        """Every entry, from every file, whose patterns match this host and port."""
        name = lookup_name(host, port)
        return [e for path in self.files for e in self._index(path).matching(name)]

    def record(self, host: str, port: int | None, key: Any) -> Path:
        """Append `name keytype base64` to flow's own file (mode 0600); returns the file."""
        if self.record_file is None:
            raise ValueError("no known_hosts file to record into")
        name = lookup_name(host, port)
        if any(e.key.public_data == key.public_data and e.marker is None for e in self.lookup(host, port)):
            return self.record_file  # a concurrent connection recorded it already
        path = self.record_file
        ensure_private_dir(path.parent)
        algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
        line = f"{name} {algorithm} {blob}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size:
                with open(path, "rb") as existing:
                    existing.seek(size - 1)
                    if existing.read(1) != b"\n":
                        line = "\n" + line
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        self._cache.pop(path, None)
        return path


class HostKeyCheck:
    """The host-key decision for one connection attempt.

    asyncssh calls `match` (as its `known_hosts` callable) with the host it really connects to,
    after ssh_config's HostName, and `validate` for a key none of the matched entries trusts.
    The verdict is kept here so the error mapping can say *why* a key was refused.
    """

    def __init__(self, store: KnownHostsStore, policy: str) -> None:
        self.store = store
        self.policy = policy
        self.host: str | None = None
        self.port: int | None = None
        self.known: list[KnownHostEntry] = []
        self.verdict: str | None = None  # "changed" or "unknown" once a key was refused
        self.presented: Any = None
        self._pending: Any = None

    def match(self, host: str, addr: str, port: int | None) -> tuple[list[Any], list[Any], list[Any]]:
        self.host, self.port = host, port
        self.known = self.store.lookup(host, port)
        trusted = [e.key for e in self.known if e.marker is None]
        cas = [e.key for e in self.known if e.marker == "cert-authority"]
        revoked = [e.key for e in self.known if e.marker == "revoked"]
        return trusted, cas, revoked

    def validate(self, host: str, addr: str, port: int, key: Any) -> bool:
        self.presented = key
        if any(e.marker is None for e in self.known):
            self.verdict = "changed"
            return False
        if self.policy != "accept-new":
            self.verdict = "unknown"
            return False
        self._pending = key
        return True

    @property
    def offending(self) -> KnownHostEntry | None:
        """The entry a changed key contradicts: one of the same algorithm if any."""
        plain = [e for e in self.known if e.marker is None]
        if not plain:
            return None
        if self.presented is not None:
            algorithm = self.presented.get_algorithm()
            for entry in plain:
                if entry.key.get_algorithm() == algorithm:
                    return entry
        return plain[0]

    def commit(self) -> Path | None:
        """Record a newly accepted key once the key exchange proved the server holds it."""
        if self._pending is None or self.host is None:
            return None
        key, self._pending = self._pending, None
        return self.store.record(self.host, self.port, key)
