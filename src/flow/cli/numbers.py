"""Numeric command-line options: one click type that enforces a finite `NumberRange`.

click's own `float` accepts `nan` and `inf`, and `FloatRange` lets NaN through (every comparison
with NaN is false), so `--watch nan` spun a core and `--hours inf` overflowed `timedelta` later.
`Bounded` refuses both where the option is parsed. When the value came from an environment
variable (`envvar=` options) the message names the variable, not only the option.

The ranges of the options that exist only on the command line live here; those that mirror a
setting (`--interval`, `--retention-days`, ...) reuse the setting's range from `flow.config`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from flow.config import NumberRange
from flow.errors import ConfigError

__all__ = [
    "BACKOFF_MAX_RANGE",
    "BACKOFF_MIN_RANGE",
    "CLEANUP_COMPRESS_AFTER_DAYS_RANGE",
    "DEMO_TIMEOUT_RANGE",
    "EXPECTED_GPUS_RANGE",
    "HISTORY_HOURS_RANGE",
    "INSTALL_TIMEOUT_RANGE",
    "NODE_TIMEOUT_RANGE",
    "SEND_TIMEOUT_RANGE",
    "SIM_DELAY_RANGE",
    "SWEEP_INTERVAL_RANGE",
    "Bounded",
]

#: Hours of stored history a view or export reads: up to a year.
HISTORY_HOURS_RANGE = NumberRange(0, 8760, "hours", low_open=True)
#: --watch and serve --interval: how often the fleet is swept.
SWEEP_INTERVAL_RANGE = NumberRange(0.05, 86400, "seconds")
#: A node's deadline in one sweep (SSH, tunnel and GPUd together).
NODE_TIMEOUT_RANGE = NumberRange(0.1, 3600, "seconds")
DEMO_TIMEOUT_RANGE = NumberRange(0.5, 3600, "seconds")
INSTALL_TIMEOUT_RANGE = NumberRange(1, 3600, "seconds")
BACKOFF_MIN_RANGE = NumberRange(0.01, 3600, "seconds")
BACKOFF_MAX_RANGE = NumberRange(0.01, 86400, "seconds")
SEND_TIMEOUT_RANGE = NumberRange(0.1, 3600, "seconds")
#: The simulator's `slow` scenario delay.
SIM_DELAY_RANGE = NumberRange(0, 3600, "seconds")
#: The GPUs a node should have (a task's `gpus:` takes the same range).
EXPECTED_GPUS_RANGE = NumberRange(0, 1024, "GPUs", integer=True)
#: cleanup may compress every finished day (0), unlike the collector's setting.
CLEANUP_COMPRESS_AFTER_DAYS_RANGE = NumberRange(0, 3650, "days", integer=True)


if TYPE_CHECKING:
    _ParamType = click.ParamType[Any]
else:  # click before 8.3 has no subscriptable ParamType
    _ParamType = click.ParamType


class Bounded(_ParamType):
    """A float (or, with an integer range, an int) inside `limits`; NaN and inf are refused."""

    def __init__(self, limits: NumberRange) -> None:
        self.limits = limits
        self.name = "integer" if limits.integer else "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.limits.contains(value):
            return value  # a default, already in range
        try:
            if self.limits.integer:
                return self.limits.parse_int(value, name="value")
            return self.limits.parse(value, name="value")
        except ConfigError as exc:
            # "value='nan' is out of range; ..." -> "'nan' is out of range; ...": click names the option.
            message = exc.message.removeprefix("value=")
            variable = _envvar_used(param, ctx)
            if variable is not None and param is not None:
                option = param.opts[0] if param.opts else param.name
                raise click.BadParameter(message, ctx=ctx, param_hint=f"{variable} (for {option})") from None
            self.fail(message, param, ctx)

    def __repr__(self) -> str:
        return f"Bounded({self.limits.describe()})"


def _envvar_used(param: click.Parameter | None, ctx: click.Context | None) -> str | None:
    """The environment variable the value came from, or None when it came from elsewhere."""
    if param is None or ctx is None or param.name is None:
        return None
    if ctx.get_parameter_source(param.name) is not ParameterSource.ENVIRONMENT:
        return None
    envvar = param.envvar
    if envvar is None and ctx.auto_envvar_prefix is not None:
        envvar = f"{ctx.auto_envvar_prefix}_{param.name.upper()}"
    names = [envvar] if isinstance(envvar, str) else list(envvar or ())
    return next((name for name in names if os.environ.get(name)), names[0] if names else None)
