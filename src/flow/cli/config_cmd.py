"""`flow config show|path`."""

from __future__ import annotations

import click
import orjson

from flow.cli.common import get_config
from flow.grammar import PUSHGATEWAY_NODE_LABELS, PushgatewayGroup, pushgateway_group

__all__ = ["config_group"]


@click.group("config")
def config_group() -> None:
    """Show the effective settings and where each came from."""


def _shown(value: str | int | float | bool | None) -> str:
    """A value as config.yaml would spell it: none, true/false, 60, 75.5."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _pushgateway(endpoint: str | None) -> PushgatewayGroup | None:
    # Already validated at load: a malformed grouping path never gets this far.
    return pushgateway_group(endpoint, name="metrics_endpoint") if endpoint else None


def _grouping(group: PushgatewayGroup) -> dict[str, str]:
    return {"job": group.job, **dict(group.labels)}


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: {setting: {value, source}}, numbers as numbers, booleans as "
                   "booleans, unset as null; a Pushgateway endpoint adds its grouping key.")
def show(as_json: bool) -> None:
    """Print every setting, its value and its source (env, file or default).

    metrics_dir is the directory the store uses, $FLOW_HOME/metrics unless set. The metrics
    auth token is never printed: it shows as <redacted>. A metrics_endpoint whose path is
    /metrics/job/<job>[/<label>/<value>...] is a Pushgateway: the line below it gives the
    grouping key each node pushes to.
    """
    config = get_config()
    rows = config.effective()
    group = _pushgateway(config.health.metrics_endpoint)
    if as_json:
        doc: dict[str, dict[str, object]] = {
            key: {"value": value, "source": source} for key, value, source in rows}
        if group is not None:
            doc["metrics_endpoint"]["pushgateway"] = {
                "grouping": _grouping(group), "per_node": list(PUSHGATEWAY_NODE_LABELS)}
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    shown = [(key, _shown(value), source) for key, value, source in rows]
    width = max(len(key) for key, _, _ in shown)
    vwidth = max(len(value) for _, value, _ in shown)
    for key, value, source in shown:
        click.echo(f"{key:<{width}}  {value:<{vwidth}}  {source}")
        if key == "metrics_endpoint" and group is not None:
            labels = " ".join(f"{k}={v}" for k, v in _grouping(group).items())
            click.echo(f"{'':<{width}}  a Pushgateway: pushes to {labels}, one group per node "
                       f"(+ {', '.join(PUSHGATEWAY_NODE_LABELS)})")


@config_group.command("path")
def path() -> None:
    """Print the config file flow reads ($FLOW_HOME/config.yaml) and whether it exists."""
    config = get_config()
    click.echo(str(config.config_file))
