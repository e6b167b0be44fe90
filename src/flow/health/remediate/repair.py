"""After a repair: GPUd's `POST /v1/health-states/set-healthy` (GPUd v0.8 and later).

GPUd keeps some faults sticky (an XID stays in its event store, so its component stays
Unhealthy, until the events are purged). Once the GPU is repaired, set-healthy purges them for
the named components. Older GPUd versions do not have the endpoint: `SetHealthyUnsupported`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from flow.errors import FlowError, GPUdError
from flow.text import clean_text

__all__ = ["SET_HEALTHY_PATH", "SET_HEALTHY_SINCE", "SetHealthyResult", "SetHealthyUnsupported",
           "set_healthy", "supports_set_healthy"]

SET_HEALTHY_PATH = "/v1/health-states/set-healthy"
SET_HEALTHY_SINCE = (0, 8, 0)
_MAX_ANSWER_BYTES = 1024 * 1024
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


class SetHealthyUnsupported(FlowError):
    """The node's GPUd predates set-healthy (v0.8.0)."""


@dataclass(frozen=True)
class SetHealthyResult:
    successful: tuple[str, ...]
    failed: dict[str, str] = field(default_factory=dict)


def supports_set_healthy(version: str | None) -> bool | None:
    """True/False from a `gpudVersion` such as `v0.8.1`; None when it cannot be told."""
    match = _VERSION_RE.match((version or "").strip())
    if not match:
        return None
    return tuple(int(g) for g in match.groups()) >= SET_HEALTHY_SINCE


def _decode(body: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


async def set_healthy(base_url: str, components: list[str], *, timeout_s: float = 20.0,
                      where: str = "the node") -> SetHealthyResult:
    """Ask the GPUd at `base_url` to set `components` healthy.

    Raises:
        SetHealthyUnsupported: GPUd answered 404 without naming a component (no such path).
        GPUdError: GPUd unreachable, too slow, or it refused (the message holds its words).
    """
    url = f"{base_url.rstrip('/')}{SET_HEALTHY_PATH}"
    body = bytearray()
    try:
        async with httpx.AsyncClient(verify=False, trust_env=False, follow_redirects=False,
                                     timeout=httpx.Timeout(timeout_s)) as http, \
                http.stream("POST", url, params={"components": ",".join(components)},
                            headers={"Accept": "application/json"}) as response:
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > _MAX_ANSWER_BYTES:
                    raise GPUdError(f"GPUd on {where} answered set-healthy with more than "
                                    f"{_MAX_ANSWER_BYTES} bytes", url=url, kind="bad_response")
            status = response.status_code
    except httpx.TimeoutException:
        raise GPUdError(f"GPUd on {where} did not answer set-healthy within {timeout_s:g} s",
                        url=url, kind="timeout") from None
    except httpx.HTTPError as exc:
        raise GPUdError(f"GPUd on {where} could not be asked: {clean_text(str(exc), limit=300)}",
                        url=url, kind="not_listening") from None
    answer = _decode(bytes(body))
    message = clean_text(str(answer.get("message", "")), limit=300)
    failed_raw = answer.get("failed")
    failed = ({clean_text(str(k), limit=200): clean_text(str(v), limit=300) for k, v in failed_raw.items()}
              if isinstance(failed_raw, dict) else {})
    if status == 404 and not message.startswith("component not found"):
        raise SetHealthyUnsupported(
            f"the GPUd on {where} has no set-healthy (HTTP 404): it is older than v0.8.0",
            hint="upgrade GPUd on the node (FLOW_GPUD_VERSION=v0.8.0 or later; flow health install TASK)")
    if status >= 400:
        detail = message or clean_text(bytes(body[:300]).decode("utf-8", "replace"), limit=300)
        if failed:
            detail += ": " + "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
        raise GPUdError(f"GPUd on {where} refused set-healthy (HTTP {status}): {detail}", url=url,
                        kind="error_response")
    successful = answer.get("successful")
    names = tuple(clean_text(str(s), limit=200) for s in successful) if isinstance(successful, list) else ()
    return SetHealthyResult(successful=names, failed=failed)
