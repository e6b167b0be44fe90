"""Text that comes from a node, made safe to store, render and export: `clean_text`.

A node's GPUd (component names, reasons, event messages, versions, host names, metric labels)
and its SSH server (disconnect and channel-refusal reasons) are not trusted: a string carrying
`ESC]0;...BEL` or `ESC[2J` would retitle or clear the operator's terminal when a table shows it,
and one of megabytes would bloat every stored snapshot. Each such string passes through
`clean_text` once, where it enters (the GPUd adapters, the SSH error mapping), so everything
downstream (snapshots, JSONL, --json, rich tables, alerts) holds only clean text.

The rules, in order:
1. Terminal escape sequences are removed whole, payload included: CSI (`ESC [` ... final byte),
   OSC, DCS, SOS, PM and APC strings (up to BEL or ST, or to the end when unterminated), and every
   other `ESC` sequence; the 8-bit C1 forms (0x9b CSI, 0x9d OSC, ...) likewise.
2. Line breaks and tabs (`\\t \\n \\v \\f \\r`, NEL, U+2028, U+2029) become one space each: every
   field is single-line, and words on two lines stay two words.
3. Every other control character is removed: C0 (0x00-0x1f), DEL (0x7f), C1 (0x80-0x9f), the
   bidirectional overrides and marks that can make a terminal show text in another order
   (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), and lone surrogates (which no JSON
   encoder can write).
4. A string longer than `MAX_FIELD_CHARS` (4096) is cut to that length, its last character `…`.

`clean_text(clean_text(s)) == clean_text(s)` for every string, and the result holds none of the
characters above.
"""

from __future__ import annotations

import re

__all__ = ["MAX_FIELD_CHARS", "clean_text"]

#: The longest string a node may put into one field; GPUd's longest real reasons are a few
#: hundred characters.
MAX_FIELD_CHARS = 4096

_ELLIPSIS = "…"
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI: parameters, intermediates, final byte
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC/DCS/SOS/PM/APC
    r"|\x1b[ -/]*[0-~]?"  # every other escape (nF, Fp, Fe, Fs), and a lone ESC
)
_BREAK = re.compile("[\t\n\v\f\r\x85\u2028\u2029]")
_DROP = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def clean_text(value: str, *, limit: int = MAX_FIELD_CHARS) -> str:
    """`value` without terminal escapes or control characters, at most `limit` characters long.

    Never raises for any string. See the module docstring for the rules.
    """
    if len(value) <= limit and value.isprintable():
        return value  # the common case: isprintable() is False for every character removed below
    # Cleaning a huge string costs its length; what survives is at most `limit` characters, and
    # sequences rarely exceed a few dozen, so a generous prefix is enough.
    text = value[: limit * 4] if len(value) > limit * 4 else value
    text = _DROP.sub("", _BREAK.sub(" ", _SEQUENCE.sub("", text)))
    if len(text) > limit:
        text = text[: limit - 1] + _ELLIPSIS
    return text
