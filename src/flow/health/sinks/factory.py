"""From validated settings to sink objects, and from `Config` to a registry of enabled sinks."""

from __future__ import annotations

from collections.abc import Mapping

from flow.config import Config
from flow.errors import ConfigError
from flow.health.sinks.base import Sink, SinkRegistry
from flow.health.sinks.cloudwatch import CloudWatchSink, require_boto3
from flow.health.sinks.datadog import DatadogSink
from flow.health.sinks.otlp import OtlpSink
from flow.health.sinks.pushgateway import PushgatewaySink
from flow.health.sinks.remote_write import RemoteWriteSink, compress
from flow.health.sinks.settings import (
    CloudWatchSettings,
    DatadogSettings,
    OtlpSettings,
    PushgatewaySettings,
    RemoteWriteSettings,
    SinkSettings,
    parse_sinks,
)

__all__ = ["build_sink", "build_sinks"]


def build_sink(settings: SinkSettings, *, require_secrets: bool = True) -> Sink:
    """A sink for one validated section.

    With `require_secrets` (sending for real), a Datadog sink without an API key and a
    CloudWatch sink without boto3 are configuration errors; a dry run needs neither.

    Raises:
        ConfigError: a secret or an optional extra is missing (the hint names the fix).
    """
    if isinstance(settings, PushgatewaySettings):
        return PushgatewaySink(settings)
    if isinstance(settings, RemoteWriteSettings):
        if require_secrets:
            try:
                compress(b"")  # the remote-write extra (cramjam) is there
            except ConfigError as exc:
                raise ConfigError(f"health.sinks.{settings.name}: {exc.message}", hint=exc.hint) from None
        token = settings.token
        return RemoteWriteSink(settings, bearer=(lambda: token) if token else None)
    if isinstance(settings, DatadogSettings):
        if require_secrets and not settings.api_key:
            raise ConfigError(
                f"health.sinks.{settings.name}: no Datadog API key; allowed: DD_API_KEY or a "
                f"0600 file named by health.sinks.{settings.name}.api_key_file",
                hint="export DD_API_KEY=...",
            )
        return DatadogSink(settings)
    if isinstance(settings, CloudWatchSettings):
        if require_secrets:
            try:
                require_boto3()
            except ConfigError as exc:
                raise ConfigError(f"health.sinks.{settings.name}: {exc.message}", hint=exc.hint) from None
        return CloudWatchSink(settings)
    if isinstance(settings, OtlpSettings):
        try:
            return OtlpSink(settings)
        except ConfigError as exc:
            raise ConfigError(f"health.sinks.{settings.name}: {exc.message}", hint=exc.hint) from None
    raise ConfigError(f"health.sinks.{settings.name}: no sink for type {settings.type!r}")


def build_sinks(config: Config, env: Mapping[str, str] | None = None) -> SinkRegistry:
    """Every enabled sink of `config.sinks`, validated and registered under its name.

    Raises:
        ConfigError: a section is invalid; the message starts with the config file's path.
    """
    registry = SinkRegistry()
    try:
        for settings in parse_sinks(config.sinks, env):
            if settings.enabled:
                registry.register(build_sink(settings))
    except ConfigError as exc:
        raise ConfigError(
            f"{config.config_file}: {exc.message}", path=config.config_file, hint=exc.hint
        ) from None
    return registry
