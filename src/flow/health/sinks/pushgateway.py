"""Prometheus Pushgateway: one PUT per node, grouping key job [/ labels] / task_id / node.

PUT replaces every metric of the group, so a node's group always holds exactly its latest
snapshot (a GPU that disappeared stops being reported). Only the newest snapshot of each
node in a batch is pushed: the gateway keeps one value per series, older ones would be
overwritten in the same breath. The body is the classic text format without timestamps
(the Pushgateway refuses pushed timestamps). Scrape the gateway with `honor_labels: true`.

The same sink serves a FLOW_METRICS_ENDPOINT that is a Pushgateway URL: its path gives the job
and further grouping labels (`flow.grammar.pushgateway_group`), and `bearer` supplies the
endpoint's token (FLOW_METRICS_AUTH_TOKEN), sent as `Authorization: Bearer` and never shown.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
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


def grouping_path(job: str, task_id: str, node: str, labels: Sequence[tuple[str, str]] = ()) -> str:
    """`/metrics/job/<job>[/<label>/<value>...]/task_id/<id>/node/<node>`, escaped as the
    Pushgateway expects."""
    return "/metrics/" + "/".join(
        _segment(k, v) for k, v in (("job", job), *labels, ("task_id", task_id), ("node", node))
    )


class PushgatewaySink:
    """Pushes each node's latest snapshot to a Pushgateway group (HTTP PUT)."""

    def __init__(
        self,
        settings: PushgatewaySettings,
        *,
        bearer: Callable[[], str | None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`bearer` returns the token to send as `Authorization: Bearer` (None: none), and is
        called before each batch, so a token file replaced on disk is picked up."""
        self.name = settings.name
        self.settings = settings
        self._bearer = bearer
        self.destination = f"pushgateway {redact_url(settings.url)} job={settings.job}" + "".join(
            f" {k}={v}" for k, v in settings.grouping)
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
            path = grouping_path(self.settings.job, snapshot.task_id, snapshot.node, self.settings.grouping)
            requests.append(
                EncodedRequest(
                    method="PUT",
                    url=self.settings.url + path,
                    headers={"Content-Type": TEXT_CONTENT_TYPE},
                    body=exposition_text(snapshot_families(snapshot)),
                    # Groups are per node, not in batch order: the batch is done only at the end.
                    delivered=len(batch) if i == len(latest) - 1 else 0,
                    secret_headers=(
                        ("Authorization",)
                        if self.settings.password is not None or self._bearer is not None
                        else ()
                    ),
                )
            )
        return requests

    async def send(self, batch: Sequence[Snapshot]) -> None:
        token = self._bearer() if self._bearer is not None else None
        secrets = {"Authorization": f"Bearer {token}"} if token else None
        await self._http.send_all(self.encode(batch), secrets)

    async def aclose(self) -> None:
        await self._http.aclose()
