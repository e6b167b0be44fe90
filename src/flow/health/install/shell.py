"""Pieces shared by the generated shell scripts: quoting, the path header, the step reporter.

Every value that enters a generated file goes through one of the quoting helpers here, each for
the reader of that file, and never through a bare f-string:

- `sh_quote`: one POSIX shell word (the scripts' settings, arguments);
- `env_assignment`: `NAME='value'` for files that both `sh` sources and systemd reads with
  EnvironmentFile= (/etc/flow/metrics.env, /etc/default/gpud); single quotes are literal to
  both, so a value may hold anything printable except `'` and `\\` (`flow.grammar.is_text`);
- `systemd_word`: one word of a systemd unit line (`%` specifiers doubled, and `$` too in a
  command's arguments, where systemd expands variables; never in the executable's path, where
  `$` is literal);
- `sh_comment`: text after `#`, which must stay on its line.

Each helper raises `ValueError` for a value its reader cannot take literally; `InstallOptions`
has refused such values before with a `ConfigError`, so this is the second line of defence.

Every script is POSIX `sh` (dash, busybox ash, bash) and must pass `shellcheck` and `sh -n`.
Each one reports progress as lines `[flow] STEP: STATUS: MESSAGE` on stdout (STATUS is one of
`STEP_STATUSES`), and ends with `[flow] result: changed|unchanged|failed`; `report.py` parses them.
"""

from __future__ import annotations

import re
import shlex

from flow import __version__
from flow.grammar import is_text
from flow.health.install import layout

__all__ = [
    "COMMON_STATE",
    "HEREDOC_END",
    "RESULT_STATUSES",
    "STEP_STATUSES",
    "common_functions",
    "env_assignment",
    "path_header",
    "script_header",
    "sh_comment",
    "sh_quote",
    "systemd_word",
]

#: What one step can report: it changed something, found it right already, was not needed,
#: checked something successfully, or failed (and stopped the script).
STEP_STATUSES = ("changed", "unchanged", "skipped", "ok", "failed")
RESULT_STATUSES = ("changed", "unchanged", "failed")
HEREDOC_END = "FLOW_EOF"

_SAFE_PATH_RE = re.compile(r"/[A-Za-z0-9/._-]+")
_ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")
# systemd splits unit lines on whitespace and reads quotes and backslashes as its own syntax.
_SYSTEMD_SPECIAL_RE = re.compile(r"[\s'\"\\;]")

# The shell variable each layout path is known by inside the scripts.
_PATH_VARS: tuple[tuple[str, str], ...] = (
    ("GPUD_BIN", layout.GPUD_BIN),
    ("GPUD_DEFAULTS", layout.GPUD_DEFAULTS),
    ("GPUD_UNIT", layout.GPUD_UNIT),
    ("GPUD_STATE_DIR", layout.GPUD_STATE_DIR),
    ("COLLECTOR_UNIT", layout.COLLECTOR_UNIT),
    ("ENV_DIR", layout.ENV_DIR),
    ("ENV_FILE", layout.ENV_FILE),
    ("OPT_DIR", layout.OPT_DIR),
    ("VENV_DIR", layout.VENV_DIR),
    ("VENV_FLOW", layout.VENV_FLOW),
    ("VENV_MARKER", layout.VENV_MARKER),
    ("STATE_DIR", layout.STATE_DIR),
    ("STORE_DIR", layout.STORE_DIR),
    ("CURSOR_FILE", layout.CURSOR_FILE),
    ("LOG_DIR", layout.LOG_DIR),
    ("STARTUP_LOG", layout.STARTUP_LOG),
    ("GPUD_LOG", layout.GPUD_LOG),
    ("COLLECTOR_LOG", layout.COLLECTOR_LOG),
    ("RUN_DIR", layout.RUN_DIR),
    ("GPUD_PID", layout.GPUD_PID),
    ("COLLECTOR_PID", layout.COLLECTOR_PID),
    ("LOCK_DIR", layout.LOCK_DIR),
)


def sh_quote(value: str) -> str:
    """One shell word that stands for `value` exactly (single-quoted when needed).

    Raises:
        ValueError: `value` holds NUL, which no shell word (no C string) can carry.
    """
    if "\0" in value:
        raise ValueError(f"{value!r} holds NUL; a shell word cannot carry it")
    return shlex.quote(value)


def sh_comment(text: str) -> str:
    """`text` for after a `#`: one line, so nothing of it can become a command.

    Raises:
        ValueError: `text` holds a line break or another control character.
    """
    if not text.isprintable():
        raise ValueError(f"{text!r} holds a control character; a comment must stay on its line")
    return text


def env_assignment(name: str, value: str) -> str:
    """`NAME='value'` plus a newline, read the same by `sh` (`.`) and systemd's EnvironmentFile=.

    Raises:
        ValueError: `name` is not a variable name, or `value` holds `'`, `\\` or a control
            character (inside single quotes systemd and sh take the rest literally, but neither
            can hold a single quote there, and a backslash outside them differs between the two).
    """
    if not _ENV_NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not an environment variable name")
    if not is_text(value):
        raise ValueError(f"{name}: the value holds a quote, backslash or control character")
    return f"{name}='{value}'\n"


def systemd_word(value: str, *, argument: bool = False) -> str:
    """One word of a unit file line: `%` becomes `%%` (specifiers), and in a command's
    `argument` (ExecStart= after the executable) `$` becomes `$$` (variable expansion). The
    executable's own path and other settings take `$` literally (`systemd-analyze verify` shows
    `$$` kept there), so it is left alone.

    Raises:
        ValueError: `value` holds whitespace, a quote, a backslash, `;` or a control character,
            which systemd reads as its own syntax.
    """
    if not value or not value.isprintable() or _SYSTEMD_SPECIAL_RE.search(value):
        raise ValueError(f"{value!r} cannot be one word of a systemd unit line")
    value = value.replace("%", "%%")
    return value.replace("$", "$$") if argument else value


def script_header(title: str, *, root: str, systemd: str) -> str:
    """Shebang, provenance and the two overridable variables (FLOW_ROOT, FLOW_SYSTEMD)."""
    return f"""#!/bin/sh
# {sh_comment(title)}
# Generated by flow {__version__}. POSIX sh; safe to run again: it changes only what differs.
# FLOW_ROOT=<dir> works inside <dir> instead of / (tests, image builds);
# FLOW_SYSTEMD=auto|yes|no overrides the systemd detection.
set -u
umask 022
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export PATH
FLOW_ROOT=${{FLOW_ROOT-{sh_quote(root) if root else ""}}}
FLOW_SYSTEMD=${{FLOW_SYSTEMD-{sh_quote(systemd)}}}
FLOW_VERSION={sh_quote(__version__)}
"""


def path_header() -> str:
    """`NAME="$FLOW_ROOT/abs/path"` for every path of `layout`."""
    lines = []
    for name, path in _PATH_VARS:
        # The paths are constants; refuse anything that would need quoting inside "...".
        if not _SAFE_PATH_RE.fullmatch(path):
            raise ValueError(f"layout path {path!r} holds characters a script cannot take as they are")
        lines.append(f'{name}="$FLOW_ROOT{path}"')
    return "\n".join(lines) + "\n"


#: Variables the shared functions rely on; every script that uses them starts with these.
COMMON_STATE = """
CHANGED=0
STEP=start
STEP_MARK=0
LOG_READY=0
USE_SYSTEMD=0
WORK=
"""

#: Shared shell functions by name; `common_functions()` picks the ones a script calls.
_FUNCTIONS: tuple[tuple[str, str], ...] = (
    ("log", r"""
log() {  # MESSAGE...: one timestamped line in the startup log (never on stdout)
    if [ "$LOG_READY" = 1 ]; then
        printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$STARTUP_LOG" 2>/dev/null || :
    fi
}
"""),
    ("report", r"""
report() {  # STEP STATUS MESSAGE...: the progress line `flow health install` parses
    r_step=$1
    r_status=$2
    shift 2
    printf '[flow] %s: %s: %s\n' "$r_step" "$r_status" "$*"
    log "[flow] $r_step: $r_status: $*"
    if [ "$r_status" = changed ]; then CHANGED=1; fi
}
"""),
    ("begin", r"""
begin() {  # STEP: start a step; remember where its log lines begin
    STEP=$1
    STEP_MARK=0
    if [ "$LOG_READY" = 1 ] && [ -f "$STARTUP_LOG" ]; then
        STEP_MARK=$(wc -l <"$STARTUP_LOG" | tr -d ' ')
    fi
    log "== $STEP"
}
"""),
    ("fail", r"""
fail() {  # MESSAGE...: report the current step as failed, show its last log lines, stop
    report "$STEP" failed "$*"
    if [ "$LOG_READY" = 1 ] && [ -f "$STARTUP_LOG" ]; then
        tail -n "+$((STEP_MARK + 1))" "$STARTUP_LOG" | tail -n 20 | sed 's/^/[flow] log| /'
    fi
    printf '[flow] result: failed\n'
    log "[flow] result: failed"
    exit 1
}
"""),
    ("finish", r"""
finish() {  # the final line: changed or unchanged
    if [ "$CHANGED" = 1 ]; then f_result=changed; else f_result=unchanged; fi
    printf '[flow] result: %s\n' "$f_result"
    log "[flow] result: $f_result"
    exit 0
}
"""),
    ("run", r"""
run() {  # CMD ARGS...: run a command, its output into the log (arguments never hold secrets)
    log "\$ $*"
    if [ "$LOG_READY" = 1 ]; then
        "$@" >>"$STARTUP_LOG" 2>&1
    else
        "$@" >/dev/null 2>&1
    fi
}
"""),
    ("cleanup", r"""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {  # remove the scratch directory and our lock
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
    if [ -d "$LOCK_DIR" ] && [ "$(cat "$LOCK_DIR/pid" 2>/dev/null)" = "$$" ]; then
        rm -rf "$LOCK_DIR"
        rmdir "$RUN_DIR" 2>/dev/null || :
    fi
}
"""),
    ("open_log", r"""
open_log() {  # create the log directory and file (0755 / 0640)
    if mkdir -p "$LOG_DIR" 2>/dev/null && touch "$STARTUP_LOG" 2>/dev/null; then
        LOG_READY=1
        chmod 0640 "$STARTUP_LOG" 2>/dev/null || :
    fi
}
"""),
    ("need_root", r"""
need_root() {  # the real root needs root; an alternative root needs only write access to it
    if [ -z "$FLOW_ROOT" ] && [ "$(id -u)" != 0 ]; then
        fail "must run as root (run it with sudo, or as root at instance start)"
    fi
    if [ -n "$FLOW_ROOT" ] && [ ! -d "$FLOW_ROOT" ]; then
        fail "FLOW_ROOT=$FLOW_ROOT is not a directory"
    fi
}
"""),
    ("take_lock", r"""
take_lock() {  # one install/uninstall at a time on a node; a stale lock (dead pid) is taken over
    mkdir -p "$RUN_DIR" || fail "cannot create $RUN_DIR"
    if ! mkdir "$LOCK_DIR" 2>/dev/null; then
        l_other=$(cat "$LOCK_DIR/pid" 2>/dev/null || :)
        if [ -n "$l_other" ] && kill -0 "$l_other" 2>/dev/null; then
            fail "another flow install or uninstall is running (pid $l_other, lock $LOCK_DIR)"
        fi
        rm -rf "$LOCK_DIR"
        mkdir "$LOCK_DIR" || fail "cannot take the lock $LOCK_DIR"
    fi
    echo "$$" >"$LOCK_DIR/pid"
}
"""),
    ("detect_systemd", r"""
detect_systemd() {  # USE_SYSTEMD=1 when systemd runs this machine (or FLOW_SYSTEMD=yes)
    case $FLOW_SYSTEMD in
        yes) USE_SYSTEMD=1 ;;
        no) USE_SYSTEMD=0 ;;
        *)
            if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
                USE_SYSTEMD=1
            else
                USE_SYSTEMD=0
            fi
            ;;
    esac
}
"""),
    ("pid_of", r"""
pid_of() {  # PIDFILE: print the pid recorded there when that process is alive
    [ -f "$1" ] || return 1
    p_pid=$(cat "$1" 2>/dev/null || :)
    case $p_pid in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$p_pid" 2>/dev/null || return 1
    printf '%s\n' "$p_pid"
}
"""),
    ("stop_pidfile", r"""
stop_pidfile() {  # PIDFILE: stop that process (TERM, then KILL after 10 s) and remove the file
    if s_pid=$(pid_of "$1"); then
        kill "$s_pid" 2>/dev/null || :
        s_i=0
        while kill -0 "$s_pid" 2>/dev/null && [ "$s_i" -lt 20 ]; do
            sleep 0.5 2>/dev/null || sleep 1
            s_i=$((s_i + 1))
        done
        if kill -0 "$s_pid" 2>/dev/null; then kill -9 "$s_pid" 2>/dev/null || :; fi
        rm -f "$1"
        return 0
    fi
    rm -f "$1"
    return 1
}
"""),
    ("gpud_version_of", r"""
gpud_version_of() {  # BINARY: print its release tag (vX.Y.Z), or nothing
    [ -x "$1" ] || return 0
    v_out=$("$1" --version 2>/dev/null || :)
    if [ -z "$v_out" ]; then v_out=$("$1" version 2>/dev/null || :); fi
    printf '%s\n' "$v_out" | grep -oE 'v[0-9]+\.[0-9]+\.[0-9]+[-+.0-9A-Za-z]*' | head -n 1 | sed 's/[.]*$//'
}
"""),
)


def common_functions(text: str) -> str:
    """The shared functions that `text` calls, directly or through another shared function."""
    wanted: set[str] = set()
    # Comments do not call anything ("one line of the report" is not a call to report).
    scope = re.sub(r"(^|\s)#[^\n]*", r"\1", text)
    changed = True
    while changed:
        changed = False
        for name, body in _FUNCTIONS:
            if name not in wanted and re.search(rf"(?<![\w-]){name}\b(?!\(\))", scope):
                wanted.add(name)
                scope += re.sub(r"(^|\s)#[^\n]*", r"\1", body)
                changed = True
    return "".join(body for name, body in _FUNCTIONS if name in wanted)
