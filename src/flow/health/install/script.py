"""The startup script: a POSIX `sh` program that installs GPUd and the collector on one node.

`startup_script(options)` returns the script text. The same text is what `flow health
startup-script` prints (for cloud-init user data or any boot hook) and what `flow health
install` runs on each node over SSH. Steps, in order (docs/install.md describes each):

    preflight -> gpud -> gpud-config -> gpud-unit -> collector-unit -> collector-venv
    -> collector-env -> state-dir -> gpud-service -> collector-service -> healthz

Each step compares before it writes and reports `changed`, `unchanged`, `skipped`, `ok` or
`failed`; a second run over a node that is already right reports `result: unchanged`.
"""

from __future__ import annotations

import re

from flow.health.install import units
from flow.health.install.options import GPUD_INSTALLER_URL, InstallOptions
from flow.health.install.shell import (
    COMMON_STATE,
    HEREDOC_END,
    common_functions,
    path_header,
    script_header,
    sh_quote,
)

__all__ = ["assemble", "disabled_script", "startup_script"]

_PLACEHOLDER_RE = re.compile(r"\{(arch|file|version)\}")


def assemble(title: str, options: InstallOptions, settings: str, body: str) -> str:
    """Header, the path variables the script uses, settings, shared functions, body."""
    functions = common_functions(settings + body)
    state = "".join(
        line + "\n"
        for line in COMMON_STATE.splitlines()
        if line and re.search(r"(\$\{?|\(\()" + line.split("=", 1)[0] + r"\b", settings + functions + body)
    )
    text = settings + "\n" + state + functions + body
    paths = "".join(
        line + "\n"
        for line in path_header().splitlines()
        if re.search(r"\$\{?" + re.escape(line.split("=", 1)[0]) + r"\b", text)
    )
    return script_header(title, root=options.root, systemd=options.systemd) + paths + text


def _mirror_url_word(template: str, version: str) -> str:
    """The mirror URL as one shell word; `{arch}` and `{file}` become the node's `$ARCH`."""
    if "{file}" not in template and "{arch}" not in template:
        template = template.rstrip("/") + "/{file}"
    parts: list[str] = []
    last = 0
    for match in _PLACEHOLDER_RE.finditer(template):
        if match.start() > last:
            parts.append(sh_quote(template[last : match.start()]))
        key = match.group(1)
        if key == "version":
            parts.append(sh_quote(version))
        elif key == "arch":
            parts.append('"$ARCH"')
        else:
            parts.append(sh_quote(f"gpud_{version}_linux_") + '"$ARCH"' + "'.tgz'")
        last = match.end()
    if last < len(template):
        parts.append(sh_quote(template[last:]))
    return "".join(parts)


def _write(step: str, var: str, mode: str, what: str, text: str, *, then: str = "") -> str:
    """A `write_file` call fed by a quoted heredoc (no expansion, nothing in argv)."""
    if any(line == HEREDOC_END for line in text.splitlines()):
        raise ValueError(f"{var} content contains the heredoc end marker")
    tail = f"    if [ \"$PUT\" = changed ]; then {then}; fi\n" if then else ""
    return (
        f'    write_file {step} "${var}" {mode} {sh_quote(what)} <<\'{HEREDOC_END}\'\n'
        f"{text}{HEREDOC_END}\n{tail}"
    )


def _settings(options: InstallOptions) -> str:
    source = options.gpud_source
    mirror = source.mirror or ""
    lines = [
        "",
        "# ---- settings (generated) ----",
        f"GPUD_VERSION={sh_quote(options.gpud_version)}",
        f"GPUD_LISTEN={sh_quote(options.listen_address)}",
        f"GPUD_HEALTHZ_URL={sh_quote(options.healthz_url)}",
        f"GPUD_SOURCE={sh_quote(source.kind)}",
        f"GPUD_TARBALL={sh_quote(source.tarball or '')}",
        f"GPUD_SHA256={sh_quote(source.sha256 or '')}",
        f"GPUD_INSTALLER_URL={sh_quote(GPUD_INSTALLER_URL)}",
        f"FLOW_PACKAGE={sh_quote(options.package or '')}",
        f"FLOW_PYTHON={sh_quote(options.python)}",
        f"HEALTHZ_TIMEOUT={sh_quote(str(options.healthz_timeout_s))}",
        "",
        "gpud_mirror_url() {  # the tarball URL on the internal mirror, for this node's $ARCH",
        f"    printf '%s\\n' {_mirror_url_word(mirror, options.gpud_version) if mirror else sh_quote('')}",
        "}",
        "",
    ]
    return "\n".join(lines)


def _file_steps(options: InstallOptions) -> str:
    """The steps that write files; generated because each embeds its file's text."""
    return (
        "step_gpud_config() {\n"
        "    begin gpud-config\n"
        + _write("gpud-config", "GPUD_DEFAULTS", "0644", f"GPUd listens on {options.listen_address}",
                 units.gpud_defaults(options), then="GPUD_RESTART=1")
        + "}\n\n"
        "step_units() {\n"
        "    begin gpud-unit\n"
        + _write("gpud-unit", "GPUD_UNIT", "0644", "systemd unit for GPUd", units.gpud_unit(),
                 then="UNITS_CHANGED=1")
        + "    begin collector-unit\n"
        + _write("collector-unit", "COLLECTOR_UNIT", "0644", "systemd unit for the collector",
                 units.collector_unit(), then="UNITS_CHANGED=1")
        + "}\n\n"
        "step_collector_env() {\n"
        "    begin collector-env\n"
        "    if ! { mkdir -p \"$ENV_DIR\" && chmod 0755 \"$ENV_DIR\"; }; then\n"
        "        fail \"cannot create $ENV_DIR\"\n"
        "    fi\n"
        "    # The token is written from a heredoc into a file that mktemp creates 0600: it is never\n"
        "    # in any process's argv, in the log, or in a file others can read.\n"
        + _write("collector-env", "ENV_FILE", "0600", "collector settings, mode 0600",
                 units.metrics_env(options), then="COLLECTOR_RESTART=1")
        + "}\n"
    )


_STARTUP_BODY = r"""
ARCH=
PUT=
TARBALL=
GPUD_RESTART=0
COLLECTOR_RESTART=0
UNITS_CHANGED=0

put_file() {  # PATH MODE < content: replace PATH only when its content or mode differs
    p_dir=$(dirname "$1")
    mkdir -p "$p_dir" || return 1
    p_tmp=$(mktemp "$p_dir/.flow-new.XXXXXX") || return 1  # mktemp creates it 0600
    if ! cat >"$p_tmp"; then
        rm -f "$p_tmp"
        return 1
    fi
    if [ -f "$1" ] && cmp -s "$p_tmp" "$1" && [ "$(stat -c %a "$1")" = "${2#0}" ]; then
        rm -f "$p_tmp"
        PUT=unchanged
        return 0
    fi
    if chmod "$2" "$p_tmp" && mv -f "$p_tmp" "$1"; then
        PUT=changed
        return 0
    fi
    rm -f "$p_tmp"
    return 1
}

write_file() {  # STEP PATH MODE WHAT < content: put_file, then report the step
    put_file "$2" "$3" || fail "cannot write $2"
    if [ "$PUT" = changed ]; then
        report "$1" changed "wrote $2 ($4)"
    else
        report "$1" unchanged "$2 is up to date"
    fi
}

download() {  # URL DEST
    if command -v curl >/dev/null 2>&1; then
        run curl -fsSL --retry 3 --connect-timeout 20 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        run wget -q -T 20 -O "$2" "$1"
    else
        log "neither curl nor wget is installed"
        return 1
    fi
}

step_preflight() {
    begin preflight
    need_root
    take_lock
    detect_systemd
    case $(uname -m) in
        x86_64 | amd64) ARCH=amd64 ;;
        aarch64 | arm64) ARCH=arm64 ;;
        *) fail "unsupported architecture $(uname -m): GPUd ships linux amd64 and arm64 builds" ;;
    esac
    if [ "$GPUD_SOURCE" = installer ] && [ -n "$FLOW_ROOT" ]; then
        fail "the official GPUd installer writes /usr/local/bin itself and cannot install under" \
            "FLOW_ROOT=$FLOW_ROOT; use --gpud-tarball or --gpud-mirror"
    fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/flow-install.XXXXXX") || fail "cannot create a temporary directory"
    if [ "$USE_SYSTEMD" = 1 ]; then
        p_mode=systemd
    else
        p_mode="no systemd: background processes with pid files in $RUN_DIR"
    fi
    report preflight ok "linux/$ARCH, $p_mode${FLOW_ROOT:+, root $FLOW_ROOT}"
}

fetch_tarball() {  # set TARBALL: this version's tarball for this node's architecture, verified
    t_file="gpud_${GPUD_VERSION}_linux_${ARCH}.tgz"
    if [ "$GPUD_SOURCE" = mirror ]; then
        t_url=$(gpud_mirror_url)
        TARBALL="$WORK/$t_file"
        download "$t_url" "$TARBALL" || fail "cannot download $t_url"
    elif [ -d "$GPUD_TARBALL" ]; then
        TARBALL="$GPUD_TARBALL/$t_file"
    else
        TARBALL=$GPUD_TARBALL
    fi
    [ -f "$TARBALL" ] || fail "GPUd tarball $TARBALL not found on this node (expected $t_file)"
    if [ -n "$GPUD_SHA256" ]; then
        t_sum=$(sha256sum "$TARBALL" 2>/dev/null | cut -d ' ' -f 1)
        if [ "$t_sum" != "$GPUD_SHA256" ]; then
            fail "SHA-256 mismatch for $TARBALL: expected $GPUD_SHA256," \
                "got ${t_sum:-nothing (sha256sum failed)}; refusing to install it, nothing was changed"
        fi
        log "SHA-256 of $TARBALL verified: $t_sum"
    fi
}

install_from_tarball() {
    fetch_tarball
    mkdir "$WORK/unpacked" || fail "cannot create $WORK/unpacked"
    run tar -xzf "$TARBALL" -C "$WORK/unpacked" || fail "cannot unpack $TARBALL (not a .tgz?)"
    i_bin=$(find "$WORK/unpacked" -type f -name gpud | head -n 1)
    [ -n "$i_bin" ] || fail "$TARBALL holds no file named gpud"
    chmod 0755 "$i_bin"
    i_ver=$(gpud_version_of "$i_bin")
    if [ "$i_ver" != "$GPUD_VERSION" ]; then
        fail "$TARBALL holds gpud ${i_ver:-of unknown version (wrong architecture?)}, not $GPUD_VERSION"
    fi
    mkdir -p "$(dirname "$GPUD_BIN")" || fail "cannot create $(dirname "$GPUD_BIN")"
    # Copy beside it, then rename: a running gpud keeps its old inode, nothing sees half a file.
    if ! { cp "$i_bin" "$GPUD_BIN.flow-new" && chmod 0755 "$GPUD_BIN.flow-new" &&
        mv -f "$GPUD_BIN.flow-new" "$GPUD_BIN"; }; then
        rm -f "$GPUD_BIN.flow-new"
        fail "cannot write $GPUD_BIN"
    fi
}

install_with_installer() {
    command -v curl >/dev/null 2>&1 || fail "curl is needed for the official GPUd installer"
    # The documented `curl -fsSL URL | sh -s VERSION`, in two parts so a failed download is caught.
    run curl -fsSL --retry 3 --connect-timeout 20 -o "$WORK/install.sh" "$GPUD_INSTALLER_URL" ||
        fail "cannot download the GPUd installer $GPUD_INSTALLER_URL" \
            "(air-gapped? use --gpud-tarball or --gpud-mirror)"
    run sh -s "$GPUD_VERSION" <"$WORK/install.sh" || fail "the GPUd installer failed"
}

step_gpud() {
    begin gpud
    g_have=$(gpud_version_of "$GPUD_BIN")
    if [ "$g_have" = "$GPUD_VERSION" ]; then
        report gpud unchanged "gpud $g_have is installed at $GPUD_BIN"
        return 0
    fi
    if [ "$GPUD_SOURCE" = installer ]; then
        install_with_installer
    else
        install_from_tarball
    fi
    g_now=$(gpud_version_of "$GPUD_BIN")
    if [ "$g_now" != "$GPUD_VERSION" ]; then
        fail "after the install $GPUD_BIN reports ${g_now:-no version}, not $GPUD_VERSION"
    fi
    GPUD_RESTART=1
    report gpud changed "installed gpud $GPUD_VERSION from the $GPUD_SOURCE${g_have:+ (was $g_have)}"
}

package_marker() {  # what the venv should hold: the spec, plus the file's digest for a local file
    if [ -f "$FLOW_PACKAGE" ]; then
        printf '%s sha256=%s\n' "$FLOW_PACKAGE" "$(sha256sum "$FLOW_PACKAGE" | cut -d ' ' -f 1)"
    else
        printf '%s\n' "$FLOW_PACKAGE"
    fi
}

step_collector_venv() {
    begin collector-venv
    if [ -z "$FLOW_PACKAGE" ]; then
        if [ -x "$VENV_FLOW" ]; then
            report collector-venv skipped "pip install skipped (--package none); keeping $VENV_DIR"
        else
            report collector-venv skipped "pip install skipped (--package none); $VENV_FLOW is absent"
        fi
        return 0
    fi
    c_want=$(package_marker)
    if [ -x "$VENV_FLOW" ] && [ "$(cat "$VENV_MARKER" 2>/dev/null || :)" = "$c_want" ]; then
        report collector-venv unchanged "$VENV_DIR holds $FLOW_PACKAGE"
        return 0
    fi
    command -v "$FLOW_PYTHON" >/dev/null 2>&1 ||
        fail "$FLOW_PYTHON not found: the collector needs Python 3.10 or later" \
            "(apt-get install python3 python3-venv)"
    run "$FLOW_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        fail "$FLOW_PYTHON is older than 3.10: the collector needs Python 3.10 or later"
    if [ ! -x "$VENV_DIR/bin/python" ]; then
        mkdir -p "$OPT_DIR" || fail "cannot create $OPT_DIR"
        run "$FLOW_PYTHON" -m venv "$VENV_DIR" ||
            fail "cannot create the virtual environment $VENV_DIR" \
                "(Debian/Ubuntu: apt-get install python3-venv)"
    fi
    run "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --upgrade "$FLOW_PACKAGE" ||
        fail "pip install $FLOW_PACKAGE failed" \
            "(air-gapped? --package a wheel on the node, or an index in /etc/pip.conf)"
    printf '%s\n' "$c_want" >"$VENV_MARKER" || fail "cannot write $VENV_MARKER"
    COLLECTOR_RESTART=1
    report collector-venv changed "installed $FLOW_PACKAGE into $VENV_DIR"
}

step_state_dir() {
    begin state-dir
    if [ -d "$STORE_DIR" ]; then
        report state-dir unchanged "$STORE_DIR exists"
        return 0
    fi
    if ! { mkdir -p "$STORE_DIR" && chmod 0750 "$STATE_DIR" && chmod 0700 "$STORE_DIR"; }; then
        fail "cannot create $STORE_DIR"
    fi
    report state-dir changed "created $STORE_DIR (the collector's store and stream cursor)"
}

start_background() {  # PIDFILE LOGFILE CMD...: run CMD detached from this shell, record its pid
    b_pidfile=$1
    b_log=$2
    shift 2
    mkdir -p "$RUN_DIR" "$(dirname "$b_log")" || return 1
    if command -v setsid >/dev/null 2>&1; then
        # A background job of a non-interactive shell leads no process group, so setsid calls
        # setsid() and execs in place: $! is the daemon's own pid, and it survives our session.
        nohup setsid "$@" </dev/null >>"$b_log" 2>&1 &
    else
        nohup "$@" </dev/null >>"$b_log" 2>&1 &
    fi
    echo "$!" >"$b_pidfile"
}

service_log_tail() {  # UNIT LOGFILE: copy the service's last lines into the startup log
    if [ "$USE_SYSTEMD" = 1 ]; then
        run journalctl -u "$1" -n 20 --no-pager || :
    elif [ -f "$2" ]; then
        log "last lines of $2:"
        tail -n 20 "$2" >>"$STARTUP_LOG" 2>/dev/null || :
    fi
}

systemd_service() {  # STEP UNIT RESTART: enable the unit, (re)start it when needed
    if [ -n "$FLOW_ROOT" ]; then
        # Installing into another root (an image): enable there; it starts when that root boots.
        if [ -e "$FLOW_ROOT/etc/systemd/system/multi-user.target.wants/$2" ]; then
            report "$1" unchanged "$2 is enabled in $FLOW_ROOT"
        else
            run systemctl --root="$FLOW_ROOT" enable "$2" || fail "cannot enable $2 in $FLOW_ROOT"
            report "$1" changed "enabled $2 in $FLOW_ROOT (it starts when that system boots)"
        fi
        return 0
    fi
    s_did=
    if ! systemctl is-enabled --quiet "$2" 2>/dev/null; then
        run systemctl enable "$2" || fail "systemctl enable $2 failed"
        s_did=enabled
    fi
    if [ "$3" = 1 ]; then
        if ! run systemctl restart "$2"; then
            service_log_tail "$2" ""
            fail "systemctl restart $2 failed (journalctl -u $2)"
        fi
        s_did="${s_did:+$s_did, }restarted"
    elif ! systemctl is-active --quiet "$2"; then
        if ! run systemctl start "$2"; then
            service_log_tail "$2" ""
            fail "systemctl start $2 failed (journalctl -u $2)"
        fi
        s_did="${s_did:+$s_did, }started"
    fi
    if [ -n "$s_did" ]; then
        report "$1" changed "$2 $s_did"
    else
        report "$1" unchanged "$2 is enabled and active"
    fi
}

fallback_gpud() {
    if f_pid=$(pid_of "$GPUD_PID"); then
        if [ "$GPUD_RESTART" = 0 ]; then
            report gpud-service unchanged "gpud is running without systemd (pid $f_pid)"
            return 0
        fi
        stop_pidfile "$GPUD_PID" || :
        f_did=restarted
    else
        f_did=started
    fi
    FLAGS=
    # shellcheck source=/dev/null
    . "$GPUD_DEFAULTS"
    # FLAGS holds several words on purpose, as `$FLAGS` in the unit does; split them, but never
    # expand a pattern: `[::1]:15132` is a bracket expression that a file in the cwd would match.
    set -f
    # shellcheck disable=SC2086
    if start_background "$GPUD_PID" "$GPUD_LOG" "$GPUD_BIN" run $FLAGS; then f_ok=1; else f_ok=0; fi
    set +f
    [ "$f_ok" = 1 ] || fail "cannot start $GPUD_BIN"
    report gpud-service changed "gpud $f_did without systemd (pid $(cat "$GPUD_PID"), log $GPUD_LOG)"
}

fallback_collector() {
    if f_pid=$(pid_of "$COLLECTOR_PID"); then
        if [ "$COLLECTOR_RESTART" = 0 ]; then
            report collector-service unchanged "the collector is running without systemd (pid $f_pid)"
            return 0
        fi
        stop_pidfile "$COLLECTOR_PID" || :
        f_did=restarted
    else
        f_did=started
    fi
    # The settings (and the token) reach the collector through its environment, as under
    # systemd's EnvironmentFile=, never through argv.
    (
        set -a
        # shellcheck source=/dev/null
        . "$ENV_FILE"
        set +a
        if [ -n "$FLOW_ROOT" ]; then
            export FLOW_HOME="$STATE_DIR" FLOW_METRICS_DIR="$STORE_DIR"
        fi
        start_background "$COLLECTOR_PID" "$COLLECTOR_LOG" "$VENV_FLOW" health collect
    ) || fail "cannot start $VENV_FLOW"
    report collector-service changed \
        "collector $f_did without systemd (pid $(cat "$COLLECTOR_PID"), log $COLLECTOR_LOG)"
}

step_services() {
    if [ "$USE_SYSTEMD" = 1 ] && [ "$UNITS_CHANGED" = 1 ]; then
        # A changed unit file takes effect on the next (re)start, after a reload.
        GPUD_RESTART=1
        COLLECTOR_RESTART=1
        if [ -z "$FLOW_ROOT" ]; then
            run systemctl daemon-reload || fail "systemctl daemon-reload failed"
        fi
    fi
    begin gpud-service
    if [ "$USE_SYSTEMD" = 1 ]; then
        systemd_service gpud-service gpud.service "$GPUD_RESTART"
    else
        fallback_gpud
    fi
    begin collector-service
    if [ ! -x "$VENV_FLOW" ]; then
        report collector-service skipped "$VENV_FLOW is absent: the collector is not started"
    elif [ "$USE_SYSTEMD" = 1 ]; then
        systemd_service collector-service flow-metrics-streamer.service "$COLLECTOR_RESTART"
    else
        fallback_collector
    fi
}

healthz_body() {
    if command -v curl >/dev/null 2>&1; then
        curl -sk --max-time 3 "$GPUD_HEALTHZ_URL" 2>/dev/null
    else
        wget -q -T 3 --no-check-certificate -O - "$GPUD_HEALTHZ_URL" 2>/dev/null
    fi
}

step_healthz() {
    begin healthz
    if [ -n "$FLOW_ROOT" ] && [ "$USE_SYSTEMD" = 1 ]; then
        report healthz skipped "installed into $FLOW_ROOT: nothing runs there yet"
        return 0
    fi
    if ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
        report healthz skipped "neither curl nor wget is installed: cannot check $GPUD_HEALTHZ_URL"
        return 0
    fi
    h_start=$(date +%s)
    while :; do
        h_body=$(healthz_body || :)
        case $h_body in
            *'"status"'*'"ok"'*)
                report healthz ok "GPUd answers $GPUD_HEALTHZ_URL"
                return 0
                ;;
        esac
        if [ "$USE_SYSTEMD" = 0 ] && ! pid_of "$GPUD_PID" >/dev/null; then
            service_log_tail gpud.service "$GPUD_LOG"
            fail "gpud exited before it answered $GPUD_HEALTHZ_URL (its log: $GPUD_LOG)"
        fi
        if [ $(($(date +%s) - h_start)) -ge "$HEALTHZ_TIMEOUT" ]; then
            service_log_tail gpud.service "$GPUD_LOG"
            fail "GPUd did not answer $GPUD_HEALTHZ_URL within ${HEALTHZ_TIMEOUT}s"
        fi
        sleep 1
    done
}

main() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM HUP
    open_log
    log "flow $FLOW_VERSION startup script: gpud $GPUD_VERSION on $GPUD_LISTEN"
    step_preflight
    step_gpud
    step_gpud_config
    step_units
    step_collector_venv
    step_collector_env
    step_state_dir
    step_services
    step_healthz
    finish
}

# Everything is read before anything runs, and no command can swallow the rest of a script
# that arrives on stdin (`sh -s`, as `flow health install` sends it).
main "$@" </dev/null
"""

_DISABLED_BODY = r"""
main() {
    open_log
    log "flow $FLOW_VERSION startup script"
    report monitoring skipped \
        "health monitoring is disabled (FLOW_HEALTH_MONITORING=false or health.enabled: false):" \
        "nothing was installed or changed (to remove an earlier install: flow health uninstall)"
    finish
}

main "$@" </dev/null
"""


def disabled_script(options: InstallOptions) -> str:
    """The script for a fleet with monitoring turned off: it logs why and changes nothing."""
    return assemble(
        "flow health startup script: health monitoring is DISABLED, this script only logs that",
        options,
        "",
        _DISABLED_BODY,
    )


def startup_script(options: InstallOptions) -> str:
    """The instance startup script for `options` (a no-op that says why when disabled)."""
    if not options.enabled:
        return disabled_script(options)
    return assemble(
        f"flow health startup script: installs GPUd {options.gpud_version} and the flow metrics collector",
        options,
        _settings(options) + _file_steps(options),
        _STARTUP_BODY,
    )
