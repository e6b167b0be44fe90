"""Acting on verdicts: drain broken nodes in the scheduler, and resume them once healthy.

A policy maps verdicts to actions (`policy`), a node must stay critical across sweeps unless its
fault never heals by itself (`plan`), a brake caps how many nodes flow takes out per window
(`brake`), a marker in the scheduler's reason says which drains are flow's (`marker`), and every
decision, applied or not, goes to an append-only audit log (`audit`). Schedulers: Slurm
(`slurm`) and a site's own command (`command`). docs/remediation.md tells the whole story.
"""

from __future__ import annotations

import importlib
from typing import Any

from flow.health.remediate.audit import ActionRecord, AuditLog, AuditRead
from flow.health.remediate.backend import ActionResult, NodeState, SchedulerBackend
from flow.health.remediate.brake import Brake, held_by_us
from flow.health.remediate.command import CommandBackend
from flow.health.remediate.marker import MARKER, is_ours, make_reason
from flow.health.remediate.plan import NodeView, Plan, PlanItem, make_plan
from flow.health.remediate.policy import RemediationSettings, drain_reasons, heals_by_itself

__all__ = [
    "MARKER",
    "ActionRecord",
    "ActionResult",
    "AuditLog",
    "AuditRead",
    "Brake",
    "CommandBackend",
    "NodeState",
    "NodeView",
    "Plan",
    "PlanItem",
    "RemediationSettings",
    "SchedulerBackend",
    "build_backend",
    "drain_reasons",
    "heals_by_itself",
    "held_by_us",
    "is_ours",
    "make_plan",
    "make_reason",
]


def build_backend(settings: RemediationSettings, *, audit: AuditLog,
                  ssh_options: Any = None) -> SchedulerBackend:
    """The backend `settings.backend` names. Slurm's module is imported only when used;
    `ssh_options` (flow.ssh.SSHOptions) are for its `login_node`.

    Raises:
        ConfigError: a bad `login_node`.
    """
    if settings.backend == "command":
        return CommandBackend(settings.command, timeout_s=settings.command_timeout, audit=audit)
    login: Any = None
    if settings.login_node is not None:
        from flow.errors import ConfigError
        from flow.fleet.access import node_params
        from flow.fleet.model import FieldError, parse_node_spec

        try:
            login = node_params(parse_node_spec(settings.login_node))
        except FieldError as exc:
            raise ConfigError(f"health.remediation.login_node={settings.login_node!r}: {exc.message}; "
                              "allowed: [user@]host[:port]") from None
    slurm: Any = importlib.import_module("flow.health.remediate.slurm")
    backend: SchedulerBackend = slurm.SlurmBackend(settings.scontrol, slurm_conf=settings.slurm_conf,
                                                   login=login, ssh_options=ssh_options)
    return backend
