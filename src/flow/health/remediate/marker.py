"""The reason flow writes into the scheduler, and how flow recognises its own.

`flow: <first reason> (<UTC time>)`, e.g. `flow: XID 79 (GPU has fallen off the bus) on GPU 0
(2025-01-02T03:04Z)`. The `flow:` prefix is the marker: a drained node whose reason starts with
it was drained by flow and may be resumed by flow; any other reason belongs to someone else and
is never overwritten or resumed.

Slurm keeps the reason as one string, but `scontrol` and `sinfo` print it unquoted among
`key=value` pairs, and site scripts split that output: the text is cut to printable ASCII
without quotes, backslashes, `=` or shell metacharacters, one line, at most `MAX_REASON_CHARS`
(128: what the Slurm backend keeps; `sinfo -R` shows less, so the marker and the fault come
first).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone

__all__ = ["MARKER", "MAX_REASON_CHARS", "is_ours", "make_reason", "scheduler_safe"]

MARKER = "flow:"
MAX_REASON_CHARS = 128

# Kept: letters, digits, space and punctuation that no parser of scontrol's output trips on.
_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:;()\[\]/+%#@*!?~-]")
_SPACES = re.compile(r"\s+")


def scheduler_safe(text: str) -> str:
    """`text` as the scheduler may keep it: accents folded to ASCII (`°C` becomes `C`), other
    characters dropped, white space (newlines included) one space."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    folded = _SPACES.sub(" ", folded)
    return _SPACES.sub(" ", _UNSAFE.sub("", folded)).strip()


def make_reason(text: str, when: datetime) -> str:
    """`flow: <text> (<UTC minute>)`, at most `MAX_REASON_CHARS`; `text` is cut (with `...`)
    so that the marker and the time always survive."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    stamp = f" ({when.astimezone(timezone.utc):%Y-%m-%dT%H:%MZ})"
    body = scheduler_safe(text) or "unhealthy"
    room = MAX_REASON_CHARS - len(MARKER) - 1 - len(stamp)
    if len(body) > room:
        body = body[:room - 3].rstrip() + "..."
    return f"{MARKER} {body}{stamp}"


def is_ours(reason: str | None) -> bool:
    """True when a scheduler reason carries flow's marker."""
    return bool(reason) and str(reason).lstrip().startswith(MARKER)
