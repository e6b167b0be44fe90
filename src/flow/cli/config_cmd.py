"""`flow config show|path`."""

from __future__ import annotations

import click
import orjson

from flow.cli.common import get_config

__all__ = ["config_group"]


@click.group("config")
def config_group() -> None:
    """Show the effective settings and where each came from."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def show(as_json: bool) -> None:
    """Print every setting, its value and its source (env, file or default).

    The metrics auth token is never printed: it shows as <redacted>.
    """
    rows = get_config().effective()
    if as_json:
        doc = {key: {"value": value, "source": source} for key, value, source in rows}
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    width = max(len(key) for key, _, _ in rows)
    vwidth = max(len(value) for _, value, _ in rows)
    for key, value, source in rows:
        click.echo(f"{key:<{width}}  {value:<{vwidth}}  {source}")


@config_group.command("path")
def path() -> None:
    """Print the config file flow reads ($FLOW_HOME/config.yaml) and whether it exists."""
    config = get_config()
    click.echo(str(config.config_file))
