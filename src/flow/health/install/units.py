"""The files the install writes, as text: GPUd's flags, both systemd units, the collector's env file.

Pure functions of `InstallOptions`. The script compares each against what is on the node and
writes only what differs, so the text must be deterministic (no timestamps, no host names).
Every value goes in through a quoting helper of `shell.py`: `env_assignment` for the two files
that systemd and `sh` both read, `systemd_word` for the units.
"""

from __future__ import annotations

from flow.health.install import layout
from flow.health.install.options import InstallOptions
from flow.health.install.shell import env_assignment, systemd_word

__all__ = ["collector_unit", "gpud_defaults", "gpud_unit", "metrics_env"]

_HEADER = "# Written by flow (flow health install); `flow health uninstall` removes it.\n"


def gpud_defaults(options: InstallOptions) -> str:
    """/etc/default/gpud: GPUd listens on loopback only (its own default is every interface)."""
    return (
        _HEADER
        + "# GPUd binds to loopback: flow reaches it through SSH tunnels, never over the network.\n"
        + env_assignment("FLAGS", f"--listen-address={options.listen_address}")
    )


def gpud_unit() -> str:
    """/etc/systemd/system/gpud.service, shaped like the unit `gpud up` writes."""
    defaults = systemd_word(layout.GPUD_DEFAULTS)
    binary = systemd_word(layout.GPUD_BIN)
    return f"""{_HEADER}[Unit]
Description=GPUd GPU health agent (installed by flow)
Documentation=https://github.com/leptonai/gpud
Wants=network-online.target
After=network-online.target local-fs.target

[Service]
# GPUd tells systemd when it is ready (sd_notify), as in the unit `gpud up` writes.
Type=notify
EnvironmentFile=-{defaults}
ExecStart={binary} run $FLAGS
Restart=always
RestartSec=5s
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def collector_unit() -> str:
    """/etc/systemd/system/flow-metrics-streamer.service, hardened (docs/install.md explains each line)."""
    env_file = systemd_word(layout.ENV_FILE)
    flow = systemd_word(layout.VENV_FLOW)
    state_dir = systemd_word(layout.STATE_DIR)
    return f"""{_HEADER}[Unit]
Description=flow health metrics collector (flow-metrics-streamer)
Wants=network-online.target gpud.service
After=network-online.target gpud.service

[Service]
Type=simple
EnvironmentFile={env_file}
ExecStart={flow} health collect
# Only a failure restarts it: a clean exit (SIGTERM, or FLOW_HEALTH_MONITORING=false, where
# the collector exits 0 at once) stays stopped instead of restarting in a loop.
Restart=on-failure
RestartSec=10s
# /var/lib/flow: the metrics store and the streaming cursor (FLOW_HOME, FLOW_METRICS_DIR).
StateDirectory=flow
StateDirectoryMode=0750
UMask=0077
# Hardening: it reads GPUd over loopback HTTPS and /proc, and writes only its state directory.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={state_dir}
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
CapabilityBoundingSet=
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""


def _number(value: float) -> str:
    return f"{value:g}"


def metrics_env(options: InstallOptions) -> str:
    """/etc/flow/metrics.env (mode 0600): the collector's settings and the token.

    Values are single-quoted (`env_assignment`), which both systemd's EnvironmentFile= and POSIX
    `sh` read literally; `InstallOptions` refuses values that hold a quote or a backslash. An
    empty value means "unset" to flow's config loader (no endpoint, no token).
    """
    rows = (
        ("FLOW_TASK_ID", options.task_id or ""),
        ("FLOW_TASK_NAME", options.task_name or ""),
        ("FLOW_INSTANCE_TYPE", options.instance_type or ""),
        ("FLOW_EXPECTED_GPUS", "" if options.expected_gpus is None else str(options.expected_gpus)),
        ("FLOW_GPUD_BIND", options.gpud_bind),
        ("FLOW_GPUD_PORT", str(options.gpud_port)),
        ("FLOW_GPUD_VERSION", options.gpud_version),
        ("FLOW_METRICS_ENDPOINT", options.metrics_endpoint or ""),
        ("FLOW_METRICS_INTERVAL", _number(options.metrics_interval)),
        ("FLOW_METRICS_BATCH_SIZE", str(options.metrics_batch_size)),
        ("FLOW_METRICS_FLUSH_INTERVAL", _number(options.metrics_flush_interval)),
        ("FLOW_METRICS_RETENTION_DAYS", str(options.retention_days)),
        ("FLOW_METRICS_COMPRESS_AFTER_DAYS", str(options.compress_after_days)),
        ("FLOW_METRICS_AUTH_TOKEN", options.auth_token or ""),
        ("FLOW_HOME", layout.STATE_DIR),
        ("FLOW_METRICS_DIR", layout.STORE_DIR),
    )
    body = "".join(env_assignment(name, value) for name, value in rows)
    return (
        _HEADER
        + "# Read by flow-metrics-streamer.service (EnvironmentFile=). Mode 0600: it holds the token.\n"
        + body
    )
