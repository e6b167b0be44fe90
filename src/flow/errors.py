"""The exception tree of flow.

```
FlowError                 anything flow raises on purpose
├── ConfigError           a bad setting: names the variable or key, the value and what is allowed
├── InventoryError        tasks.yaml, an unknown or ambiguous task name
├── StorageError          the metrics store could not be written
└── TransportError        reaching a node failed
    ├── SSHError          connect, authenticate, host key, tunnel
    └── GPUdError         GPUd answered badly or not at all
        ├── GPUdTimeout   GPUd did not answer within the deadline
        └── GPUdStatusError  GPUd answered with an error status
```
Context is keyword-only, as in httpx: `host=`, `url=`, `path=`.
"""

from __future__ import annotations

from pathlib import Path

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
]


class FlowError(Exception):
    """Base class: the CLI turns any of these into `ERROR: message` and an exit code."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(FlowError):
    """A setting, option or file has a value that is not allowed (exit 2)."""

    exit_code = 2

    def __init__(
        self, message: str, *, path: Path | str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class InventoryError(FlowError):
    """The task inventory is unreadable, or a task name is unknown or ambiguous (exit 2)."""

    exit_code = 2

    def __init__(
        self, message: str, *, path: Path | str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class StorageError(FlowError):
    """The metrics store could not be created or written."""

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = path


class TransportError(FlowError):
    """Reaching a node failed."""

    def __init__(self, message: str, *, host: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host


class SSHError(TransportError):
    """SSH connect, authentication, host-key check or port forwarding failed.

    `kind` is one of: dns, refused, timeout, auth, host_key_changed, host_key_unknown,
    tunnel, gpud_not_listening (the forwarded remote port is closed), closed, error.
    """

    def __init__(
        self, message: str, *, host: str | None = None, kind: str = "error", hint: str | None = None
    ) -> None:
        super().__init__(message, host=host, hint=hint)
        self.kind = kind


class GPUdError(TransportError):
    """GPUd answered badly or not at all.

    `kind` is the failure class, as in `GpudStatus.state`: not_listening, tls_error, timeout,
    bad_response, error_response (or error).
    """

    default_kind = "error"

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        url: str | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message, host=host)
        self.url = url
        self.kind = kind or self.default_kind


class GPUdTimeout(GPUdError):
    """GPUd did not answer within the deadline."""

    default_kind = "timeout"


class GPUdStatusError(GPUdError):
    """GPUd answered with a non-2xx status, or with its JSON error body."""

    default_kind = "error_response"

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        host: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, host=host, url=url)
        self.status_code = status_code
