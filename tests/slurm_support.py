"""A real Slurm cluster on loopback for tests: `munged`, `slurmctld` and one `slurmd`.

```python
def test_drain(slurm):                      # tests/remediate/conftest.py: shared per module
    backend = SlurmBackend(slurm_conf=str(slurm.conf))
    slurm.scontrol("show", "node", "gpu007")  # CompletedProcess, SLURM_CONF set
    slurm.reasons()                           # {"gpu007": "flow: ..."} as `sinfo -R` lists them
def test_outage(slurm_factory):             # a cluster of its own (it may be stopped)
    cluster = slurm_factory.start()
    cluster.stop_controller()
```
Each cluster has its own directory (short, under /tmp: munge's socket path must fit in 108
bytes), munge key (1024 random bytes, 0400), `slurm.conf` with free ports,
`NodeName=gpu[001-100] NodeAddr=127.0.0.1` and `SlurmdSpoolDir=<dir>/spool/%n`. The one
`slurmd -N gpu001` answers slurmctld's pings for every node at 127.0.0.1, so all 100 nodes are
idle, as on a live cluster. Daemons run in the foreground as the current user (root in CI:
`SlurmUser` is whoever runs the tests) and are stopped by PID. Missing Debian packages make the
fixtures skip naming them (and the suite's skip policy then fails the run).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sshd_support import free_port

__all__ = [
    "NODE_COUNT",
    "SlurmCluster",
    "SlurmFactory",
    "slurm_clusters",
    "slurm_missing_reason",
]

NODE_COUNT = 100
_START_DEADLINE_S = 60.0

# command -> (where Debian puts it, the package that provides it)
_TOOLS = {
    "munged": ("/usr/sbin/munged", "munge"),
    "slurmctld": ("/usr/sbin/slurmctld", "slurmctld"),
    "slurmd": ("/usr/sbin/slurmd", "slurmd"),
    "scontrol": ("/usr/bin/scontrol", "slurm-client"),
    "sinfo": ("/usr/bin/sinfo", "slurm-client"),
}


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    path = _TOOLS[name][0]
    return path if os.access(path, os.X_OK) else None


def slurm_missing_reason() -> str | None:
    """Why real-Slurm tests cannot run here, or None when they can."""
    missing = sorted({package for name, (_, package) in _TOOLS.items() if _tool(name) is None})
    if missing:
        return (f"Slurm is missing: install Debian's {', '.join(missing)} "
                "(scripts/test-deps.sh) to run the real-Slurm tests")
    return None


@dataclass
class _Daemon:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # its own group: stop() reaches anything it forked
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@dataclass
class SlurmCluster:
    """One running cluster: `conf` is its slurm.conf, `env` sets SLURM_CONF for any Slurm command."""

    directory: Path
    conf: Path
    munge_socket: Path
    controller_port: int
    node_port: int
    daemons: dict[str, _Daemon] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    @property
    def scontrol_path(self) -> str:
        return _tool("scontrol") or "scontrol"

    def scontrol(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.scontrol_path, *args)

    def show_node(self, node: str) -> str:
        """`scontrol show node NODE --oneliner`, checked."""
        result = self.scontrol("show", "node", node, "--oneliner")
        assert result.returncode == 0, result.stderr + result.stdout
        return result.stdout

    def node_fields(self, node: str) -> tuple[str, str]:
        """(State, Reason) of `node` as `sinfo` prints them (`%T`, `%E`): no `[user@time]`."""
        result = self.run(_tool("sinfo") or "sinfo", "-h", "-N", "-n", node, "-o", "%T|%E")
        assert result.returncode == 0, result.stderr
        state, _, reason = result.stdout.rstrip("\n").partition("|")
        return state, reason

    def reasons(self) -> dict[str, str]:
        """Every node with a reason, as `sinfo -R` lists them (full reason text, `%E`)."""
        result = self.run(_tool("sinfo") or "sinfo", "-R", "-h", "-N", "-o", "%n|%E")
        assert result.returncode == 0, result.stderr
        found: dict[str, str] = {}
        for line in result.stdout.splitlines():
            node, _, reason = line.partition("|")
            found[node] = reason
        return found

    def sinfo_r(self) -> str:
        """`sinfo -R` exactly as an operator types it."""
        return self.run(_tool("sinfo") or "sinfo", "-R").stdout

    def stop_controller(self) -> None:
        self.daemons["slurmctld"].stop()

    def start_controller(self) -> None:
        daemon = self.daemons["slurmctld"]
        daemon.start(self.env)
        self._wait_up(all_idle=False)  # nodes keep the state saved before the stop

    def _wait_up(self, *, all_idle: bool = True) -> None:
        deadline = time.monotonic() + _START_DEADLINE_S
        last = ""
        while time.monotonic() < deadline:
            for daemon in self.daemons.values():
                if not daemon.running:
                    raise RuntimeError(f"{daemon.name} exited:\n{daemon.log()}")
            ping = self.scontrol("ping")
            if "is UP" in ping.stdout and not all_idle:
                return
            if "is UP" in ping.stdout:
                states = self.run(_tool("sinfo") or "sinfo", "-h", "-o", "%N %T")
                last = states.stdout.strip()
                if states.returncode == 0 and last.endswith(" idle") and len(last.splitlines()) == 1:
                    return
            else:
                last = ping.stdout + ping.stderr
            time.sleep(0.2)
        logs = "\n".join(f"--- {d.name}\n{d.log()}" for d in self.daemons.values())
        raise RuntimeError(f"Slurm did not come up within {_START_DEADLINE_S} s ({last}):\n{logs}")

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            if name in self.daemons:
                self.daemons[name].stop()


def _write_conf(directory: Path, socket: Path, controller_port: int, node_port: int) -> Path:
    user = pwd.getpwuid(os.getuid()).pw_name
    lines = [
        "ClusterName=flowtest",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={controller_port}",
        f"SlurmdPort={node_port}",
        "AuthType=auth/munge",
        f"AuthInfo=socket={socket}",
        "CredType=cred/munge",
        f"SlurmUser={user}",
        f"SlurmdUser={user}",
        f"StateSaveLocation={directory / 'state'}",
        f"SlurmdSpoolDir={directory / 'spool'}/%n",
        f"SlurmctldPidFile={directory / 'slurmctld.pid'}",
        f"SlurmdPidFile={directory / 'spool'}/slurmd-%n.pid",
        f"SlurmctldLogFile={directory / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={directory / 'log'}/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/linear",
        "ReturnToService=2",
        "MpiDefault=none",
        "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SwitchType=switch/none",
        # Shorter than the defaults so that an unreachable slurmctld is reported in seconds.
        "MessageTimeout=3",
        f"NodeName=gpu[001-{NODE_COUNT:03d}] NodeAddr=127.0.0.1 CPUs=1 State=UNKNOWN",
        "PartitionName=gpu Nodes=ALL Default=YES State=UP",
    ]
    conf = directory / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _start_cluster(directory: Path) -> SlurmCluster:
    for sub in ("munge", "state", "spool", "log"):
        (directory / sub).mkdir()
    munge = directory / "munge"
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket = munge / "munge.socket"
    controller_port, node_port = free_port(), free_port()
    cluster = SlurmCluster(
        directory=directory,
        conf=_write_conf(directory, socket, controller_port, node_port),
        munge_socket=socket,
        controller_port=controller_port,
        node_port=node_port,
    )
    log = directory / "log"
    # --force: munged insists that every directory above its socket be reachable by all users
    # and that its files sit in root-owned system directories; a test's temp dir is neither.
    cluster.daemons["munged"] = _Daemon("munged", [
        _tool("munged") or "munged", "--foreground", "--force", f"--socket={socket}",
        f"--key-file={key}", f"--pid-file={munge / 'munged.pid'}",
        f"--log-file={log / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}",
    ], log / "munged.out")
    cluster.daemons["slurmctld"] = _Daemon(
        "slurmctld", [_tool("slurmctld") or "slurmctld", "-D"], log / "slurmctld.out")
    cluster.daemons["slurmd"] = _Daemon(
        "slurmd", [_tool("slurmd") or "slurmd", "-D", "-N", "gpu001"], log / "slurmd.out")
    try:
        cluster.daemons["munged"].start(cluster.env)
        deadline = time.monotonic() + _START_DEADLINE_S
        while not socket.exists():
            if not cluster.daemons["munged"].running or time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start:\n{cluster.daemons['munged'].log()}")
            time.sleep(0.05)
        cluster.daemons["slurmctld"].start(cluster.env)
        cluster.daemons["slurmd"].start(cluster.env)
        cluster._wait_up()
    except BaseException:
        cluster.stop()
        raise
    return cluster


class SlurmFactory:
    """Starts clusters under a short temp directory; `stop_all()` stops them and removes it."""

    def __init__(self) -> None:
        reason = slurm_missing_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self.base_dir = Path(tempfile.mkdtemp(prefix="flow-slurm-", dir="/tmp"))
        self.clusters: list[SlurmCluster] = []

    def start(self) -> SlurmCluster:
        last: Exception | None = None
        for attempt in range(3):  # a free port may be taken meanwhile
            directory = self.base_dir / f"c{len(self.clusters)}-{attempt}"
            directory.mkdir()
            try:
                cluster = _start_cluster(directory)
            except RuntimeError as exc:
                last = exc
                if "Address already in use" not in str(exc):
                    raise
                continue
            self.clusters.append(cluster)
            return cluster
        raise RuntimeError(f"Slurm could not find free ports after 3 tries: {last}")

    def stop_all(self) -> None:
        for cluster in self.clusters:
            cluster.stop()
        self.clusters.clear()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def slurm_clusters() -> Iterator[SlurmFactory]:
    """Generator behind the fixtures: a factory whose clusters are stopped at the end."""
    factory = SlurmFactory()
    try:
        yield factory
    finally:
        factory.stop_all()
