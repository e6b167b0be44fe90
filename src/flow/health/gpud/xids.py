"""XIDs from GPUd's words: the error-xid state's reason and the XID events' messages.

The texts GPUd has used (shared/gpud/API.md, EXTRA_INFO.md section 11):
- latest:  `XID 79 ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS GPU has fallen off the bus detected on
  GPU PCI:0000:18:00 UUID:GPU-...`; NVLink XIDs as `XID 144.3 (err status 0x...) ...`;
- v0.5.1:  `XID 79 (GPU has fallen off the bus) detected on GPU PCI:0000:18:00 UUID:GPU-...`;
- older:   `XID 79(GPU has fallen off the bus) detected on PCI:0000:04:00`.
One text may name several XIDs; each becomes one `ParsedXid`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from flow.health.gpud.values import opt_int, opt_text

__all__ = ["ParsedXid", "is_xid_source", "parse_xid_payload", "parse_xid_text"]

# `\b` keeps SXID (NVSwitch) lines out; the body stops before the next "XID <n>".
_XID = re.compile(
    r"\bXID[ :]*(?P<code>\d{1,4})(?:\.(?P<sub>\d+))?"
    r"(?P<body>(?:(?!\bXID[ :]*\d).)*?)"
    r"(?:\bdetected on\s+(?:GPU\s+)?(?P<device>[^\s,;]+)(?:\s+UUID:\s*(?P<uuid>[^\s,;]+))?"
    r"|(?=\bXID[ :]*\d)|$)",
    re.DOTALL,
)
_BARE_NUMBER = re.compile(r"^\s*(\d{1,4})\s*$")

_XID_COMPONENTS = ("accelerator-nvidia-error-xid", "accelerator-nvidia-error")


@dataclass(frozen=True)
class ParsedXid:
    code: int
    gpu: str | None  # the GPU's UUID when GPUd gave one, else its PCI id as written
    message: str


def is_xid_source(component: str, name: str = "") -> bool:
    """States and events that carry XIDs: error-xid (v0.5+), error (v0.4), state `error_xid`."""
    return component in _XID_COMPONENTS or name == "error_xid" or "xid" in component.split("-")


def _gpu(device: str | None, uuid: str | None) -> str | None:
    if uuid:
        return uuid
    if device:
        return device
    return None


def parse_xid_text(text: Any) -> list[ParsedXid]:
    """Every XID named in a reason or message; [] when there is none. Never raises."""
    if not isinstance(text, str) or "XID" not in text:
        return []
    found = []
    for match in _XID.finditer(text):
        code = int(match.group("code"))
        gpu = _gpu(match.group("device"), match.group("uuid"))
        found.append(ParsedXid(code=code, gpu=gpu, message=" ".join(match.group(0).split())))
    return found


def parse_xid_payload(extra_info: Any) -> ParsedXid | None:
    """The XID in an event's `extra_info` (v0.4 and stored events): `data` holds
    `{"xid": N, "device_uuid": "PCI:..."}`, or just the number. None when there is none."""
    if not isinstance(extra_info, Mapping):
        return None
    data = extra_info.get("data")
    device = opt_text(extra_info.get("device_uuid"))
    if not isinstance(data, str):
        return None
    bare = _BARE_NUMBER.match(data)
    if bare:
        return ParsedXid(code=int(bare.group(1)), gpu=device, message=f"XID {bare.group(1)}")
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, Mapping):
        return None
    number = opt_int(payload.get("xid"))
    if number is None or number < 0:
        return None
    code: int = number
    gpu = opt_text(payload.get("device_uuid")) or device
    description = opt_text(payload.get("description"))
    message = " ".join(part for part in (f"XID {code}", description, f"detected on {gpu}" if gpu else None)
                       if part)
    return ParsedXid(code=code, gpu=gpu, message=message)
