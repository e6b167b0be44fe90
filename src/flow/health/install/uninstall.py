"""The uninstall script: stops and removes GPUd and the collector, keeping the stored metrics.

Removed: both services (stopped, disabled) and their units, /etc/default/gpud, the gpud binary,
/etc/flow, /opt/flow (the venv), /var/log/flow, /run/flow. Kept unless `purge`: /var/lib/flow
(the metrics store and the stream cursor) and /var/lib/gpud (GPUd's own state). With
`keep_gpud`, GPUd stays installed and running and only the collector goes.
"""

from __future__ import annotations

from flow.health.install.options import InstallOptions
from flow.health.install.script import assemble

__all__ = ["uninstall_script"]

_BODY = r"""
stop_service() {  # STEP UNIT PIDFILE: stop and disable a service (systemd and/or pid file)
    u_did=
    if [ "$USE_SYSTEMD" = 1 ] && [ -z "$FLOW_ROOT" ]; then
        if systemctl is-active --quiet "$2" 2>/dev/null; then
            run systemctl stop "$2" || fail "systemctl stop $2 failed"
            u_did=stopped
        fi
        if systemctl is-enabled --quiet "$2" 2>/dev/null; then
            run systemctl disable "$2" || fail "systemctl disable $2 failed"
            u_did="${u_did:+$u_did, }disabled"
        fi
    elif [ -e "$FLOW_ROOT/etc/systemd/system/multi-user.target.wants/$2" ]; then
        rm -f "$FLOW_ROOT/etc/systemd/system/multi-user.target.wants/$2" || fail "cannot disable $2"
        u_did=disabled
    fi
    if stop_pidfile "$3"; then
        u_did="${u_did:+$u_did, }stopped the background process"
    fi
    if [ -n "$u_did" ]; then
        report "$1" changed "$2: $u_did"
    else
        report "$1" unchanged "$2 is not running"
    fi
}

remove() {  # STEP PATH: remove a file or a directory tree that the install created
    if [ -e "$2" ] || [ -L "$2" ]; then
        rm -rf "$2" || fail "cannot remove $2"
        report "$1" changed "removed $2"
    else
        report "$1" unchanged "$2 is absent"
    fi
}

main() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM HUP
    begin preflight
    need_root
    take_lock
    detect_systemd
    report preflight ok \
        "flow $FLOW_VERSION: uninstalling GPUd and the collector${FLOW_ROOT:+ from $FLOW_ROOT}"
    begin collector-service
    stop_service collector-service flow-metrics-streamer.service "$COLLECTOR_PID"
    if [ "$KEEP_GPUD" = 0 ]; then
        begin gpud-service
        stop_service gpud-service gpud.service "$GPUD_PID"
    fi
    begin remove
    remove remove "$COLLECTOR_UNIT"
    if [ "$KEEP_GPUD" = 0 ]; then
        remove remove "$GPUD_UNIT"
        remove remove "$GPUD_DEFAULTS"
        remove remove "$GPUD_BIN"
    fi
    if [ "$USE_SYSTEMD" = 1 ] && [ -z "$FLOW_ROOT" ] && [ "$CHANGED" = 1 ]; then
        run systemctl daemon-reload || fail "systemctl daemon-reload failed"
    fi
    remove remove "$ENV_DIR"
    remove remove "$OPT_DIR"
    remove remove "$LOG_DIR"
    if [ "$PURGE" = 1 ]; then
        begin purge
        remove purge "$STATE_DIR"
        if [ "$KEEP_GPUD" = 0 ]; then remove purge "$GPUD_STATE_DIR"; fi
    else
        report keep skipped "kept the stored metrics in $STATE_DIR (uninstall --purge removes them)"
    fi
    finish
}

main "$@" </dev/null
"""


def uninstall_script(options: InstallOptions, *, purge: bool = False, keep_gpud: bool = False) -> str:
    """The uninstall script; `options` supplies only `root` and `systemd`."""
    settings = f"\nPURGE={int(purge)}\nKEEP_GPUD={int(keep_gpud)}\n"
    return assemble(
        "flow health uninstall: stops and removes GPUd and the flow metrics collector",
        options,
        settings,
        _BODY,
    )
