"""`flow health gpud TASK [PATH]`: any GPUd path of a task's node, through its SSH tunnel.

GPUd speaks HTTPS only, with a self-signed certificate, on the node's loopback: `curl
http://localhost:15132/...` from the operator's machine cannot reach it. This command opens the
node's tunnel and asks GPUd with the sweep's own client (certificate check off: the SSH channel
authenticates the node; answers bounded in size and, with --timeout, in time).

What the node sends is untrusted: JSON is re-encoded with every control, bidirectional and line
separator character inside its strings written as a `\\uXXXX` escape (the same JSON, nothing for
a terminal to obey); any other text is cleaned line by line (`flow.text.clean_text`).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from typing import TYPE_CHECKING, Any

import click
import orjson

from flow.cli.common import EXIT_USAGE, get_config
from flow.cli.numbers import NODE_TIMEOUT_RANGE, Bounded
from flow.errors import FlowError, GPUdTimeout, SSHError
from flow.text import clean_text

if TYPE_CHECKING:
    from flow.health.gpud.client import GpudAnswer
    from flow.health.gpud.paths import GpudRequest
    from flow.ssh import SSHOptions, SSHParams

__all__ = ["gpud_cmd", "safe_json_text"]

DEFAULT_TIMEOUT_S = 20.0
# Inside a JSON string these would reach the terminal as is (orjson escapes only C0): DEL, C1,
# the bidi overrides and marks, and the line and paragraph separators.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_LINE_CHARS = 4096  # a line of the Prometheus exposition is far shorter


def safe_json_text(value: Any) -> str:
    """`value` as indented JSON holding no character a terminal acts on (see the module doc)."""
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _decode_json(body: bytes | bytearray) -> tuple[bool, Any]:
    try:
        return True, orjson.loads(body)
    except orjson.JSONDecodeError:
        return False, None


def _clean_lines(body: bytes | bytearray) -> str:
    text = body.decode("utf-8", "replace")
    return "\n".join(clean_text(line, limit=_LINE_CHARS) for line in text.splitlines())


async def _get(params: SSHParams, options: SSHOptions, host: str, port: int, request: GpudRequest,
               timeout_s: float) -> GpudAnswer:
    from flow.health.gpud.client import GpudClient
    from flow.ssh import connect

    async with await connect(params, options) as conn:
        tunnel = await conn.tunnel(host, port)
        async with GpudClient(tunnel.url("https"), timeout_s=timeout_s, deadline_s=timeout_s) as client:
            return await client.get(request.path, request.params)


def _fetch(params: SSHParams, options: SSHOptions, host: str, port: int, request: GpudRequest,
           timeout_s: float) -> GpudAnswer:
    async def bounded() -> GpudAnswer:
        # Per-read timeouts do not stop a node that drips a byte now and then: this does.
        try:
            return await asyncio.wait_for(_get(params, options, host, port, request, timeout_s), timeout_s)
        except asyncio.TimeoutError:
            raise GPUdTimeout(f"GPUd on {params.label} did not finish answering {request.path} within "
                              f"{timeout_s:g} s", host=params.host) from None

    return asyncio.run(bounded())


def _not_found(answer: GpudAnswer, request: GpudRequest, task: str, node: str) -> FlowError:
    """A 404: GPUd's own error (an unknown component) or a path this GPUd does not serve."""
    from flow.health.gpud.paths import KNOWN_PATHS, known_paths_text

    decoded, body = _decode_json(answer.body)
    if decoded and isinstance(body, dict) and "message" in body:
        message = clean_text(str(body["message"]), limit=300)
        return FlowError(f"GPUd on {node} answered {request.path} with 404: {message}",
                         hint=f"list its component names: flow health gpud {task} /v1/components")
    if request.path in KNOWN_PATHS:
        return FlowError(f"the GPUd on {node} does not serve {request.path} (HTTP 404): an older "
                         "GPUd (v0.4 has no /machine-info or /v1/components/trigger-check)",
                         hint=f"its version: flow health --task {task}")
    error = FlowError(f"GPUd has no path {request.path} (HTTP 404 from {node})",
                      hint=f"GPUd's paths: {known_paths_text()}")
    error.exit_code = EXIT_USAGE
    return error


def _failed(answer: GpudAnswer, request: GpudRequest, node: str) -> FlowError:
    decoded, body = _decode_json(answer.body)
    if decoded and isinstance(body, dict) and "message" in body:
        detail = clean_text(str(body["message"]), limit=300)
    else:
        detail = clean_text(bytes(answer.body[:300]).decode("utf-8", "replace"), limit=300) or answer.reason
    return FlowError(f"GPUd on {node} answered {request.display()} with HTTP {answer.status_code}: {detail}")


@click.command("gpud")
@click.argument("task")
@click.argument("path", default="/v1/states")
@click.option("--node", help="Which node of a multi-node task: 0-based index or host (default 0).")
@click.option("--query", "-q", "queries", multiple=True, metavar="KEY=VALUE",
              help="A query parameter for GPUd (repeatable), e.g. components=accelerator-nvidia-ecc.")
@click.option("--since", "since", metavar="DURATION",
              help="/v1/events and /v1/info: how far back (default 24h; GPUd alone returns no "
                   "events without startTime). /v1/metrics: GPUd's since= (its default 30m).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document: the task, node, request, status and GPUd's answer (body).")
@click.option("--timeout", "timeout_s", type=Bounded(NODE_TIMEOUT_RANGE), default=DEFAULT_TIMEOUT_S,
              show_default=True, help="Deadline in seconds, 0.1-3600 (SSH, tunnel and GPUd together).")
def gpud_cmd(task: str, path: str, node: str | None, queries: tuple[str, ...], since: str | None,
             as_json: bool, timeout_s: float) -> None:
    """Ask a task's GPUd for PATH (default /v1/states) through the node's SSH tunnel.

    \b
    flow health gpud train-a                       component states
    flow health gpud train-a /healthz              is GPUd up
    flow health gpud train-a /v1/events --since 6h events of the last 6 hours
    flow health gpud train-a /v1/metrics -q components=accelerator-nvidia-temperature
    flow health gpud train-a /machine-info         GPUs, serials, driver and CUDA versions
    flow health gpud train-a /metrics              the Prometheus exposition

    GPUd's answer is printed as indented JSON (text for /metrics); what flow added to the
    request (the events window) goes to stderr. GPUd's paths are listed in docs/troubleshooting.md.

    \b
    Exit codes: 0 GPUd answered; 1 the node, the tunnel or GPUd failed (or GPUd answered an
    error); 2 a bad PATH, --query, --since or task, or a path GPUd does not have.
    """
    from flow.fleet import Inventory, gpud_address, node_params, pick_node
    from flow.health.gpud.paths import MissingPathError, missing_path_message, parse_since, plan_request
    from flow.ssh import SSHOptions

    try:
        since_s = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    try:
        request = plan_request(path, (), since_s=since_s, now_s=time.time())
    except MissingPathError as exc:
        message, hint = missing_path_message(exc.path, task)
        raise _usage(message, hint) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from None
    try:
        request = plan_request(path, queries, since_s=since_s, now_s=time.time())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--query") from None

    config = get_config()
    found = Inventory.from_config(config).resolve(task)
    picked = pick_node(found, node)
    host, port = gpud_address(found, config)
    where = f"{found.name} node {picked.label}"
    try:
        answer = _fetch(node_params(picked), SSHOptions.from_config(config), host, port, request, timeout_s)
    except SSHError as exc:
        if exc.kind == "gpud_not_listening":
            exc.hint = (f"GPUd is not installed or not running there: flow ssh {task} -- "
                        f"systemctl status gpud; flow logs {task} --source gpud")
        raise
    if answer.status_code == 404:
        raise _not_found(answer, request, task, where)
    if not answer.ok:
        raise _failed(answer, request, where)
    for note in request.notes:
        click.echo(f"# {note}", err=True)
    decoded, body = _decode_json(answer.body)
    if as_json:
        from flow.health.snapshot import format_time, utcnow

        sys.stdout.write(safe_json_text({
            "schema": 1, "kind": "gpud", "generated_at": format_time(utcnow()),
            "task_id": found.id, "task_name": found.name,
            "node": picked.label, "path": request.path, "query": request.params,
            "status_code": answer.status_code, "content_type": answer.content_type,
            "body": body if decoded else None,
            "text": None if decoded else _clean_lines(answer.body),
        }) + "\n")
    elif decoded:
        sys.stdout.write(safe_json_text(body) + "\n")
    else:
        sys.stdout.write(_clean_lines(answer.body) + "\n")
    sys.stdout.flush()


def _usage(message: str, hint: str) -> FlowError:
    error = FlowError(message, hint=hint)
    error.exit_code = EXIT_USAGE
    return error

