"""The grammar of each value that reaches a generated root script, env file or systemd unit.

Quoting (`flow.health.install.shell`) keeps a value from running as code; these checks keep a
value to what its setting can mean, so nothing surprising is quoted in the first place. Each
returns the value it accepted and raises `ConfigError` naming the variable or option, the value
(`!r`, except secrets) and what is allowed. `config.py` checks at load, `InstallOptions` again
when a script is made (library callers never pass through the loader).

- bind address: an IPv4 literal, an IPv6 literal with an optional `%scope` whose scope is an
  interface name (Linux IFNAMSIZ: 1-15 of `A-Z a-z 0-9 _ . -`), or `localhost`; and loopback;
- GPUd version: `vMAJOR.MINOR.PATCH` with an optional `-pre` or `+build` of `A-Z a-z 0-9 . -`;
- port: an int (not a bool, not a string) in 1-65535;
- identifier (task id): 1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit;
- text (task name, instance type, token, package, paths): printable characters (no control,
  format or unassigned code points, so no NUL, newline or bidi override) other than `'` and `\\`,
  the two characters a value single-quoted for both `sh` and systemd's EnvironmentFile= cannot
  hold;
- absolute path: text starting with `/`;
- command: an absolute path, or a command name of `A-Z a-z 0-9 . _ + -` not starting with `-`.

Regular expressions use `fullmatch` and ASCII classes: `$` would accept a trailing newline and
`\\d` accepts every script's digits.
"""

from __future__ import annotations

import ipaddress
import math
import re

from flow.errors import ConfigError

__all__ = [
    "IFNAME_MAX",
    "absolute_path",
    "bind_address",
    "command",
    "finite_positive",
    "gpud_version",
    "identifier",
    "is_text",
    "port",
    "text",
]

#: Linux IFNAMSIZ is 16 bytes with the terminating NUL.
IFNAME_MAX = 15

_VERSION_RE = re.compile(r"v[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.-]+)?")
_IFNAME_RE = re.compile(rf"[A-Za-z0-9_.-]{{1,{IFNAME_MAX}}}")
_ADDRESS_RE = re.compile(r"[0-9A-Fa-f:.]+")
_IDENTIFIER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_COMMAND_RE = re.compile(r"[A-Za-z0-9._+][A-Za-z0-9._+-]*")

_BIND_ALLOWED = (
    "allowed: a loopback address: 127.0.0.1 (127.0.0.0/8), ::1, ::1%IFNAME (an interface name "
    f"of 1-{IFNAME_MAX} letters, digits, '_', '.', '-') or localhost"
)
_TEXT_ALLOWED = "allowed: printable characters other than ' and \\ (no control characters)"


def bind_address(value: str, *, name: str) -> str:
    """A loopback address GPUd may listen on: flow reaches GPUd only through SSH tunnels."""
    if value == "localhost":
        return value
    address, sep, scope = value.partition("%")
    if sep and not _IFNAME_RE.fullmatch(scope):
        # Python's ipaddress takes any text after '%'; an interface name is far narrower.
        raise ConfigError(
            f"{name}={value!r}: the IPv6 scope {scope!r} is not an interface name; {_BIND_ALLOWED}"
        )
    if not _ADDRESS_RE.fullmatch(address):
        raise ConfigError(f"{name}={value!r} is not an IP address; {_BIND_ALLOWED}")
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an IP address; {_BIND_ALLOWED}") from None
    if not parsed.is_loopback:
        raise ConfigError(
            f"{name}={value!r} would expose GPUd beyond this host; {_BIND_ALLOWED}: "
            "flow reaches GPUd through SSH tunnels"
        )
    return value


def gpud_version(value: str, *, name: str) -> str:
    """A GPUd release tag."""
    if not _VERSION_RE.fullmatch(value):
        raise ConfigError(
            f"{name}={value!r} is not a GPUd release tag; allowed: vMAJOR.MINOR.PATCH "
            "(digits), optionally followed by -PRERELEASE of letters, digits, '.', '-'"
        )
    return value


def port(value: object, *, name: str) -> int:
    """A TCP port number."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{name}={value!r} is not a port; allowed: an integer 1-65535")
    return value


def finite_positive(value: object, *, name: str, unit: str = "") -> float:
    """A finite number > 0 (an int or a float; not a bool, not a string)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not value > 0
    ):
        raise ConfigError(f"{name}={value!r} is out of range; allowed: a finite number > 0{unit}")
    return float(value)


def identifier(value: str, *, name: str) -> str:
    """A task id: it names a directory of the node's store and a label of every record."""
    if not _IDENTIFIER_RE.fullmatch(value):
        raise ConfigError(
            f"{name}={value!r} is not an identifier; allowed: 1-64 letters, digits, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return value


def is_text(value: str) -> bool:
    """True when `value` can be single-quoted for both `sh` and systemd's EnvironmentFile=."""
    return value.isprintable() and "'" not in value and "\\" not in value


def text(value: str, *, name: str, secret: bool = False) -> str:
    """Free text for an env file; a `secret` is never quoted back."""
    if not is_text(value):
        shown = name if secret else f"{name}={value!r}"
        raise ConfigError(f"{shown} holds a quote, backslash or control character; {_TEXT_ALLOWED}")
    return value


def absolute_path(value: str, *, name: str, where: str = "on the node") -> str:
    """An absolute path (spaces allowed: every use is quoted)."""
    if not value.startswith("/"):
        raise ConfigError(f"{name}={value!r} is not an absolute path; allowed: an absolute path {where}")
    return text(value, name=name)


def command(value: str, *, name: str) -> str:
    """A program: an absolute path, or a name looked up in PATH (never an option)."""
    if value.startswith("/"):
        return absolute_path(value, name=name)
    if not _COMMAND_RE.fullmatch(value):
        raise ConfigError(
            f"{name}={value!r} is not a command; allowed: an absolute path, or a command name of "
            "letters, digits, '.', '_', '+', '-' (not starting with '-')"
        )
    return value
