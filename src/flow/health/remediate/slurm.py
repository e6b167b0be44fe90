"""Slurm as a remediation backend: `scontrol`, run here or on a login node over SSH.

```python
backend = SlurmBackend()                                     # scontrol from PATH, SLURM_CONF as set
backend = SlurmBackend("/opt/slurm/bin/scontrol", slurm_conf="/etc/slurm/slurm.conf")
backend = SlurmBackend(login=SSHParams(host="login1", user="ops"))  # scontrol runs on login1
state = await backend.node_state("gpu017")            # NodeState(states={"IDLE"}, reason=None)
result = await backend.drain("gpu017", "flow: XID 79 on GPU 3 (2026-08-01T12:00Z)")
await backend.close()                                  # the login node's connection, if any
```

The rules this module applies:
- Commands: `scontrol show node NAME --oneliner` to read, `scontrol update NodeName=NAME
  State=DRAIN Reason=TEXT` to drain, `... State=RESUME` to resume. Locally they run from an argv
  (no shell); over SSH the login node's shell runs them, every word quoted by `_remote_command`
  alone (a POSIX shell is assumed there). `slurm_conf` is passed as `SLURM_CONF` either way.
- Node names must match `NODE_NAME_RE` (a host name: letters, digits, `.`, `_`, `-`, starting
  with a letter or digit, at most 253 characters). `gpu[001-100]` or `a,b` would be a Slurm host
  list (a drain of every node it names); they are refused, never passed on.
- Reasons are cleaned by `slurm_reason`: `clean_text` (control characters and escapes out, line
  breaks become spaces), each run of blanks one space, none at either end, cut to
  `MAX_REASON_CHARS` (a `…` last). Slurm keeps longer ones, but `sinfo -R` shows the first 20
  characters (`%20E`) and most sites' scripts a few dozen, so the marker and the fault come first.
- Reading a node: `State=` is split on `+` into flags (`IDLE+DRAIN` -> {IDLE, DRAIN}; a trailing
  `*`, sinfo's "not responding", becomes NOT_RESPONDING); `Reason=` loses Slurm's trailing
  `[user@time]`. Anything else (unknown node, slurmctld down, scontrol missing, SSH failure,
  timeout) sets `NodeState.error` to scontrol's own words or the failure's, never raised.
- Drain and resume always read the node back, since scontrol's exit status does not tell: a
  resume of a node already in service exits 1 ("Invalid node state specified"), one with no
  slurmd answering may exit 1 although it clears the drain, and an update that succeeded may
  have raced with someone else's. A drain is `ok` only when the node reads back drained with
  our reason; a resume only when it reads back neither drained nor down. `answer` holds
  scontrol's message and the state read back, for the audit log.
- Every command is bounded: `timeout_s` (the process is killed past it; scontrol itself reports
  an unreachable slurmctld within about Slurm's MessageTimeout, 10 s by default; an update
  already sent may still be applied by a slow slurmctld after the kill, which the answer says),
  `MAX_OUTPUT_BYTES` kept per stream, and at most `max_concurrency` commands at once (slurmctld
  serialises updates; an OpenSSH login node refuses sessions past `MaxSessions`, 10 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from flow import grammar
from flow.errors import ConfigError, FlowError
from flow.health.remediate.backend import ActionResult, NodeState
from flow.ssh.params import SSHOptions, SSHParams
from flow.text import clean_text

if TYPE_CHECKING:
    from flow.ssh.connection import SSHConnection

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_SCONTROL",
    "DEFAULT_TIMEOUT_S",
    "MAX_ANSWER_CHARS",
    "MAX_OUTPUT_BYTES",
    "MAX_REASON_CHARS",
    "MAX_TIMEOUT_S",
    "NODE_NAME_RE",
    "SlurmBackend",
    "parse_node_line",
    "slurm_node_name",
    "slurm_reason",
]

DEFAULT_SCONTROL = "scontrol"
#: Seconds one scontrol command may take (Slurm's own retries to an unreachable slurmctld take ~9 s).
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 600.0
DEFAULT_MAX_CONCURRENCY = 8
#: Bytes of stdout (and of stderr) kept from one command; one node's line is about 1 KB.
MAX_OUTPUT_BYTES = 64 * 1024
#: The longest reason handed to Slurm, in characters (see the module docstring).
MAX_REASON_CHARS = 128
#: The longest scheduler answer kept in an ActionResult or NodeState.error.
MAX_ANSWER_CHARS = 1000

#: A Slurm node name as a host name; no host-list syntax (`[`, `]`, `,`), blanks or `=`.
NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
_NODE_NAME_ALLOWED = (
    "allowed: one Slurm node name (letters, digits, '.', '_', '-', starting with a letter or "
    "digit, at most 253 characters; no host lists such as gpu[001-004])"
)
_STATE_RE = re.compile(r"(?:^|\s)State=(\S+)")
_NAME_RE = re.compile(r"(?:^|\s)NodeName=(\S+)")
# Greedy: a reason may itself hold brackets; Slurm appends " [user@time]" to the last one.
_REASON_RE = re.compile(r"(?:^|\s)Reason=(?P<reason>.*) \[[^\]\s]*@[^\]\s]*\]")
_REASON_BARE_RE = re.compile(r"(?:^|\s)Reason=(?P<reason>.*)$")
_BLANKS = re.compile(r"\s+")
# A request already sent is not taken back by killing scontrol: slurmctld may apply it later.
_UNKNOWN_OUTCOME = ", so whether Slurm applies the update is unknown until the node is read again"


def slurm_node_name(value: str) -> str:
    """`value` if it is one Slurm node name (see `NODE_NAME_RE`).

    Raises:
        ConfigError: naming the value and what is allowed.
    """
    if not isinstance(value, str) or NODE_NAME_RE.fullmatch(value) is None:
        raise ConfigError(f"Slurm node name {value!r} is not allowed; {_NODE_NAME_ALLOWED}")
    return value


def slurm_reason(text: str, *, limit: int = MAX_REASON_CHARS) -> str:
    """`text` as it is handed to Slurm's `Reason=`: cleaned, single-line, at most `limit` characters."""
    return clean_text(_BLANKS.sub(" ", clean_text(text)).strip(), limit=limit)


def _answer(*parts: str) -> str:
    text = "; ".join(p for p in (clean_text(part).strip() for part in parts) if p)
    return clean_text(text, limit=MAX_ANSWER_CHARS)


def parse_node_line(node: str, text: str) -> NodeState:
    """The NodeState in `scontrol show node NODE --oneliner` output (`error` set if absent)."""
    for line in text.splitlines():
        name = _NAME_RE.search(line)
        if name is None or name.group(1) != node:
            continue
        state = _STATE_RE.search(line)
        if state is None:
            return NodeState(name=node, error=_answer(f"scontrol shows no State= for {node}", line))
        flags: set[str] = set()
        for flag in state.group(1).upper().split("+"):
            if flag.endswith("*"):
                flags.add("NOT_RESPONDING")
                flag = flag.rstrip("*")
            if flag:
                flags.add(flag)
        match = _REASON_RE.search(line) or _REASON_BARE_RE.search(line)
        reason = clean_text(match.group("reason")).strip() if match else ""
        return NodeState(name=node, states=frozenset(flags), reason=reason or None)
    return NodeState(name=node, error=_answer(text) or f"scontrol shows no node {node}")


def _describe(state: NodeState) -> str:
    flags = "+".join(sorted(state.states)) or "?"
    return f"{state.name} reads back State={flags}" + (f" Reason={state.reason}" if state.reason else "")


@dataclass(frozen=True)
class _Output:
    status: int | None  # None: it did not run (error says why)
    stdout: str = ""
    stderr: str = ""
    error: str | None = None

    @property
    def text(self) -> str:
        return _answer(self.error or "", self.stderr, self.stdout)


async def _read_bounded(stream: asyncio.StreamReader | None) -> bytes:
    if stream is None:
        return b""
    kept = bytearray()
    while chunk := await stream.read(65536):
        # Read on to the end (the child would block on a full pipe) but keep only the start.
        if len(kept) < MAX_OUTPUT_BYTES:
            kept += chunk[: MAX_OUTPUT_BYTES - len(kept)]
    return bytes(kept)


def _remote_command(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """The one place a command line for the login node's shell is made: every word quoted."""
    words = (["env", *(f"{key}={value}" for key, value in env.items())] if env else []) + list(argv)
    return " ".join(shlex.quote(word) for word in words)


class SlurmBackend:
    """`SchedulerBackend` through `scontrol`, here or on `login` over SSH.

    Args:
        scontrol: the command, from PATH (on the login node: the remote user's PATH) or a path.
        slurm_conf: passed as `SLURM_CONF`; None keeps the environment's (here: this process's).
        login: a login node to run scontrol on over SSH; None runs it here.
        ssh_options: host-key policy and timeouts for `login` (default `SSHOptions()`).
        timeout_s: the deadline of one scontrol command.
        max_concurrency: scontrol commands run at once.

    Raises:
        ConfigError: a bad `scontrol`, `slurm_conf`, `timeout_s` or `max_concurrency`.
    """

    name = "slurm"

    def __init__(
        self,
        scontrol: str = DEFAULT_SCONTROL,
        *,
        slurm_conf: str | None = None,
        login: SSHParams | None = None,
        ssh_options: SSHOptions | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        scontrol = grammar.command(scontrol, name="scontrol")
        if slurm_conf is not None:
            slurm_conf = grammar.absolute_path(slurm_conf, name="slurm_conf", where="where scontrol runs")
        timeout_s = grammar.finite_positive(timeout_s, name="Slurm timeout_s", unit=" (s)")
        if timeout_s > MAX_TIMEOUT_S:
            raise ConfigError(f"Slurm timeout_s={timeout_s!r} is out of range; allowed: > 0 and <= "
                              f"{MAX_TIMEOUT_S:g} (s)")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or not (
            1 <= max_concurrency <= 64
        ):
            raise ConfigError(f"Slurm max_concurrency={max_concurrency!r} is out of range; allowed: 1-64")
        self.scontrol = scontrol
        self.slurm_conf = slurm_conf
        self.login = login
        self.ssh_options = ssh_options or SSHOptions()
        self.timeout_s = float(timeout_s)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._connection: SSHConnection | None = None
        self._connect_lock = asyncio.Lock()

    def __repr__(self) -> str:
        where = f" login={self.login.label}" if self.login else ""
        return f"SlurmBackend({self.scontrol!r}{where})"

    # -- the protocol ------------------------------------------------------------------------

    async def node_state(self, node: str) -> NodeState:
        """The node as `scontrol show node` reads it; `error` set when it cannot be read."""
        bad = self._bad_name(node)
        if bad is not None:
            return NodeState(name=str(node), error=bad)
        output = await self._scontrol(["show", "node", node, "--oneliner"])
        if output.status != 0:
            return NodeState(name=node, error=output.text or f"scontrol exited with {output.status}")
        return parse_node_line(node, output.stdout)

    async def drain(self, node: str, reason: str) -> ActionResult:
        """Drain `node` with `slurm_reason(reason)`; ok only when it reads back drained with it."""
        bad = self._bad_name(node)
        if bad is not None:
            return ActionResult(ok=False, answer=bad)
        text = slurm_reason(reason)
        if not text:
            return ActionResult(ok=False, answer=f"drain of {node} refused: Slurm needs a non-empty reason")
        output = await self._scontrol(["update", f"NodeName={node}", "State=DRAIN", f"Reason={text}"])
        state = await self.node_state(node)
        said = output.text
        if state.error is not None:
            return ActionResult(ok=False, answer=_answer(said, f"reading {node} back failed: {state.error}"))
        if state.drained and state.reason == text:
            return ActionResult(ok=True, answer=_answer(said, _describe(state)))
        why = "not drained" if not state.drained else "drained with another reason"
        return ActionResult(ok=False, answer=_answer(said, f"{why}: {_describe(state)}"))

    async def resume(self, node: str) -> ActionResult:
        """Resume `node`; ok only when it reads back neither drained nor down."""
        bad = self._bad_name(node)
        if bad is not None:
            return ActionResult(ok=False, answer=bad)
        output = await self._scontrol(["update", f"NodeName={node}", "State=RESUME"])
        state = await self.node_state(node)
        said = output.text
        if state.error is not None:
            return ActionResult(ok=False, answer=_answer(said, f"reading {node} back failed: {state.error}"))
        if not state.drained and "DOWN" not in state.states:
            return ActionResult(ok=True, answer=_answer(said, _describe(state)))
        return ActionResult(ok=False, answer=_answer(said, f"still out of service: {_describe(state)}"))

    async def close(self) -> None:
        """Close the login node's connection, if one is open (a later call opens another)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def __aenter__(self) -> SlurmBackend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- running scontrol --------------------------------------------------------------------

    @staticmethod
    def _bad_name(node: object) -> str | None:
        if isinstance(node, str) and NODE_NAME_RE.fullmatch(node):
            return None
        return f"Slurm node name {clean_text(str(node))!r} is not allowed; {_NODE_NAME_ALLOWED}"

    def _env(self) -> dict[str, str]:
        return {"SLURM_CONF": self.slurm_conf} if self.slurm_conf is not None else {}

    async def _scontrol(self, args: Sequence[str]) -> _Output:
        async with self._slots:
            if self.login is None:
                return await self._run_local([self.scontrol, *args])
            return await self._run_remote([self.scontrol, *args])

    async def _run_local(self, argv: Sequence[str]) -> _Output:
        env = {**os.environ, **self._env()}
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            return _Output(None, error=f"{argv[0]} not found: install Slurm's client "
                                       "(Debian: slurm-client) or configure the scontrol path")
        except OSError as exc:
            return _Output(None, error=f"{argv[0]} could not be started: {exc.strerror or exc}")
        try:
            stdout, stderr = await asyncio.wait_for(
                asyncio.gather(_read_bounded(process.stdout), _read_bounded(process.stderr)),
                self.timeout_s,
            )
            status = await asyncio.wait_for(process.wait(), self.timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return _Output(None, error=f"{argv[0]} {argv[1]} gave no answer within {self.timeout_s:g} s "
                                       f"(killed){_UNKNOWN_OUTCOME if argv[1] == 'update' else ''}; "
                                       "slurmctld may be overloaded or unreachable")
        return _Output(status, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))

    async def _connect(self) -> SSHConnection:
        async with self._connect_lock:
            if self._connection is None or self._connection.closed:
                from flow.ssh.connection import connect  # asyncssh only when a login node is used

                assert self.login is not None
                self._connection = await connect(self.login, self.ssh_options)
            return self._connection

    async def _run_remote(self, argv: Sequence[str]) -> _Output:
        assert self.login is not None
        command = _remote_command(argv, self._env())
        out: list[str] = []
        err: list[str] = []
        sizes = [0, 0]

        def keep(into: list[str], index: int) -> Callable[[str], None]:
            def add(line: str) -> None:
                if sizes[index] < MAX_OUTPUT_BYTES:
                    into.append(line[: MAX_OUTPUT_BYTES - sizes[index]])
                    sizes[index] += len(line)
            return add

        try:
            connection = await self._connect()
            status = await asyncio.wait_for(
                connection.stream(command, on_stdout=keep(out, 0), on_stderr=keep(err, 1)), self.timeout_s
            )
        except asyncio.TimeoutError:
            return _Output(None, error=f"{argv[0]} {argv[1]} on {self.login.label} gave no answer "
                                       f"within {self.timeout_s:g} s (stopped)"
                                       f"{_UNKNOWN_OUTCOME if argv[1] == 'update' else ''}")
        except FlowError as exc:
            return _Output(None, error=f"{argv[0]} on {self.login.label} did not run: {exc}")
        if status == 127:
            return _Output(status, "".join(out), "".join(err),
                           error=f"{argv[0]} not found on {self.login.label} (exit 127): install Slurm's "
                                 "client there or configure the scontrol path")
        return _Output(status, "".join(out), "".join(err))

