"""Prometheus Pushgateway: one PUT per node, grouping key job / task_id / node.

PUT replaces every metric of the group, so a node's group always holds exactly its latest
snapshot (a GPU that disappeared stops being reported). Only the newest snapshot of each
node in a batch is pushed: the gateway keeps one value per series, older ones would be
overwritten in the same breath. The body is the classic text format without timestamps
(the Pushgateway refuses pushed timestamps). Scrape the gateway with `honor_labels: true`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from urllib.parse import quote

import httpx

from flow.health.sinks.base import EncodedRequest
from flow.health.sinks.http import HttpSender
from flow.health.sinks.prometheus import TEXT_CONTENT_TYPE, exposition_text
from flow.health.sinks.settings import PushgatewaySettings
from flow.health.sinks.vocabulary import latest_per_node, snapshot_families
from flow.health.snapshot import Snapshot
from flow.secrets import redact_url

__all__ = ["PushgatewaySink", "grouping_path"]


def _segment(key: str, value: str) -> str:
    # The Pushgateway's own escaping: a value that is empty or holds "/" goes base64url.
    if value == "":
        return f"{key}@base64/="
    if "/" in value:
        return f"{key}@base64/" + base64.urlsafe_b64encode(value.encode()).decode()
    return f"{key}/" + quote(value, safe="")


def grouping_path(job: str, task_id: str, node: str) -> str:
    """`/metrics/job/<job>/task_id/<id>/node/<node>`, escaped as the Pushgateway expects."""
    return "/metrics/" + "/".join(
        _segment(k, v) for k, v in (("job", job), ("task_id", task_id), ("node", node))
    )


class PushgatewaySink:
    """Pushes each node's latest snapshot to a Pushgateway group (HTTP PUT)."""

    def __init__(
        self, settings: PushgatewaySettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.destination = f"pushgateway {redact_url(settings.url)} job={settings.job}"
        auth = (
            httpx.BasicAuth(settings.username, settings.password)
            if settings.username and settings.password is not None
            else None
        )
        self._http = HttpSender(sink=self.name, timeout_s=settings.timeout_s, auth=auth, transport=transport)

    def encode(self, batch: Sequence[Snapshot]) -> list[EncodedRequest]:
        latest = latest_per_node(batch)
        requests: list[EncodedRequest] = []
        for i, snapshot in enumerate(latest):
            path = grouping_path(self.settings.job, snapshot.task_id, snapshot.node)
            requests.append(
                EncodedRequest(
                    method="PUT",
                    url=self.settings.url + path,
                    headers={"Content-Type": TEXT_CONTENT_TYPE},
                    body=exposition_text(snapshot_families(snapshot)),
                    # Groups are per node, not in batch order: the batch is done only at the end.
                    delivered=len(batch) if i == len(latest) - 1 else 0,
                    secret_headers=("Authorization",) if self.settings.password is not None else (),
                )
            )
        return requests

    async def send(self, batch: Sequence[Snapshot]) -> None:
        await self._http.send_all(self.encode(batch))

    async def aclose(self) -> None:
        await self._http.aclose()
