"""Secrets: reading them from files, checking their grammar, keeping them out of what is shown.

The rules, applied wherever flow reads a token, key or password and wherever it shows a URL:

- A secret file must be a regular file (a symlink to one is followed), readable by its owner
  only (mode 0600 or stricter), at most `MAX_SECRET_FILE_BYTES`, UTF-8, and hold one line
  (surrounding whitespace is ignored). It is opened with O_NONBLOCK, so a FIFO or a device
  named as a secret file is refused at once instead of blocking the command.
- A bearer token or API key is 1 to `MAX_TOKEN_CHARS` visible ASCII characters (0x21-0x7E):
  no spaces, no control characters, nothing outside ASCII. RFC 6750's b64token is a subset;
  anything else could not be sent in an HTTP header and would only fail later, inside httpx,
  whose error quotes the header value.
- A header value (OTLP headers) is printable ASCII, spaces allowed; a password (basic auth,
  sent base64-encoded) is any printable text on one line.
- An error about a secret names its source (the environment variable or the file) and what is
  allowed, never the value. `scrub()` removes known secrets, in every spelling an exception
  message may give them (raw, repr-escaped, percent-encoded), from text about to be shown.
- `redact_url()` is the one way a URL is shown: `user:password@` becomes `***@` and the value
  of every query (or fragment) parameter whose name looks like a credential becomes `***`.
  A URL with nothing to hide is returned unchanged, character for character.
- httpx logs every request's full URL (logger `httpx`, INFO); `redact_http_logs()` puts a filter
  on that logger that passes each URL through `redact_url()` first.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, urlsplit

from flow.errors import ConfigError
from flow.fs import RefusedFile, read_regular

__all__ = [
    "MAX_SECRET_FILE_BYTES",
    "MAX_TOKEN_CHARS",
    "REDACTED",
    "read_secret_file",
    "redact_http_logs",
    "redact_url",
    "scrub",
    "url_secrets",
    "validate_header_value",
    "validate_password",
    "validate_token",
]

#: A token file larger than this is not a token file (JWTs run to a few KiB).
MAX_SECRET_FILE_BYTES = 64 * 1024
#: Longer tokens would not fit the 8 KiB header limit of common servers and proxies.
MAX_TOKEN_CHARS = 8192
#: What a secret is replaced with wherever it would otherwise be shown.
REDACTED = "***"
# Shorter spellings of a secret are scrubbed only where they stand alone (see `scrub`).
_WHOLE_WORD_BELOW = 8

_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
_HEADER_VALUE_RE = re.compile(r"[\x20-\x7e\t]*")
_TOKEN_ALLOWED = f"1-{MAX_TOKEN_CHARS} visible ASCII characters (no spaces, no control characters)"
# Parameter names whose values are credentials (matched as substrings, case-insensitively:
# over-redacting a harmless parameter costs nothing, showing a key costs a rotation).
_SENSITIVE_PARAM_PARTS = ("key", "token", "secret", "pass", "pwd", "auth", "sig", "credential",
                          "session", "x-amz-", "x-goog-")


def read_secret_file(path: Path, *, name: str, what: str = "secret") -> str:
    """The one-line secret held by `path`, stripped of surrounding whitespace.

    `name` is how the file was named to us (`FLOW_METRICS_AUTH_TOKEN_FILE`,
    `health.sinks.datadog.api_key_file`, `--token-file`): every error quotes it and the path,
    never the content. The content's grammar (token, password) is the caller's to check.

    Raises:
        ConfigError: missing, unreadable, not a regular file, readable by group or others,
            too large, not UTF-8, empty, or more than one line.
    """
    where = f"{name}={str(path)!r}"
    try:
        data = read_regular(path, MAX_SECRET_FILE_BYTES, private=True)
    except RefusedFile as refused:
        if refused.reason == "not_regular":
            message = f"{where} is {refused.detail}; allowed: a regular file holding the {what}"
        elif refused.reason == "not_private":
            message = (f"{where} is readable by others (mode {refused.detail}); "
                       f"allowed: mode 0600 (chmod 600 {path})")
        else:
            message = (f"{where} is larger than {MAX_SECRET_FILE_BYTES} bytes; "
                       "allowed: a file holding one line")
        raise ConfigError(message, path=path) from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the file: {exc.strerror}", path=path) from None
    if data is None:
        raise ConfigError(f"{where}: cannot read the file: No such file or directory", path=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text; allowed: a file holding the {what}",
                          path=path) from None
    secret = text.strip()
    if not secret:
        raise ConfigError(f"{where} is empty; allowed: a file holding the {what}", path=path)
    lines = secret.splitlines()
    if len(lines) > 1:
        raise ConfigError(
            f"{where} holds {len(lines)} lines; allowed: the {what} alone, on one line", path=path
        )
    return secret


def _problem(value: str) -> str:
    """What is wrong with a value, in words that do not repeat it."""
    if any(c in "\r\n" for c in value):
        return "holds a line break"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "holds a control character"
    if any(ord(c) > 0x7E for c in value):
        return "holds a non-ASCII character"
    if any(c.isspace() for c in value):
        return "holds a space"
    return "is not allowed"


def validate_token(value: str, *, source: str, what: str = "token") -> str:
    """Check a bearer token or API key; `source` names where it came from (a variable or a file).

    Raises:
        ConfigError: naming `source` and the rule, never the value.
    """
    if not value:
        raise ConfigError(f"{source}: the {what} is empty; allowed: {_TOKEN_ALLOWED}")
    if len(value) > MAX_TOKEN_CHARS:
        raise ConfigError(
            f"{source}: the {what} is {len(value)} characters long; allowed: {_TOKEN_ALLOWED}"
        )
    if not _TOKEN_RE.fullmatch(value):
        raise ConfigError(f"{source}: the {what} {_problem(value)}; allowed: {_TOKEN_ALLOWED}")
    return value


def validate_header_value(value: str, *, source: str) -> str:
    """Check a secret HTTP header value: printable ASCII, spaces and tabs allowed.

    Raises:
        ConfigError: naming `source` (which should name the header), never the value.
    """
    if len(value) > MAX_TOKEN_CHARS or not _HEADER_VALUE_RE.fullmatch(value):
        raise ConfigError(
            f"{source}: the value {_problem(value) if len(value) <= MAX_TOKEN_CHARS else 'is too long'}; "
            f"allowed: up to {MAX_TOKEN_CHARS} printable ASCII characters"
        )
    return value


def validate_password(value: str, *, source: str) -> str:
    """Check a basic-auth password: any printable text on one line (it is sent base64-encoded).

    Raises:
        ConfigError: naming `source`, never the value.
    """
    if not value or len(value) > MAX_TOKEN_CHARS or not value.isprintable():
        problem = "is empty" if not value else ("is too long" if len(value) > MAX_TOKEN_CHARS
                                                else _problem(value))
        raise ConfigError(
            f"{source}: the password {problem}; allowed: 1-{MAX_TOKEN_CHARS} printable characters on one line"
        )
    return value


def _spellings(secret: str) -> set[str]:
    """The forms in which an exception or a URL may quote `secret`."""
    forms = {secret, repr(secret)[1:-1]}
    with contextlib.suppress(UnicodeEncodeError):  # lone surrogates have no UTF-8 spelling
        forms |= {quote(secret, safe=""), quote(secret), repr(secret.encode("utf-8"))[2:-1]}
    return {form for form in forms if form}


def scrub(text: str, secrets: Iterable[str | None], *, replacement: str = REDACTED) -> str:
    """`text` with every spelling of every secret replaced (for exception messages).

    A spelling shorter than `_WHOLE_WORD_BELOW` characters is replaced only where it stands
    alone (not inside a word): a one-letter token would otherwise turn every message into
    `All connec***ion a***emp***s failed`.
    """
    for secret in secrets:
        if not secret:
            continue
        for form in sorted(_spellings(secret), key=len, reverse=True):
            if len(form) < _WHOLE_WORD_BELOW:
                text = re.sub(rf"(?<![0-9A-Za-z_]){re.escape(form)}(?![0-9A-Za-z_])", replacement, text)
            else:
                text = text.replace(form, replacement)
    return text


def _sensitive(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SENSITIVE_PARAM_PARTS)


def _redact_params(text: str) -> str:
    items = []
    for item in text.split("&"):
        key, sep, _value = item.partition("=")
        if sep and _sensitive(key):
            items.append(f"{key}={REDACTED}")
        elif not sep and _sensitive(key):
            # A bare credential (`?AbCdEf123`) is indistinguishable from a flag; hide it too.
            items.append(REDACTED)
        else:
            items.append(item)
    return "&".join(items)


def url_secrets(url: str) -> list[str]:
    """The parts of `url` that `redact_url` hides (user:password, credential values), for `scrub`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = []
    if "@" in parts.netloc:
        found.append(parts.netloc.rpartition("@")[0])
    for text in (parts.query, parts.fragment):
        for item in text.split("&"):
            key, sep, value = item.partition("=")
            if _sensitive(key):
                found.append(value if sep else key)
    return [secret for secret in found if secret]


def redact_url(url: str) -> str:
    """`url` as it may be shown: `***@` for user:password, `***` for credential parameters.

    Query and fragment parameters are credentials when their name holds one of key, token,
    secret, pass, pwd, auth, sig, credential, session, or starts with x-amz- / x-goog-. A URL
    that cannot be parsed is not shown at all.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<URL not shown: it cannot be parsed>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = _redact_params(parts.query) if parts.query else ""
    fragment = _redact_params(parts.fragment) if parts.fragment else ""
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    # Rebuilt by hand rather than with urlunsplit, which would normalise what it does not hide.
    shown = f"{parts.scheme}:" if parts.scheme else ""
    if netloc or url.partition("#")[0].partition("?")[0].startswith(shown + "//"):
        shown += f"//{netloc}"
    shown += parts.path
    if query or "?" in url.partition("#")[0]:
        shown += f"?{query}"
    if "#" in url:
        shown += f"#{fragment}"
    return shown


class _RedactUrls(logging.Filter):
    """Rewrites a record's URL arguments (httpx.URL objects or strings) with `redact_url`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        if isinstance(record.msg, str) and "://" in record.msg:
            record.msg = " ".join(redact_url(w) if "://" in w else w for w in record.msg.split(" "))
        return True


def _redact_arg(arg: object) -> object:
    if isinstance(arg, str) or type(arg).__name__ == "URL":
        text = str(arg)
        if "://" in text:
            return redact_url(text)
    return arg


_HTTP_LOGGERS = ("httpx", "httpcore")


def redact_http_logs() -> None:
    """Filter httpx's own log records (idempotent): they quote each request's full URL."""
    for name in _HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactUrls) for f in logger.filters):
            logger.addFilter(_RedactUrls())
