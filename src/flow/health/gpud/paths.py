"""Which GPUd paths a user may ask for by name (`flow health gpud TASK PATH`), and how.

`plan_request` turns what the user typed (a path, perhaps with `?k=v&...`, and `k=v` pairs)
into the GET that GPUd understands, or a `ValueError` naming the bad part and what is allowed:
- a path is GPUd's, not a URL: it starts with `/`, holds only `A-Z a-z 0-9 / . _ -`, has no
  `.`/`..` segment and no empty one, and is at most `MAX_PATH_CHARS` long (the tunnel decides
  the host, so a scheme or a host in it is a mistake, and nothing can climb out of GPUd's tree);
- query keys are identifiers, values at most `MAX_QUERY_VALUE_CHARS` of `A-Z a-z 0-9 . _ , : + -`;
- `startTime`/`endTime` are integer unix seconds, as GPUd parses them;
- `/v1/events` (and `/v1/info`) without `startTime` get one: GPUd's default is *now*, which
  returns no events at all, so the window goes back `since_s` (default a day);
- a path that no GPUd serves but users look for (`/v1/gpu`) is refused before any connection,
  naming where that data is (`MISSING_PATHS`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

__all__ = [
    "DEFAULT_EVENTS_SINCE_S",
    "KNOWN_PATHS",
    "MAX_PATH_CHARS",
    "MAX_QUERY_PAIRS",
    "MAX_QUERY_VALUE_CHARS",
    "MAX_SINCE_S",
    "MISSING_PATHS",
    "WINDOWED_PATHS",
    "GpudRequest",
    "MissingPathError",
    "known_paths_text",
    "missing_path_message",
    "parse_since",
    "plan_request",
]

#: GPUd's GET paths (v0.5+; v0.4 lacks /machine-info and trigger-check), what each shows.
KNOWN_PATHS: Mapping[str, str] = {
    "/healthz": "whether the GPUd process is up (nothing more)",
    "/machine-info": "versions, GPU model, UUIDs, bus ids and serials, disks, NICs (v0.5+)",
    "/v1/components": "every registered component name",
    "/v1/states": "each component's health, reason and suggested repair (?components=a,b)",
    "/v1/events": "events in a window (?components=, startTime=, endTime=: unix seconds)",
    "/v1/metrics": "the sampled metrics (?components=, since=30m)",
    "/v1/info": "states, events and metrics together (?components=, startTime=, since=)",
    "/v1/components/trigger-check": "runs one component's check now (?componentName=NAME, v0.5+)",
    "/metrics": "the Prometheus text exposition",
}

#: Paths users expect from older docs that no GPUd version serves.
MISSING_PATHS = frozenset({"/v1/gpu", "/v1/gpus"})

#: Paths that take an event window (`startTime`, unix seconds; GPUd's default is now).
WINDOWED_PATHS = frozenset({"/v1/events", "/v1/info"})
#: Paths that take `since=` (a Go duration; GPUd's default is 30m).
_SINCE_PATHS = frozenset({"/v1/metrics", "/v1/info"})

DEFAULT_EVENTS_SINCE_S = 24 * 3600
MAX_SINCE_S = 366 * 24 * 3600
MAX_PATH_CHARS = 256
MAX_QUERY_VALUE_CHARS = 512
MAX_QUERY_PAIRS = 16

_PATH_CHARS = re.compile(r"[A-Za-z0-9/._-]*")
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_VALUE = re.compile(r"[A-Za-z0-9._,:+-]*")
_SINCE = re.compile(r"(?:\d{1,9}[dhms])+")
_SINCE_PART = re.compile(r"(\d+)([dhms])")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_TIME_KEYS = ("startTime", "endTime")


class MissingPathError(ValueError):
    """A path no GPUd serves (`MISSING_PATHS`); `missing_path_message` says where its data is."""

    def __init__(self, path: str) -> None:
        super().__init__(f"GPUd has no {path}")
        self.path = path


@dataclass(frozen=True)
class GpudRequest:
    """One GET to GPUd: the path, its query, and what flow added to it (said to the user)."""

    path: str
    params: dict[str, str] = field(default_factory=dict)
    #: Human notes on what flow filled in, e.g. the events window.
    notes: tuple[str, ...] = ()

    def display(self) -> str:
        """`/v1/events?startTime=...`: the request as GPUd sees it."""
        query = "&".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.path}?{query}" if query else self.path


def known_paths_text() -> str:
    return ", ".join(KNOWN_PATHS)


def missing_path_message(path: str, task: str) -> tuple[str, str]:
    """(message, hint) for a path in `MISSING_PATHS`."""
    return (
        f"GPUd has no {path} (no version serves it); GPU data is in /v1/states and /v1/metrics "
        "(components accelerator-nvidia-*: temperature, power, memory, utilization, clock-speed, "
        "ecc, remapped-rows, hw-slowdown, nvlink, error-xid) and in /machine-info (model, UUIDs, "
        "bus ids, serials)",
        f"try: flow health gpud {task} /v1/metrics --query components=accelerator-nvidia-temperature"
        f"  or: flow health --task {task}",
    )


def parse_since(text: str) -> int:
    """`24h`, `30m`, `90s`, `7d`, `1h30m` -> seconds (1 s to 366 days).

    Raises:
        ValueError: anything else, naming the value and what is allowed.
    """
    raw = text.strip()
    allowed = "allowed: a duration such as 30m, 24h, 7d or 1h30m (units d, h, m, s), 1s to 366d"
    if len(raw) > 40 or not _SINCE.fullmatch(raw):
        raise ValueError(f"{text!r} is not allowed; {allowed}")
    seconds = sum(int(n) * _UNIT_S[unit] for n, unit in _SINCE_PART.findall(raw))
    if not 1 <= seconds <= MAX_SINCE_S:
        raise ValueError(f"{text!r} is out of range; {allowed}")
    return seconds


def _check_path(path: str) -> str:
    allowed = ("allowed: a GPUd path such as /v1/states (it starts with '/', no scheme or host: "
               "flow reaches the node's GPUd through its SSH tunnel)")
    if "://" in path or (path and not path.startswith("/")):
        raise ValueError(f"{path!r} is not a GPUd path; {allowed}")
    if not path:
        raise ValueError(f"an empty path is not allowed; {allowed}")
    if len(path) > MAX_PATH_CHARS:
        raise ValueError(f"the path is {len(path)} characters; allowed: at most {MAX_PATH_CHARS}")
    if not _PATH_CHARS.fullmatch(path):
        bad = next(c for c in path if not _PATH_CHARS.fullmatch(c))
        raise ValueError(f"{path!r} holds {bad!r}; allowed in a path: letters, digits and / . _ -")
    segments = path[1:].split("/")
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"{path!r} holds a '.' or '..' segment; allowed: a plain GPUd path")
    if path != "/" and "" in segments:
        raise ValueError(f"{path!r} holds an empty segment ('//' or a trailing '/'); "
                         "allowed: a plain GPUd path such as /v1/states")
    return path


def _check_pair(key: str, value: str, shown: str) -> None:
    if not _KEY.fullmatch(key):
        raise ValueError(f"{shown!r}: the key {key!r} is not allowed; allowed: a name of letters, "
                         "digits and _ (e.g. components, since, startTime)")
    if len(value) > MAX_QUERY_VALUE_CHARS:
        raise ValueError(f"{shown[:40]!r}...: the value is {len(value)} characters; allowed: at "
                         f"most {MAX_QUERY_VALUE_CHARS}")
    if not _VALUE.fullmatch(value):
        bad = next(c for c in value if not _VALUE.fullmatch(c))
        raise ValueError(f"{shown!r}: the value holds {bad!r}; allowed: letters, digits and . _ , : + -")
    if key in _TIME_KEYS and not (value.isascii() and value.isdigit()):
        raise ValueError(f"{shown!r}: GPUd takes {key} as integer unix seconds (e.g. "
                         f"{key}=1767225600); allowed: digits only (or use --since 24h)")


def _split_pair(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep:
        raise ValueError(f"{pair!r} is not KEY=VALUE; allowed: e.g. components=cpu,memory")
    return key, value


def plan_request(
    target: str, queries: Sequence[str] = (), *, since_s: int | None = None, now_s: float,
) -> GpudRequest:
    """The GET for `target` (a path, optionally `?k=v&...`) plus the `queries` pairs (`k=v`).

    Args:
        since_s: the window for /v1/events and /v1/info (default a day), and `since` for
            /v1/metrics and /v1/info when given.
        now_s: the current unix time (the end of the window).

    Raises:
        MissingPathError: a path in `MISSING_PATHS` (checked first: no query can save it).
        ValueError: a bad path, pair or window, naming it and what is allowed.
    """
    if since_s is not None and not (1 <= since_s <= MAX_SINCE_S):
        raise ValueError(f"since_s={since_s!r} is out of range; allowed: 1 to {MAX_SINCE_S} seconds")
    if not math.isfinite(now_s):
        raise ValueError(f"now_s={now_s!r} is not allowed; allowed: a finite unix time")
    path, _, inline = target.partition("?")
    path = _check_path(path)
    if path in MISSING_PATHS:
        raise MissingPathError(path)
    pairs: list[tuple[str, str, str]] = []
    if inline:
        try:
            parsed = parse_qsl(inline, keep_blank_values=True, strict_parsing=True,
                               max_num_fields=MAX_QUERY_PAIRS)
        except ValueError:
            raise ValueError(f"the query {inline[:80]!r} is not k=v&k=v; allowed: e.g. "
                             "/v1/states?components=cpu (or --query components=cpu)") from None
        pairs += [(k, v, f"{k}={v}") for k, v in parsed]
    for pair in queries:
        key, value = _split_pair(pair)
        pairs.append((key, value, pair))
    if len(pairs) > MAX_QUERY_PAIRS:
        raise ValueError(f"{len(pairs)} query pairs; allowed: at most {MAX_QUERY_PAIRS}")
    params: dict[str, str] = {}
    for key, value, shown in pairs:
        _check_pair(key, value, shown)
        if key in params:
            raise ValueError(f"{key!r} is given twice ({key}={params[key]} and {shown}); allowed: once")
        params[key] = value
    notes: list[str] = []
    if path in WINDOWED_PATHS and "startTime" not in params:
        window = since_s if since_s is not None else DEFAULT_EVENTS_SINCE_S
        params["startTime"] = str(int(now_s) - window)
        notes.append(f"events of the last {_duration(window)} (startTime={params['startTime']}; "
                     "--since changes it)")
    if path in _SINCE_PATHS and "since" not in params and since_s is not None:
        params["since"] = f"{since_s}s"
    return GpudRequest(path=path, params=params, notes=tuple(notes))


def _duration(seconds: int) -> str:
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % scale == 0 and (unit != "d" or seconds > 86400):
            return f"{seconds // scale}{unit}"
    return f"{seconds}s"
