"""Verdicts read back from Prometheus: reasons come back as code and severity only
(`flow_node_health_reasons`), so their messages are rebuilt here, or taken from scoring the
GPU readings read back where that reproduces the code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flow.config import Thresholds
from flow.health.snapshot import HealthStatus, Reason, Severity, Verdict

__all__ = ["REASON_TEXT", "RESCORABLE", "age_text", "reasons_read_back", "unknown"]

#: Reason codes (docs/scoring.md) as a sentence, for reasons read back without their message.
REASON_TEXT: Mapping[str, str] = {
    "temp_critical": "GPU temperature above the critical threshold",
    "temp_warning": "GPU temperature above the warning threshold",
    "thermal_margin": "GPU close to its slowdown temperature",
    "util_low": "GPU utilization low",
    "util_high": "GPU utilization saturated",
    "mem_critical": "GPU memory almost full",
    "mem_warning": "GPU memory use high",
    "throttle_hw": "GPU clocks throttled by hardware",
    "throttle_sw": "GPU clocks throttled by software",
    "ecc_uncorrected": "uncorrected ECC errors",
    "ecc_corrected": "corrected ECC errors",
    "ecc_aggregate_uncorrected": "uncorrected ECC errors over the GPU's life",
    "remap_failed": "row remapping failed (replace the GPU)",
    "remap_pending": "row remapping pending (reset the GPU)",
    "nvlink_errors": "NVLink errors",
    "xid_fatal": "fatal XID",
    "xid_warning": "XID warning",
    "xid_application": "application XID",
    "xid_info": "informational XID",
    "component_unhealthy": "a GPUd component is unhealthy",
    "component_degraded": "a GPUd component is degraded",
    "component_unreadable": "a GPUd component could not be read",
    "gpu_missing": "fewer GPUs visible than expected",
    "gpu_silent": "a GPU listed by GPUd reports no readings",
    "gpud_unreachable": "GPUd unreachable",
    "no_gpu_data": "GPUd answered but reported no GPU data",
}
#: Reason codes that scoring the GPU readings read back reproduces, with GPU and message.
RESCORABLE = frozenset({"temp_critical", "temp_warning", "util_low", "util_high", "mem_critical",
                        "mem_warning"})
_DETAIL_HINT = "details: flow health --task TASK (over SSH)"


def _severity(text: str) -> Severity:
    try:
        return Severity(text)
    except ValueError:
        return Severity.INFO


def reasons_read_back(counts: Mapping[tuple[str, str], int], thresholds: Thresholds,
                      rescored: Iterable[Reason] = ()) -> tuple[Reason, ...]:
    """One reason per (code, severity) read back, with how many GPUs or components it hit;
    where scoring the GPU readings read back gives the same code (temperature, utilization,
    memory), its per-GPU reasons instead, messages and all."""
    by_code: dict[str, list[Reason]] = {}
    for r in rescored:
        if r.gpu is not None:
            by_code.setdefault(r.code, []).append(r)
    reasons: list[Reason] = []
    for (code, severity_text), count in counts.items():
        if code in by_code:
            reasons.extend(by_code.pop(code))
            continue
        text = REASON_TEXT.get(code, code)
        if count > 1:
            text += f" (x{count})"
        reasons.append(Reason(code=code, severity=_severity(severity_text), message=text,
                              action=_DETAIL_HINT, penalty=thresholds.penalty(code)))
    # Scoring's order (worst first, the worst reading first within a code): the fleet table
    # shows the first.
    reasons.sort(key=lambda r: (-r.severity.rank, -r.penalty, r.code,
                                -(r.value if r.value is not None else 0.0),
                                r.gpu if r.gpu is not None else -1))
    return tuple(reasons)


def age_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def unknown(code: str, message: str, action: str) -> Verdict:
    """An `unknown` verdict with one reason of severity unknown."""
    return Verdict(score=None, status=HealthStatus.UNKNOWN,
                   reasons=(Reason(code=code, severity=Severity.UNKNOWN, message=message,
                                   action=action),))
