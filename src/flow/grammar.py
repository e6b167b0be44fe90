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
- command: an absolute path, or a command name of `A-Z a-z 0-9 . _ + -` not starting with `-`;
- Pushgateway grouping path (a metrics endpoint whose path holds `/metrics/job`): the
  Pushgateway's own grammar, `/metrics/job/<job>[/<label>/<value>...]` after an optional route
  prefix, each value percent-encoded or written `<label>@base64/<base64url>` (how a value holding
  `/` is spelled; `=` alone is the empty value); a non-empty job, label names
  `[A-Za-z_][A-Za-z0-9_]*` not starting with `__`, each once, none of the labels the collector
  sets per node (`task_id`, `node`), non-empty values, no query string.

Regular expressions use `fullmatch` and ASCII classes: `$` would accept a trailing newline and
`\\d` accepts every script's digits.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from flow.errors import ConfigError
from flow.secrets import redact_url

__all__ = [
    "IFNAME_MAX",
    "PUSHGATEWAY_NODE_LABELS",
    "PushgatewayGroup",
    "absolute_path",
    "bind_address",
    "command",
    "finite_positive",
    "gpud_version",
    "identifier",
    "is_text",
    "port",
    "pushgateway_group",
    "text",
]

#: Linux IFNAMSIZ is 16 bytes with the terminating NUL.
IFNAME_MAX = 15

_VERSION_RE = re.compile(r"v[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.-]+)?")
_IFNAME_RE = re.compile(rf"[A-Za-z0-9_.-]{{1,{IFNAME_MAX}}}")
_ADDRESS_RE = re.compile(r"[0-9A-Fa-f:.]+")
_IDENTIFIER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_COMMAND_RE = re.compile(r"[A-Za-z0-9._+][A-Za-z0-9._+-]*")
_LABEL_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BASE64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
#: The Pushgateway's grouping-key path, after an optional route prefix (`--web.route-prefix`).
_PUSHGATEWAY_PATH_RE = re.compile(r"(?P<prefix>.*?)/metrics/(?P<grouping>job(?:@base64)?(?:/.*)?)")

#: The grouping labels the collector adds for each node, so that nodes never share a group.
PUSHGATEWAY_NODE_LABELS = ("task_id", "node")

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


@dataclass(frozen=True)
class PushgatewayGroup:
    """A Pushgateway URL taken apart: where to push, and the grouping key it names.

    `base_url` is scheme, host, port and route prefix, without user:password (`username` and
    `password`, percent-decoded, when the URL carried them); `labels` are the grouping labels
    after `job`, in URL order, decoded.
    """

    base_url: str
    job: str
    labels: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never the password
        return (f"PushgatewayGroup(base_url={self.base_url!r}, job={self.job!r}, labels={self.labels!r}, "
                f"username={self.username!r})")


def _pushgateway_allowed() -> str:
    return ("allowed: a Pushgateway URL https://host[:port][/prefix]/metrics/job/<job>[/<label>/<value>...] "
            "with a non-empty job, label names of letters, digits and '_' (not starting with a digit "
            f"or '__'; not {' or '.join(PUSHGATEWAY_NODE_LABELS)}, which the collector sets per node), "
            "each once with a non-empty value, and <label>@base64/<base64url value> for a value "
            "holding '/'")


def _decode_base64url(text: str) -> str | None:
    # The Pushgateway's own decoding: base64url, the padding optional.
    text = text.rstrip("=")
    if not _BASE64URL_RE.fullmatch(text):
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def pushgateway_group(url: str, *, name: str) -> PushgatewayGroup | None:
    """The grouping key of a metrics endpoint that is a Pushgateway URL, else None.

    A URL is a Pushgateway URL when its path holds `/metrics/job` (or `/metrics/job@base64`);
    its grouping path must then follow the Pushgateway's grammar (module docstring). A message
    shows the URL redacted (`flow.secrets.redact_url`): it may carry a password.

    Raises:
        ConfigError: the grouping path is malformed; the message names `name`, the problem and
        what is allowed.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    # Go's router splits the decoded path: an encoded '/' separates segments there too.
    match = _PUSHGATEWAY_PATH_RE.fullmatch(unquote(parts.path))
    if match is None:
        return None
    where = f"{name}={redact_url(url)!r}"

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{where}: {problem}; {_pushgateway_allowed()}")

    if parts.query or parts.fragment:
        raise bad("a Pushgateway URL takes no query string or fragment")
    grouping = match["grouping"]
    if grouping.endswith("/"):  # the Pushgateway ignores one trailing slash
        grouping = grouping[:-1]
    segments = grouping.split("/")
    if len(segments) % 2:
        if len(segments) == 1:
            raise bad("the job name is empty")
        raise bad(f"the grouping path has a label without a value ({segments[-1]!r})")
    pairs: list[tuple[str, str]] = []
    for key, raw in zip(segments[::2], segments[1::2], strict=True):
        label, encoded, _ = key.partition("@base64")
        if key not in (label, label + "@base64"):
            raise bad(f"the label {key!r} is not a label name")
        if encoded:
            value = _decode_base64url(raw)
            if value is None:
                raise bad(f"the value of {label!r} is not base64url-encoded UTF-8")
        else:
            value = raw
        if not _LABEL_NAME_RE.fullmatch(label) or label.startswith("__"):
            raise bad(f"{label!r} is not a label name")
        if label in PUSHGATEWAY_NODE_LABELS:
            raise bad(f"the label {label!r} is set by the collector, one group per node")
        if any(label == seen for seen, _ in pairs):
            raise bad(f"the label {label!r} is given twice")
        if not value:
            raise bad("the job name is empty" if label == "job"
                      else f"the label {label!r} has an empty value")
        pairs.append((label, value))
    netloc = parts.netloc.rpartition("@")[2]
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else None
    username = password = None
    if userinfo is not None:
        user, sep, secret = userinfo.partition(":")
        username, password = unquote(user), (unquote(secret) if sep else None)
    base_url = urlunsplit((parts.scheme, netloc, match["prefix"], "", ""))
    return PushgatewayGroup(base_url=base_url, job=pairs[0][1], labels=tuple(pairs[1:]),
                            username=username, password=password)
