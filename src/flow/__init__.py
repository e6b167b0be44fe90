"""flow health: GPU fleet health monitoring over GPUd and SSH."""

import warnings

from flow.errors import (
    ConfigError,
    FlowError,
    GPUdError,
    GPUdStatusError,
    GPUdTimeout,
    InventoryError,
    SSHError,
    StorageError,
    TransportError,
)

__all__ = [
    "ConfigError",
    "FlowError",
    "GPUdError",
    "GPUdStatusError",
    "GPUdTimeout",
    "InventoryError",
    "SSHError",
    "StorageError",
    "TransportError",
    "__version__",
]

__version__ = "0.1.0"

# asyncssh still names DSA key classes in its type aliases, and recent cryptography (51 here)
# warns at each: importing asyncssh would print fifteen CryptographyDeprecationWarning lines on
# every command that uses SSH. flow never offers or accepts DSA keys; only these warnings, raised in
# asyncssh's own modules, are silenced.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh(\.|$)")
