"""Small readers of GPUd's wire format for the simulator's tests (deliberately not flow's client)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from flow.health.sim import SimNode


def get_json(client: httpx.Client, node: SimNode, path: str, **params: Any) -> Any:
    r = client.get(node.url + path, params=params or None)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def state_of(states: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (entry,) = [e for e in states if e["component"] == component]
    (state,) = entry["states"]
    return state


def blob(state: dict[str, Any]) -> Any:
    """`extra_info["data"]` is a JSON string: decode it a second time."""
    return orjson.loads(state["extra_info"]["data"])


def metric_values(metrics: list[dict[str, Any]], name: str) -> list[float]:
    return [m["value"] for entry in metrics for m in entry["metrics"] if m["name"] == name]
