"""The command line for the system `ssh` binary (`flow ssh`), from the same parameters and policy.

The interactive shell uses OpenSSH itself so that a TTY, escape sequences and the user's whole
ssh_config work. flow's known_hosts comes first in `UserKnownHostsFile`, so a key OpenSSH
accepts under `accept-new` is recorded where flow records keys, and keys flow recorded are
trusted by ssh too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from flow.ssh.params import DEFAULT_SSH_CONFIG_FILES, SSHOptions, SSHParams

__all__ = ["STRICT_HOST_KEY_CHECKING", "ssh_argv"]

#: host_key_policy -> OpenSSH StrictHostKeyChecking.
STRICT_HOST_KEY_CHECKING = {"strict": "yes", "accept-new": "accept-new", "off": "no"}


def _quote(path: Path) -> str:
    text = str(path.expanduser())
    return f'"{text}"' if any(c.isspace() for c in text) else text


def ssh_argv(
    params: SSHParams, options: SSHOptions, command: Sequence[str] = (), *, ssh_binary: str = "ssh"
) -> list[str]:
    """argv for `ssh` reaching `params` under `options`, running `command` if given.

    The command words are passed on as ssh passes them: joined by spaces and run by the remote
    user's shell.
    """
    argv = [ssh_binary]
    if params.port is not None:
        argv += ["-p", str(params.port)]
    if params.user is not None:
        argv += ["-l", params.user]
    for key in params.key_paths:
        argv += ["-i", str(key.expanduser())]
    if not params.use_agent:
        argv += ["-o", "IdentityAgent=none"]
    if options.ssh_config_files != DEFAULT_SSH_CONFIG_FILES:
        existing = options.existing_config_files()
        # ssh reads one -F file; /dev/null means "no config at all".
        argv += ["-F", str(existing[0]) if existing else "/dev/null"]
    argv += ["-o", f"StrictHostKeyChecking={STRICT_HOST_KEY_CHECKING[options.host_key_policy]}"]
    if options.host_key_policy == "off":
        argv += ["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    else:
        files = [options.known_hosts_file] if options.known_hosts_file is not None else []
        files += [f for f in options.user_known_hosts_files if f not in files]
        if files:
            argv += ["-o", "UserKnownHostsFile=" + " ".join(_quote(f) for f in files)]
    argv += ["-o", f"ConnectTimeout={max(1, math.ceil(options.connect_timeout_s))}"]
    argv += ["--", params.host, *command]
    return argv
