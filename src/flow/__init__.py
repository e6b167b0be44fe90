"""flow health: GPU fleet health monitoring over GPUd and SSH."""

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
