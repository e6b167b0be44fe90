"""Splitting a batch into requests that fit an API's size limits, in batch order.

Items carry the index of the snapshot they came from, so each request knows how many leading
snapshots are complete once it has been sent (`EncodedRequest.delivered`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from flow.health.sinks.base import EncodedRequest, SinkError

__all__ = ["pack_requests"]

T = TypeVar("T")


def pack_requests(
    items: Sequence[tuple[int, T]],
    *,
    total: int,
    size_of: Callable[[T], int],
    budget: int,
    build: Callable[[list[T], int], EncodedRequest],
    fits: Callable[[EncodedRequest], bool],
    sink: str,
) -> list[EncodedRequest]:
    """Greedy packing by estimated size, then halving any request that does not fit.

    `total` is the batch's snapshot count; `build(chunk, delivered)` encodes one request;
    `fits(request)` checks it against the real limits (compressed size, say).

    Raises:
        SinkError: (not retryable) a single item does not fit on its own.
    """
    chunks: list[list[tuple[int, T]]] = []
    current: list[tuple[int, T]] = []
    size = 0
    for item in items:
        item_size = size_of(item[1])
        if current and size + item_size > budget:
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        chunks.append(current)

    requests: list[EncodedRequest] = []
    pending = list(reversed(chunks))
    remaining = len(items)
    while pending:
        chunk = pending.pop()
        after = remaining - len(chunk)  # items still to send once this chunk is sent
        delivered = items[len(items) - after][0] if after else total
        request = build([value for _, value in chunk], delivered)
        if fits(request):
            requests.append(request)
            remaining = after
            continue
        if len(chunk) == 1:
            raise SinkError(
                f"{sink}: one item encodes to {len(request.payload)} bytes, over the request size limit",
                retryable=False,
                sink=sink,
                delivered=requests[-1].delivered if requests else 0,
            )
        half = len(chunk) // 2
        pending += [chunk[half:], chunk[:half]]
    return requests
