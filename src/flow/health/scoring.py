"""Scoring: a pure function from a snapshot to a verdict `{score, status, reasons}`.

The rules, their thresholds and penalties are documented in docs/scoring.md. In short:

- The score starts at 100. Each rule that fires adds a `Reason`; each reason *code* costs its
  penalty once per node (eight hot GPUs are one problem, not eight), so adding a fault never
  raises the score.
- Any reason of severity `critical` caps the score at 59: the node is Critical.
- Bands: Healthy 80-100, Degraded 60-79, Critical 0-59.
- Unknown (score None) when there are no GPU readings: GPUd unreachable, or it gave no GPU data.
  Its one reason has severity `unknown`: the node was not judged, so nothing reads "critical".
- Fewer GPUs than the node should have (`snapshot.expected_gpus`) is critical; a GPU GPUd lists
  but reports nothing for (`GpuReading.silent`) is a warning: neither is ever healthy.
- A reading that is None triggers no rule: "not reported" is never "zero".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from flow.config import Thresholds
from flow.health.snapshot import (
    GpuReading,
    HealthStatus,
    Reason,
    Severity,
    Snapshot,
    Verdict,
)
from flow.health.xid import classify_xid

__all__ = [
    "CRITICAL_CAP",
    "DEFAULT_THRESHOLDS",
    "HW_THROTTLE_REASONS",
    "REPAIR_ACTION_TEXT",
    "SW_THROTTLE_REASONS",
    "UNREACHABLE_ACTIONS",
    "repair_actions_text",
    "score_snapshot",
    "status_for_score",
]

DEFAULT_THRESHOLDS = Thresholds()
CRITICAL_CAP = 59
HEALTHY_MIN = 80
DEGRADED_MIN = 60

HW_THROTTLE_REASONS = ("hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
SW_THROTTLE_REASONS = ("sw_thermal_slowdown",)

_THROTTLE_TEXT = {
    "hw_slowdown": "hardware slowdown",
    "hw_thermal_slowdown": "hardware thermal slowdown",
    "hw_power_brake_slowdown": "power brake slowdown",
    "sw_thermal_slowdown": "software thermal slowdown",
}


#: GPUd's repair actions (`suggested_actions.repair_actions`) as an operator reads them.
REPAIR_ACTION_TEXT: dict[str, str] = {
    "IGNORE_NO_ACTION_REQUIRED": "No action required",
    "REBOOT_SYSTEM": "Reboot the node (drain it first)",
    "HARDWARE_INSPECTION": "Have the node's hardware inspected (RMA the part if faulty)",
    "CHECK_USER_APP_AND_GPU": "Check the user's application first, then the GPU",
}


def repair_actions_text(actions: Sequence[str]) -> str:
    """GPUd's repair-action enums in words, in GPUd's order; an enum this table lacks (a newer
    GPUd's) is shown as GPUd wrote it rather than dropped."""
    words = [REPAIR_ACTION_TEXT.get(a, a) for a in actions]
    return "; then ".join([*words[:1], *(_lower_first(w) for w in words[1:])])


def _lower_first(text: str) -> str:
    # Only our own sentences: an enum GPUd added later stays exactly as GPUd wrote it.
    return text[:1].lower() + text[1:] if text in REPAIR_ACTION_TEXT.values() else text


def status_for_score(score: int) -> HealthStatus:
    if score >= HEALTHY_MIN:
        return HealthStatus.HEALTHY
    if score >= DEGRADED_MIN:
        return HealthStatus.DEGRADED
    return HealthStatus.CRITICAL


def _gpu_reasons(gpu: GpuReading, t: Thresholds) -> Iterable[Reason]:
    i = gpu.index

    def reason(
        code: str, severity: Severity, message: str, action: str, value: float | None = None
    ) -> Reason:
        return Reason(code=code, severity=severity, gpu=i, message=message, action=action,
                      penalty=t.penalty(code), value=value)

    if gpu.temp_c is not None:
        if gpu.temp_c > t.temp_critical_c:
            yield reason("temp_critical", Severity.CRITICAL,
                         f"GPU {i} at {gpu.temp_c:.0f} °C (critical above {t.temp_critical_c:g} °C)",
                         "Check cooling and airflow now; drain the node if it stays this hot", gpu.temp_c)
        elif gpu.temp_c > t.temp_warning_c:
            yield reason("temp_warning", Severity.WARNING,
                         f"GPU {i} at {gpu.temp_c:.0f} °C (warning above {t.temp_warning_c:g} °C)",
                         "Check fans, airflow and inlet temperature", gpu.temp_c)
        if (gpu.slowdown_temp_c is not None
                and gpu.temp_c >= gpu.slowdown_temp_c - t.slowdown_margin_c):
            margin = gpu.slowdown_temp_c - gpu.temp_c
            yield reason("thermal_margin", Severity.WARNING,
                         f"GPU {i} at {gpu.temp_c:.0f} °C is {margin:.0f} °C from its slowdown "
                         f"threshold of {gpu.slowdown_temp_c:.0f} °C",
                         "The GPU will throttle soon: check cooling", gpu.temp_c)

    if gpu.util_gpu_pct is not None:
        if gpu.util_gpu_pct < t.util_low_pct:
            yield reason("util_low", Severity.INFO,
                         f"GPU {i} utilization {gpu.util_gpu_pct:.0f}% (below {t.util_low_pct:g}%)",
                         "GPU is idle: check the job is running, or release the node", gpu.util_gpu_pct)
        elif gpu.util_gpu_pct > t.util_high_pct:
            yield reason("util_high", Severity.INFO,
                         f"GPU {i} utilization {gpu.util_gpu_pct:.0f}% (above {t.util_high_pct:g}%)",
                         "GPU is saturated: expect queueing; no action unless jobs are slow",
                         gpu.util_gpu_pct)

    mem_pct = gpu.mem_used_pct
    if mem_pct is not None:
        if mem_pct > t.mem_critical_pct:
            yield reason("mem_critical", Severity.CRITICAL,
                         f"GPU {i} memory {mem_pct:.0f}% used (critical above {t.mem_critical_pct:g}%)",
                         "Out-of-memory is imminent: reduce batch size or free GPU memory", mem_pct)
        elif mem_pct > t.mem_warning_pct:
            yield reason("mem_warning", Severity.WARNING,
                         f"GPU {i} memory {mem_pct:.0f}% used (warning above {t.mem_warning_pct:g}%)",
                         "Watch GPU memory; the job is near its limit", mem_pct)

    hw = [r for r in gpu.throttle_reasons if r in HW_THROTTLE_REASONS]
    if hw:
        yield reason("throttle_hw", Severity.WARNING,
                     f"GPU {i} throttled: " + ", ".join(_THROTTLE_TEXT[r] for r in hw),
                     "Check power delivery and cooling; persistent hardware slowdown needs inspection")
    sw = [r for r in gpu.throttle_reasons if r in SW_THROTTLE_REASONS]
    if sw:
        yield reason("throttle_sw", Severity.INFO,
                     f"GPU {i} throttled: " + ", ".join(_THROTTLE_TEXT[r] for r in sw),
                     "Check cooling if it persists")

    if gpu.ecc_volatile_uncorrected:
        yield reason("ecc_uncorrected", Severity.CRITICAL,
                     f"GPU {i} has {gpu.ecc_volatile_uncorrected} uncorrected ECC errors since boot",
                     "Drain the node and reset the GPU; RMA if errors return",
                     float(gpu.ecc_volatile_uncorrected))
    # Not an `elif`: each rule stands alone, so adding a fault can never remove a reason.
    if gpu.ecc_aggregate_uncorrected:
        yield reason("ecc_aggregate_uncorrected", Severity.WARNING,
                     f"GPU {i} has {gpu.ecc_aggregate_uncorrected} uncorrected ECC errors in its "
                     "lifetime",
                     "Check row remapping status; plan an inspection")
    if gpu.ecc_volatile_corrected:
        yield reason("ecc_corrected", Severity.WARNING,
                     f"GPU {i} has {gpu.ecc_volatile_corrected} corrected ECC errors since boot",
                     "Watch the rate; many corrected errors predict uncorrected ones",
                     float(gpu.ecc_volatile_corrected))

    if gpu.remap_failed:
        yield reason("remap_failed", Severity.CRITICAL,
                     f"GPU {i} row remapping failed",
                     "The GPU cannot retire bad memory: drain the node and RMA the GPU")
    elif gpu.remap_pending:
        yield reason("remap_pending", Severity.WARNING,
                     f"GPU {i} has a row remapping pending",
                     "Reset the GPU (or reboot) to apply the remapping")


def _nvlink_reasons(
    gpus: tuple[GpuReading, ...], previous: Snapshot | None, t: Thresholds
) -> Iterable[Reason]:
    before = {g.index: g.nvlink_errors for g in previous.gpus} if previous else {}
    for gpu in gpus:
        now = gpu.nvlink_errors
        if not now:
            continue
        old = before.get(gpu.index)
        if previous is not None and old is not None:
            if now <= old:
                continue
            message = f"GPU {gpu.index} NVLink errors grew by {now - old} (now {now})"
        else:
            message = f"GPU {gpu.index} has {now} NVLink errors (replay/recovery/CRC)"
        yield Reason(code="nvlink_errors", severity=Severity.WARNING, gpu=gpu.index,
                     message=message, penalty=t.penalty("nvlink_errors"), value=float(now),
                     action="Check NVLink cabling/NVSwitch; reboot if the errors keep growing")


_XID_CODES = {
    "fatal": ("xid_fatal", Severity.CRITICAL),
    "warning": ("xid_warning", Severity.WARNING),
    "unknown": ("xid_warning", Severity.WARNING),
    "application": ("xid_application", Severity.INFO),
    "no_action": ("xid_info", Severity.INFO),
    "info": ("xid_info", Severity.INFO),
}


def _xid_reasons(snapshot: Snapshot, t: Thresholds) -> Iterable[Reason]:
    seen: set[tuple[int, str | None]] = set()
    for xid in snapshot.xids:
        key = (xid.code, xid.gpu)
        if key in seen:
            continue
        seen.add(key)
        info = classify_xid(xid.code)
        code, severity = _XID_CODES.get(info.xid_class, _XID_CODES["unknown"])
        where = f"GPU {xid.gpu_index}" if xid.gpu_index is not None else (xid.gpu or "a GPU")
        yield Reason(code=code, severity=severity, gpu=xid.gpu_index, value=float(xid.code),
                     message=f"XID {xid.code} ({info.name}) on {where}",
                     action=info.action, penalty=t.penalty(code),
                     component="accelerator-nvidia-error-xid", repair_actions=info.repair_actions)


def _component_reasons(snapshot: Snapshot, t: Thresholds) -> Iterable[Reason]:
    for state in snapshot.components:
        if state.health == "Unhealthy":
            code, severity = "component_unhealthy", Severity.CRITICAL
        elif state.health == "Degraded":
            code, severity = "component_degraded", Severity.WARNING
        else:
            continue
        detail = state.reason or state.error or state.health
        action = (repair_actions_text(state.repair_actions) if state.repair_actions
                  else "See the component's reason")
        yield Reason(code=code, severity=severity, component=state.component,
                     message=f"GPUd {state.component}: {state.health}: {detail}",
                     action=action, penalty=t.penalty(code), repair_actions=state.repair_actions)
    for error in snapshot.read_errors:
        yield Reason(code="component_unreadable", severity=Severity.INFO,
                     component=error.component, penalty=t.penalty("component_unreadable"),
                     message=f"GPUd {error.component}: unreadable: {error.message}",
                     action="Check the GPUd version; this component's data was skipped")


_MISSING_ACTION = ("A GPU that vanishes from NVML has usually fallen off the bus: check nvidia-smi "
                   "and the kernel log (XID 79) on the node; drain it and power-cycle; RMA the GPU "
                   "if it stays missing")
_SILENT_ACTION = ("NVML no longer answers for this GPU: check nvidia-smi and the kernel log (XID 79) "
                  "on the node; drain it and reset the GPU or power-cycle")


def _unlisted_xid_gpus(snapshot: Snapshot) -> list[str]:
    """GPUs an XID names that GPUd does not list (the kernel log remembers a GPU NVML lost)."""
    named: dict[str, list[int]] = {}
    for xid in snapshot.xids:
        if xid.gpu_index is None and xid.gpu:
            codes = named.setdefault(xid.gpu, [])
            if xid.code not in codes:
                codes.append(xid.code)
    return [f"{gpu} (XID {', '.join(str(c) for c in codes)})" for gpu, codes in named.items()]


def _gpu_count_reasons(snapshot: Snapshot, t: Thresholds) -> Iterable[Reason]:
    """Fewer GPUs than expected (critical), and GPUs GPUd lists but reads nothing from (warning)."""
    expected, seen = snapshot.expected_gpus, len(snapshot.gpus)
    if expected is not None and seen < expected:
        named = _unlisted_xid_gpus(snapshot)
        which = f"; missing: {', '.join(named)}" if named else ""
        yield Reason(code="gpu_missing", severity=Severity.CRITICAL, value=float(expected - seen),
                     message=f"{seen} of {expected} GPUs visible{which}",
                     action=_MISSING_ACTION, penalty=t.penalty("gpu_missing"))
    for gpu in snapshot.gpus:
        if gpu.silent:
            ident = gpu.bus_id or gpu.uuid  # the bus id is what nvidia-smi and the kernel log show
            yield Reason(code="gpu_silent", severity=Severity.WARNING, gpu=gpu.index,
                         message=f"GPU {gpu.index}{f' ({ident})' if ident else ''} is listed by GPUd "
                                 "but reports no readings",
                         action=_SILENT_ACTION, penalty=t.penalty("gpu_silent"))


#: What to do about each way of not reaching GPUd (GpudStatus.state).
UNREACHABLE_ACTIONS: dict[str, str] = {
    "ssh_dns": "Check the node's host name in tasks.yaml / ~/.ssh/config",
    "ssh_refused": "Check the node is up and sshd runs on that port",
    "ssh_timeout": "Check the node is up and reachable (firewall, hung sshd); raise --timeout if slow",
    "ssh_auth": "Check the user and key (flow tasks add --key) or load the key into ssh-agent",
    "ssh_host_key_changed": "Verify the node's new host key, then remove the old line from known_hosts",
    "ssh_host_key_unknown": "Connect once with FLOW_SSH_HOST_KEY_POLICY=accept-new, or add the key",
    "ssh_tunnel": "Allow TCP forwarding in the node's sshd (AllowTcpForwarding yes)",
    "not_installed": "Install GPUd: flow health install TASK",
    "not_listening": "Start GPUd: systemctl restart gpud (see flow logs TASK --source gpud)",
    "timeout": "GPUd or the node is overloaded: check flow logs TASK --source gpud; raise --timeout",
    "tls_error": "Something other than GPUd's HTTPS listens on its port: check FLOW_GPUD_PORT",
    "bad_response": "Something other than GPUd answers on its port: check FLOW_GPUD_PORT",
    "error_response": "GPUd answered with an error: check flow logs TASK --source gpud",
    "sweep_worker": "A flow sweep worker process failed (see the message): sweep again or use --workers 1",
}


def _unknown(snapshot: Snapshot) -> Verdict:
    gpud = snapshot.gpud
    if not gpud.reachable:
        detail = gpud.error or gpud.state
        reason = Reason(code="gpud_unreachable", severity=Severity.UNKNOWN,
                        message=f"GPUd unreachable ({gpud.state}): {detail}",
                        action=UNREACHABLE_ACTIONS.get(
                            gpud.state, "Check the node, its SSH access and the gpud service"))
    else:
        reason = Reason(code="no_gpu_data", severity=Severity.UNKNOWN,
                        message="GPUd answered but reported no GPU data",
                        action="Check the NVIDIA driver (nvidia-smi) and GPUd's NVML components")
    return Verdict(score=None, status=HealthStatus.UNKNOWN, reasons=(reason,))


def _answered_without_gpus(snapshot: Snapshot) -> bool:
    """GPUd answered in full and lists no GPU on a node that should have some: that is a
    verdict (every GPU missing), not an unknown. A partial answer (a read error) stays unknown."""
    return (snapshot.gpud.reachable and not snapshot.read_errors
            and bool(snapshot.expected_gpus))


def score_snapshot(
    snapshot: Snapshot,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    *,
    previous: Snapshot | None = None,
) -> Verdict:
    """Score one snapshot. `previous` (the same node's last snapshot) enables growth rules."""
    if not snapshot.gpus and not _answered_without_gpus(snapshot):
        return _unknown(snapshot)
    t = thresholds
    reasons: list[Reason] = list(_gpu_count_reasons(snapshot, t))
    for gpu in snapshot.gpus:
        reasons.extend(_gpu_reasons(gpu, t))
    reasons.extend(_nvlink_reasons(snapshot.gpus, previous, t))
    reasons.extend(_xid_reasons(snapshot, t))
    reasons.extend(_component_reasons(snapshot, t))

    charged: dict[str, int] = {}
    for r in reasons:
        charged[r.code] = max(charged.get(r.code, 0), r.penalty)
    score = max(0, 100 - sum(charged.values()))
    if any(r.severity is Severity.CRITICAL for r in reasons):
        score = min(score, CRITICAL_CAP)
    # Most severe and costly first; within a code, the worst reading first (the hottest GPU).
    reasons.sort(key=lambda r: (-r.severity.rank, -r.penalty, r.code,
                                -(r.value if r.value is not None else 0.0),
                                r.gpu if r.gpu is not None else -1))
    return Verdict(score=score, status=status_for_score(score), reasons=tuple(reasons))
