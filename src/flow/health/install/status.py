"""`flow health status`: what is installed and running on a node, read over SSH.

`status_script(options)` prints `key=value` lines (it changes nothing); `parse_status` turns
them into a `NodeStatus`. What it reads (docs/install.md):

- service state: `systemctl is-active` under systemd, else the fallback's pid files;
- versions: `gpud --version`, `/opt/flow/venv/bin/flow --version`;
- GPUd's `/healthz` at the listen address written in /etc/default/gpud;
- the store (/var/lib/flow/metrics/<task>/<day>.jsonl[.gz]): file count, bytes, the newest
  file and the timestamp of its last snapshot;
- the stream cursor (/var/lib/flow/metrics/.collector/stream-cursor.json): what the endpoint
  acknowledged, and the backlog: stored snapshots newer than the cursor's `last_timestamp`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from flow.health.install.options import InstallOptions
from flow.health.install.script import assemble
from flow.health.install.shell import sh_quote
from flow.health.snapshot import parse_time

__all__ = ["NodeStatus", "parse_status", "status_script"]

_BODY = r"""
say() {  # KEY VALUE: one line of the report (values are kept to one line)
    printf '%s=%s\n' "$1" "$(printf '%s' "$2" | tr '\n' ' ')"
}

service_state() {  # UNIT PIDFILE
    if [ "$USE_SYSTEMD" = 1 ] && [ -z "$FLOW_ROOT" ]; then
        systemctl is-active "$1" 2>/dev/null | head -n 1
    elif q_pid=$(pid_of "$2"); then
        printf 'running (pid %s, no systemd)\n' "$q_pid"
    elif [ -f "$2" ]; then
        printf 'dead (stale pid file %s)\n' "$2"
    else
        printf 'stopped\n'
    fi
}

snapshot_lines() {  # every stored snapshot line, oldest day first
    for q_file in "$STORE_DIR"/*/*.jsonl.gz "$STORE_DIR"/*/*.jsonl; do
        [ -f "$q_file" ] || continue
        case $q_file in
            *.gz) gzip -dc "$q_file" 2>/dev/null || : ;;
            *) cat "$q_file" ;;
        esac
    done
}

first_timestamp() {  # the first "timestamp" value of each input line (the snapshot's own)
    grep -oE '"timestamp": ?"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/'
}

main() {
    say script.version "$FLOW_VERSION"
    detect_systemd
    if [ "$USE_SYSTEMD" = 1 ]; then say systemd yes; else say systemd no; fi
    if [ -x "$GPUD_BIN" ]; then
        say gpud.installed yes
        say gpud.version "$(gpud_version_of "$GPUD_BIN")"
    else
        say gpud.installed no
    fi
    say gpud.service "$(service_state gpud.service "$GPUD_PID")"
    # FLAGS='--listen-address=...' (or "..." as earlier versions and `gpud up` write it).
    q_listen=$(sed -n "s/.*--listen-address=\\([^ \"']*\\).*/\\1/p" "$GPUD_DEFAULTS" 2>/dev/null | head -n 1)
    say gpud.listen "${q_listen:-$GPUD_LISTEN}"
    q_body=$(curl -sk --max-time 3 "https://${q_listen:-$GPUD_LISTEN}/healthz" 2>/dev/null || :)
    case $q_body in
        *'"status"'*'"ok"'*) say gpud.healthz ok ;;
        *) say gpud.healthz unreachable ;;
    esac
    if [ -x "$VENV_FLOW" ]; then
        say collector.installed yes
        say collector.version "$("$VENV_FLOW" --version 2>/dev/null | head -n 1)"
        say collector.package "$(cat "$VENV_MARKER" 2>/dev/null || :)"
    else
        say collector.installed no
    fi
    say collector.service "$(service_state flow-metrics-streamer.service "$COLLECTOR_PID")"
    if [ -f "$ENV_FILE" ]; then say env.mode "$(stat -c %a "$ENV_FILE")"; fi
    q_count=0
    q_bytes=0
    q_newest=
    q_newest_mtime=0
    for q_file in "$STORE_DIR"/*/*.jsonl.gz "$STORE_DIR"/*/*.jsonl; do
        [ -f "$q_file" ] || continue
        q_count=$((q_count + 1))
        q_bytes=$((q_bytes + $(stat -c %s "$q_file")))
        q_mtime=$(stat -c %Y "$q_file")
        if [ "$q_mtime" -ge "$q_newest_mtime" ]; then
            q_newest=$q_file
            q_newest_mtime=$q_mtime
        fi
    done
    say store.files "$q_count"
    say store.bytes "$q_bytes"
    if [ -n "$q_newest" ]; then
        say store.newest "${q_newest#"$FLOW_ROOT"}"
        say store.newest_mtime "$q_newest_mtime"
        case $q_newest in
            *.gz) q_last=$(gzip -dc "$q_newest" 2>/dev/null | tail -n 1 | first_timestamp) ;;
            *) q_last=$(tail -n 1 "$q_newest" | first_timestamp) ;;
        esac
        say sample.last "$q_last"
    fi
    if [ -f "$CURSOR_FILE" ]; then
        say cursor.json "$(head -c 8192 "$CURSOR_FILE")"
        q_since=$(grep -oE '"last_timestamp": ?"[^"]*"' "$CURSOR_FILE" | head -n 1 |
            sed 's/.*"\([^"]*\)"$/\1/')
        if [ -n "$q_since" ]; then
            # Timestamps share one fixed-width UTC format, so string order is time order.
            q_backlog=$(snapshot_lines | awk -v since="$q_since" '
                match($0, /"timestamp": ?"[^"]*"/) {
                    t = substr($0, RSTART, RLENGTH)
                    sub(/^"timestamp": ?"/, "", t)
                    sub(/"$/, "", t)
                    if (t > since) n++
                }
                END { print n + 0 }')
            say backlog.records "$q_backlog"
        fi
    fi
    say end ok
}

main "$@" </dev/null
"""


@dataclass(frozen=True, kw_only=True)
class NodeStatus:
    """One node's install state. Unknown or absent readings are None.

    `backlog_records` is the number of stored snapshots newer than the cursor's last delivered
    one; None when there is no cursor (no endpoint configured, or nothing delivered yet).
    """

    node: str
    systemd: bool | None = None
    gpud_installed: bool = False
    gpud_version: str | None = None
    gpud_service: str | None = None
    gpud_listen: str | None = None
    gpud_healthy: bool | None = None
    collector_installed: bool = False
    collector_version: str | None = None
    collector_package: str | None = None
    collector_service: str | None = None
    env_mode: str | None = None
    store_files: int = 0
    store_bytes: int = 0
    store_newest: str | None = None
    last_sample: datetime | None = None
    cursor: Mapping[str, Any] | None = None
    backlog_records: int | None = None
    error: str | None = None

    @property
    def last_delivered(self) -> str | None:
        """The timestamp of the last snapshot the endpoint acknowledged (from the cursor)."""
        if self.cursor is None:
            return None
        value = self.cursor.get("last_timestamp")
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "systemd": self.systemd,
            "gpud": {
                "installed": self.gpud_installed,
                "version": self.gpud_version,
                "service": self.gpud_service,
                "listen": self.gpud_listen,
                "healthz": self.gpud_healthy,
            },
            "collector": {
                "installed": self.collector_installed,
                "version": self.collector_version,
                "package": self.collector_package,
                "service": self.collector_service,
                "env_mode": self.env_mode,
            },
            "store": {
                "files": self.store_files,
                "bytes": self.store_bytes,
                "newest": self.store_newest,
                "last_sample": self.last_sample.isoformat().replace("+00:00", "Z")
                if self.last_sample else None,
            },
            "delivery": {
                "cursor": dict(self.cursor) if self.cursor is not None else None,
                "last_delivered": self.last_delivered,
                "backlog_records": self.backlog_records,
            },
            "error": self.error,
        }


def status_script(options: InstallOptions) -> str:
    """The read-only status script; `options` supplies root, systemd and the listen address."""
    settings = f"\nGPUD_LISTEN={sh_quote(options.listen_address)}\n"
    return assemble("flow health status: reads the install state (changes nothing)", options, settings, _BODY)


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def parse_status(node: str, output: str) -> NodeStatus:
    """Read the status script's `key=value` lines; a missing `end=ok` line is an error."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key:
            values[key] = value.strip()
    if values.get("end") != "ok":
        return NodeStatus(node=node, error="the status script did not finish")
    cursor: Mapping[str, Any] | None = None
    if "cursor.json" in values:
        try:
            loaded = orjson.loads(values["cursor.json"])
            cursor = loaded if isinstance(loaded, dict) else {"raw": values["cursor.json"]}
        except orjson.JSONDecodeError:
            cursor = {"raw": values["cursor.json"]}
    last_sample: datetime | None = None
    if values.get("sample.last"):
        try:
            last_sample = parse_time(values["sample.last"])
        except ValueError:
            last_sample = None

    def text(key: str) -> str | None:
        return values.get(key) or None

    healthz = values.get("gpud.healthz")
    return NodeStatus(
        node=node,
        systemd={"yes": True, "no": False}.get(values.get("systemd", "")),
        gpud_installed=values.get("gpud.installed") == "yes",
        gpud_version=text("gpud.version"),
        gpud_service=text("gpud.service"),
        gpud_listen=text("gpud.listen"),
        gpud_healthy=None if healthz is None else healthz == "ok",
        collector_installed=values.get("collector.installed") == "yes",
        collector_version=text("collector.version"),
        collector_package=text("collector.package"),
        collector_service=text("collector.service"),
        env_mode=text("env.mode"),
        store_files=_int(values.get("store.files")),
        store_bytes=_int(values.get("store.bytes")),
        store_newest=text("store.newest"),
        last_sample=last_sample,
        cursor=cursor,
        backlog_records=_int(values["backlog.records"]) if "backlog.records" in values else None,
    )
