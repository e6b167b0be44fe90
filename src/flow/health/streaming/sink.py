"""What the stream sender needs from a destination: one async call per batch.

A destination acknowledges a batch by returning from `send`; it refuses one by raising
`DeliveryError`. `retryable` tells the sender how to wait: with exponential backoff (network
errors, timeouts, 408, 429, 5xx), or at the capped interval (a rejected token or payload,
which retrying soon will not fix). Either way the batch stays on disk and is sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["BatchSink", "DeliveryError"]


class DeliveryError(Exception):
    """A batch was not acknowledged. `status` is the HTTP status, None for network errors."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def kind(self) -> str:
        """A short class of failure, used to log a change of failure once rather than each retry."""
        return f"http {self.status}" if self.status is not None else self.message.split(":", 1)[0]

    def __str__(self) -> str:
        return self.message


class BatchSink(Protocol):
    """A destination for snapshots, given as the store's lines (`Snapshot.to_json()` bytes).

    Taking the stored bytes rather than `Snapshot` instances lets a backlog replay skip
    decoding them at all (see `payload.record_from_line`); a sink that wants snapshots calls
    `Snapshot.from_json`.
    """

    @property
    def destination(self) -> str:
        """Where the records go, without credentials (logged, and kept in the cursor)."""
        ...

    async def send(self, lines: Sequence[bytes]) -> None:
        """Deliver one batch, oldest record first.

        Raises:
            DeliveryError: the batch was not acknowledged.
        """
        ...

    async def aclose(self) -> None: ...
