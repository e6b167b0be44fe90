"""SSH: connections, remote commands, tunnels and host-key policy (asyncssh).

Takes plain connection parameters and knows nothing of tasks:

```python
from flow.ssh import SSHOptions, SSHParams, SSHPool

async with SSHPool(SSHOptions.from_config(config)) as pool:
    conn = await pool.connect(SSHParams(host="10.0.0.5", user="ubuntu"))
    status, out, err = await conn.run("uptime")
    tunnel = await conn.tunnel("127.0.0.1", 15132)    # -> tunnel.url() == "https://127.0.0.1:NNNNN"
```
Every failure is a `flow.errors.SSHError` whose `kind` is one of `SSH_ERROR_KINDS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flow.ssh.openssh import ssh_argv
from flow.ssh.params import SSH_ERROR_KINDS, CommandResult, SSHOptions, SSHParams

if TYPE_CHECKING:
    from flow.ssh.connection import ConnectFactory, SSHConnection, Tunnel, connect
    from flow.ssh.known_hosts import KnownHostsStore
    from flow.ssh.pool import SSHPool

__all__ = [
    "SSH_ERROR_KINDS",
    "CommandResult",
    "ConnectFactory",
    "KnownHostsStore",
    "SSHConnection",
    "SSHOptions",
    "SSHParams",
    "SSHPool",
    "Tunnel",
    "connect",
    "ssh_argv",
]

# asyncssh takes ~0.3 s to import (more on a busy machine); `flow tasks` and anything that only
# needs SSHParams must not pay for it, so the asyncssh-backed names load on first use (PEP 562).
_LAZY = {
    "ConnectFactory": "flow.ssh.connection",
    "SSHConnection": "flow.ssh.connection",
    "Tunnel": "flow.ssh.connection",
    "connect": "flow.ssh.connection",
    "KnownHostsStore": "flow.ssh.known_hosts",
    "SSHPool": "flow.ssh.pool",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flow.ssh' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
