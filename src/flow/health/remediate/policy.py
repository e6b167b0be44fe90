"""The remediation policy: which verdicts take a node out of service, and when it comes back.

`health.remediation` in config.yaml (every key optional; docs/configuration.md lists them):

```yaml
health:
  remediation:
    backend: slurm                 # slurm | command
    drain_on: [xid_fatal, ecc_uncorrected, remap_failed, gpu_missing, gpu_silent]
    drain_on_repair_actions: [HARDWARE_INSPECTION]   # a GPUd component that asks for it
    drain_unknown: false           # a node that cannot be read looks like a network fault
    immediate_on: [remap_failed, gpu_missing]        # faults that never heal by themselves
    immediate_xids: [79]           # GPU fallen off the bus
    consecutive_sweeps: 2          # critical this many sweeps in a row before a drain
    healthy_sweeps: 3              # healthy this many sweeps in a row before a resume
    max_nodes: 5                   # the brake: drained by flow within window_hours ...
    max_fraction: 0.1              # ... and as a fraction of the fleet
    window_hours: 1
    command: [/usr/local/sbin/site-drain]            # backend: command
    command_timeout: 60
    scontrol: scontrol             # backend: slurm
    slurm_conf: null
    login_node: null               # [user@]host[:port]: run scontrol there over SSH
```
A bad key or value raises `ConfigError` naming `health.remediation.<key>`, the value and what
is allowed. The decisions here are pure functions of snapshots (their verdicts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from flow.config import NumberRange, parse_bool
from flow.errors import ConfigError
from flow.health.snapshot import HealthStatus, Reason, Snapshot

__all__ = [
    "BACKENDS",
    "COMMAND_TIMEOUT_RANGE",
    "DEFAULT_DRAIN_ON",
    "DEFAULT_DRAIN_ON_REPAIR_ACTIONS",
    "DEFAULT_IMMEDIATE_ON",
    "DEFAULT_IMMEDIATE_XIDS",
    "MAX_FRACTION_RANGE",
    "MAX_NODES_RANGE",
    "SWEEPS_RANGE",
    "WINDOW_HOURS_RANGE",
    "RemediationSettings",
    "drain_reasons",
    "heals_by_itself",
    "is_healthy",
]

BACKENDS = ("slurm", "command")
#: Hardware faults: fatal XIDs, uncorrected ECC since boot, failed row remapping, and GPUs that
#: are missing or silent. Lifetime (aggregate) uncorrected ECC is history, not a present fault.
DEFAULT_DRAIN_ON: tuple[str, ...] = ("xid_fatal", "ecc_uncorrected", "remap_failed", "gpu_missing",
                                     "gpu_silent")
DEFAULT_DRAIN_ON_REPAIR_ACTIONS: tuple[str, ...] = ("HARDWARE_INSPECTION",)
DEFAULT_IMMEDIATE_ON: tuple[str, ...] = ("remap_failed", "gpu_missing")
DEFAULT_IMMEDIATE_XIDS: tuple[int, ...] = (79,)
REPAIR_ACTIONS = ("IGNORE_NO_ACTION_REQUIRED", "REBOOT_SYSTEM", "HARDWARE_INSPECTION",
                  "CHECK_USER_APP_AND_GPU")

SWEEPS_RANGE = NumberRange(1, 100, "sweeps", integer=True)
MAX_NODES_RANGE = NumberRange(0, 100000, "nodes", integer=True)
MAX_FRACTION_RANGE = NumberRange(0, 1, "of the fleet (0.1 is 10 %)")
WINDOW_HOURS_RANGE = NumberRange(0, 720, "hours", low_open=True)
COMMAND_TIMEOUT_RANGE = NumberRange(0.1, 3600, "seconds")
XID_RANGE = NumberRange(1, 65535, integer=True)

_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_PREFIX = "health.remediation"


@dataclass(frozen=True, kw_only=True)
class RemediationSettings:
    """`health.remediation`, validated. Defaults are the documented ones."""

    backend: str = "slurm"
    drain_on: tuple[str, ...] = DEFAULT_DRAIN_ON
    drain_on_repair_actions: tuple[str, ...] = DEFAULT_DRAIN_ON_REPAIR_ACTIONS
    drain_unknown: bool = False
    immediate_on: tuple[str, ...] = DEFAULT_IMMEDIATE_ON
    immediate_xids: tuple[int, ...] = DEFAULT_IMMEDIATE_XIDS
    consecutive_sweeps: int = 2
    healthy_sweeps: int = 3
    max_nodes: int = 5
    max_fraction: float = 0.1
    window_hours: float = 1.0
    command: tuple[str, ...] = ()
    command_timeout: float = 60.0
    scontrol: str = "scontrol"
    slurm_conf: str | None = None
    login_node: str | None = None

    def __post_init__(self) -> None:
        if self.backend == "command" and not self.command:
            raise ConfigError(f"{_PREFIX}.backend='command' needs {_PREFIX}.command; allowed: "
                              "a list such as [/usr/local/sbin/site-drain, --cluster, a]")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> RemediationSettings:
        """Build from config.yaml's `health.remediation` mapping, validating every key."""
        if not raw:
            return cls()
        allowed = [f.name for f in fields(cls)]
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in allowed:
                raise ConfigError(f"{_PREFIX}.{key} is not a remediation setting; allowed: "
                                  + ", ".join(allowed))
            kwargs[str(key)] = _PARSERS[str(key)](value, name=f"{_PREFIX}.{key}")
        return cls(**kwargs)

    def brake_limit(self, fleet_size: int) -> int:
        """How many nodes flow may hold drained within the window: `max_nodes`, and
        `max_fraction` of the fleet rounded down but never below one (a small fleet could
        otherwise never drain a broken node). `max_nodes: 0` or `max_fraction: 0` drain none."""
        if self.max_nodes == 0 or self.max_fraction == 0:
            return 0
        by_fraction = max(1, int(self.max_fraction * fleet_size + 1e-9))
        return min(self.max_nodes, by_fraction)


def _codes(value: object, *, name: str) -> tuple[str, ...]:
    items = _list(value, name=name, what="reason codes")
    for item in items:
        if not isinstance(item, str) or not _CODE_RE.match(item):
            raise ConfigError(f"{name}: {item!r} is not a reason code; allowed: lower-case codes "
                              "such as xid_fatal, ecc_uncorrected (docs/scoring.md lists them)")
    return tuple(str(i) for i in items)


def _repair_actions(value: object, *, name: str) -> tuple[str, ...]:
    items = _list(value, name=name, what="GPUd repair actions")
    for item in items:
        if item not in REPAIR_ACTIONS:
            raise ConfigError(f"{name}: {item!r} is not a GPUd repair action; allowed: "
                              + ", ".join(REPAIR_ACTIONS))
    return tuple(str(i) for i in items)


def _xids(value: object, *, name: str) -> tuple[int, ...]:
    return tuple(XID_RANGE.parse_int(item, name=name) for item in _list(value, name=name, what="XIDs"))


def _list(value: object, *, name: str, what: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name}={value!r} is not a list; allowed: a list of {what}")
    if len(value) > 256:
        raise ConfigError(f"{name} has {len(value)} items; allowed: at most 256")
    return list(value)


def _argv(value: object, *, name: str) -> tuple[str, ...]:
    items = _list(value, name=name, what="arguments (the program first)")
    for item in items:
        if not isinstance(item, str) or not item or "\0" in item or len(item) > 4096:
            raise ConfigError(f"{name}: {item!r} is not an argument; allowed: non-empty strings "
                              "(the program first, run without a shell)")
    return tuple(str(i) for i in items)


def _text(value: object, *, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "\n\0"):
        raise ConfigError(f"{name}={value!r} is not allowed; allowed: a one-line string")
    return value.strip()


def _opt_text(value: object, *, name: str) -> str | None:
    return None if value is None else _text(value, name=name)


def _backend(value: object, *, name: str) -> str:
    text = str(value).strip().lower()
    if text not in BACKENDS:
        raise ConfigError(f"{name}={value!r} is not allowed; allowed: {', '.join(BACKENDS)}")
    return text


def _bool(value: object, *, name: str) -> bool:
    return parse_bool(value, name=name)


def _whole(limits: NumberRange) -> Any:
    return lambda value, *, name: limits.parse_int(value, name=name)


def _number(limits: NumberRange) -> Any:
    return lambda value, *, name: limits.parse(value, name=name)


_PARSERS: dict[str, Any] = {
    "backend": _backend,
    "drain_on": _codes,
    "drain_on_repair_actions": _repair_actions,
    "drain_unknown": _bool,
    "immediate_on": _codes,
    "immediate_xids": _xids,
    "consecutive_sweeps": _whole(SWEEPS_RANGE),
    "healthy_sweeps": _whole(SWEEPS_RANGE),
    "max_nodes": _whole(MAX_NODES_RANGE),
    "max_fraction": _number(MAX_FRACTION_RANGE),
    "window_hours": _number(WINDOW_HOURS_RANGE),
    "command": _argv,
    "command_timeout": _number(COMMAND_TIMEOUT_RANGE),
    "scontrol": _text,
    "slurm_conf": _opt_text,
    "login_node": _opt_text,
}


def _repair_actions_of(reason: Reason) -> tuple[str, ...]:
    # Newer verdicts carry GPUd's enums on the reason; older stored ones only in `action`,
    # which scoring writes as the enums joined by ", " for a component's state.
    carried: tuple[str, ...] = tuple(getattr(reason, "repair_actions", ()) or ())
    if carried:
        return carried
    return tuple(a.strip() for a in (reason.action or "").split(",") if a.strip() in REPAIR_ACTIONS)


def drain_reasons(snapshot: Snapshot, settings: RemediationSettings) -> tuple[Reason, ...]:
    """The reasons of `snapshot`'s verdict that call for a drain (most severe first, as the
    verdict orders them); empty when none does.

    An Unknown verdict (GPUd not reached, no GPU data) drains only with `drain_unknown`: from
    the operator's machine a network fault looks the same as a dead node.
    """
    verdict = snapshot.verdict
    if verdict is None:
        return ()
    if verdict.status is HealthStatus.UNKNOWN:
        return verdict.reasons if settings.drain_unknown else ()
    wanted = set(settings.drain_on)
    actions = set(settings.drain_on_repair_actions)
    picked = []
    for reason in verdict.reasons:
        hardware = reason.code == "component_unhealthy" and actions & set(_repair_actions_of(reason))
        if reason.code in wanted or hardware:
            picked.append(reason)
    return tuple(picked)


def heals_by_itself(reasons: Sequence[Reason], settings: RemediationSettings) -> bool:
    """False when one of `reasons` never clears without a repair (a GPU off the bus, a failed
    row remapping): such a node is drained at the first sweep that sees it."""
    for reason in reasons:
        if reason.code in settings.immediate_on:
            return False
        if (reason.code == "xid_fatal" and reason.value is not None
                and int(reason.value) in settings.immediate_xids):
            return False
    return True


def is_healthy(snapshot: Snapshot) -> bool:
    """A sweep that counts towards a resume: the verdict is Healthy."""
    return snapshot.status is HealthStatus.HEALTHY
