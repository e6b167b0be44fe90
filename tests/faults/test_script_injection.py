"""Shell injection into root scripts (issue 12): hostile strings through every templated field.

Each value either is refused (ConfigError naming its option or variable) or lands in every
generated script and file so that, parsed by `sh -n` and sourced in a sandbox (a temp directory
as cwd and HOME, `env -i`, never a real install), it runs no command (no canary file appears)
and reads back as exactly the value that went in. The scripts are sourced up to their last line
(`main "$@"`): everything before it is assignments and function definitions, the part that
holds the interpolated values. The files the startup script writes are taken from its heredocs
by calling its file steps with `write_file` captured, then sourced the way the no-systemd
fallback and systemd's EnvironmentFile= read them.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow.cli.main import main
from flow.errors import ConfigError
from flow.health.install import (
    GpudSource,
    InstallOptions,
    startup_script,
    status_script,
    uninstall_script,
    units,
)
from flow.health.install.shell import env_assignment, sh_comment, sh_quote, systemd_word

SHELLS = [shell for shell in ("dash", "bash") if shutil.which(shell)]
SHELLCHECK = Path("/usr/bin/shellcheck")
CANARY = "PWNED"
LAST_LINE = 'main "$@" </dev/null'

#: What an attacker would put in a value: command substitutions, quote breaking, newlines that
#: start a command or end a heredoc, systemd specifiers, NUL, bidi overrides, other scripts.
PAYLOADS = [
    f"'$(touch {CANARY})'",
    f"$(touch {CANARY})",
    f"`touch {CANARY}`",
    f"$(touch $HOME/{CANARY})",
    f"\ntouch {CANARY}\n",
    f"; touch {CANARY}",
    f"' ; touch {CANARY} ; '",
    f'"; touch {CANARY}; "',
    f"'\\''; touch {CANARY}; '",
    f"\nFLOW_EOF\ntouch {CANARY}\n",
    "FLOW_EOF",
    "%n %% %h $FLAGS ${HOME}",
    "\x00",
    "\r",
    "\u202e",
    "é中",
    "\ud800",
    "}",
    "\\",
    "]:1 --listen-address=0.0.0.0:1",
    " ",
    "*",
    "[a-z]",
    "-",
]


def hostile(*prefixes: str) -> st.SearchStrategy[str]:
    """Arbitrary text, the payloads, and the payloads behind a prefix that passes validation."""
    payload = st.sampled_from(PAYLOADS)
    tail = st.text(max_size=12)
    return st.one_of(
        st.text(max_size=40),
        payload,
        st.builds(lambda p, x, t: p + x + t, st.sampled_from(prefixes or ("",)), payload, tail),
        st.builds(lambda p, t: p + t, st.sampled_from(prefixes or ("",)), tail),
    )


def _opts(**values: Any) -> Callable[[Any], InstallOptions]:
    def build(value: Any) -> InstallOptions:
        return InstallOptions(**{key: (value if v is None else v) for key, v in values.items()})

    return build


def _source(**values: Any) -> Callable[[Any], InstallOptions]:
    def build(value: Any) -> InstallOptions:
        fields = {key: (value if v is None else v) for key, v in values.items()}
        return InstallOptions(gpud_source=GpudSource(**fields))

    return build


#: field -> (build options from the value, values to try).
FIELDS: dict[str, tuple[Callable[[Any], InstallOptions], st.SearchStrategy[Any]]] = {
    "gpud_version": (_opts(gpud_version=None), hostile("v0.5.1", "v0.5.1-", "v1.2.3+")),
    "gpud_bind": (_opts(gpud_bind=None), hostile("::1%", "::1%eth", "127.0.0.1", "::1")),
    "gpud_port": (_opts(gpud_port=None), st.one_of(st.integers(), hostile("15132"))),
    "gpud_tarball": (_source(tarball=None), hostile("/srv/gpud/", "/")),
    "gpud_mirror": (_source(mirror=None), hostile("https://mirror.internal/", "https://m/{version}/",
                                                  "file:///srv/{file}")),
    "gpud_sha256": (_source(tarball="/srv/g.tgz", sha256=None), hostile("a" * 64, "A" * 63)),
    "metrics_endpoint": (_opts(metrics_endpoint=None), hostile("https://m.example.com/", "http://127.0.0.1/")),
    "metrics_interval": (_opts(metrics_interval=None), st.one_of(st.floats(), hostile("60"))),
    "metrics_batch_size": (_opts(metrics_batch_size=None), st.one_of(st.integers(), hostile("1"))),
    "auth_token": (_opts(auth_token=None), hostile("tok-", "")),
    "task_id": (_opts(task_id=None), hostile("task-abc", "task-")),
    "task_name": (_opts(task_name=None), hostile("train-", "")),
    "instance_type": (_opts(instance_type=None), hostile("h100.8xlarge", "")),
    "package": (_opts(package=None), hostile("flow-health", "/root/flow.whl", "--index-url=")),
    "python": (_opts(python=None), hostile("python3", "/usr/bin/")),
    "root": (_opts(root=None), hostile("/tmp/r", "/tmp/x y/")),
    "systemd": (_opts(systemd=None), hostile("auto", "no")),
    "healthz_timeout_s": (_opts(healthz_timeout_s=None), st.one_of(st.integers(), hostile("60"))),
}


def _expected_mirror(template: str, version: str, arch: str) -> str:
    if "{file}" not in template and "{arch}" not in template:
        template = template.rstrip("/") + "/{file}"
    names = {"version": version, "arch": arch, "file": f"gpud_{version}_linux_{arch}.tgz"}
    return re.sub(r"\{(arch|file|version)\}", lambda m: names[m.group(1)], template)


def _sandbox_run(shell: str, sandbox: Path, program: str) -> list[str]:
    """Run `program` with `shell` in the sandbox, nothing inherited; NUL-separated stdout fields."""
    path = sandbox / "probe.sh"
    path.write_text(program, encoding="utf-8")
    env = {"HOME": str(sandbox), "PWD": str(sandbox), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), shell, str(path)],
                            cwd=sandbox, capture_output=True, timeout=60, check=False)
    path.unlink()
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stderr == b"", result.stderr.decode(errors="replace")
    fields = result.stdout.split(b"\0")
    assert fields[-1] == b""
    return [field.decode("utf-8") for field in fields[:-1]]


def _print_vars(names: list[str]) -> str:
    return "".join(f"printf '%s\\000' \"${name}\"\n" for name in names)


def _body(script: str) -> str:
    """The script without its last line (the call to main): assignments and functions only."""
    lines = script.splitlines(keepends=True)
    assert lines[-1].rstrip("\n") == LAST_LINE
    return "".join(lines[:-1])


# Stubs for the startup script's file steps: capture each heredoc, touch nothing else.
_CAPTURE = """
begin() { :; }
report() { :; }
mkdir() { :; }
chmod() { :; }
fail() { printf 'fail: %s\\n' "$*" >&2; exit 97; }
write_file() { cat >"$HOME/captured-$1"; PUT=unchanged; }
step_gpud_config
step_units
step_collector_env
"""


def check_scripts(options: InstallOptions, sandbox: Path) -> None:
    """Every script and file made from `options` parses, runs nothing when sourced, round-trips."""
    source = options.gpud_source
    scripts = {
        "startup": (startup_script(options), {
            "FLOW_ROOT": options.root, "FLOW_SYSTEMD": options.systemd,
            "GPUD_VERSION": options.gpud_version, "GPUD_LISTEN": options.listen_address,
            "GPUD_HEALTHZ_URL": options.healthz_url, "GPUD_SOURCE": source.kind,
            "GPUD_TARBALL": source.tarball or "", "GPUD_SHA256": source.sha256 or "",
            "FLOW_PACKAGE": options.package or "", "FLOW_PYTHON": options.python,
            "HEALTHZ_TIMEOUT": str(options.healthz_timeout_s),
        }),
        "status": (status_script(options), {
            "FLOW_ROOT": options.root, "FLOW_SYSTEMD": options.systemd, "GPUD_LISTEN": options.listen_address,
        }),
        "uninstall": (uninstall_script(options, purge=True), {
            "FLOW_ROOT": options.root, "FLOW_SYSTEMD": options.systemd, "PURGE": "1", "KEEP_GPUD": "0",
        }),
        "disabled": (startup_script(dataclasses.replace(options, enabled=False)), {
            "FLOW_ROOT": options.root, "FLOW_SYSTEMD": options.systemd,
        }),
    }
    files = {
        "captured-gpud-config": units.gpud_defaults(options),
        "captured-gpud-unit": units.gpud_unit(),
        "captured-collector-unit": units.collector_unit(),
        "captured-collector-env": units.metrics_env(options),
    }
    env_values = {
        "FLOW_TASK_ID": options.task_id or "", "FLOW_TASK_NAME": options.task_name or "",
        "FLOW_INSTANCE_TYPE": options.instance_type or "", "FLOW_GPUD_BIND": options.gpud_bind,
        "FLOW_GPUD_PORT": str(options.gpud_port), "FLOW_GPUD_VERSION": options.gpud_version,
        "FLOW_METRICS_ENDPOINT": options.metrics_endpoint or "",
        "FLOW_METRICS_BATCH_SIZE": str(options.metrics_batch_size),
        "FLOW_METRICS_AUTH_TOKEN": options.auth_token or "",
    }
    for shell in SHELLS:
        for name, (script, expected) in scripts.items():
            path = sandbox / "script.sh"
            path.write_text(script, encoding="utf-8")
            parsed = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, check=False)
            path.unlink()
            assert parsed.returncode == 0, f"{name}: {parsed.stderr}"
            probe = _body(script) + _print_vars(list(expected))
            if name == "startup":
                probe += "ARCH=amd64\ngpud_mirror_url | tr -d '\\n'\nprintf '\\000'\n"
            got = _sandbox_run(shell, sandbox, probe)
            want = list(expected.values())
            if name == "startup":
                want.append(_expected_mirror(source.mirror, options.gpud_version, "amd64")
                            if source.mirror else "")
            assert got == want, f"{shell} {name}"
        # The files the startup script writes are its heredocs, byte for byte.
        _sandbox_run(shell, sandbox, _body(scripts["startup"][0]) + _CAPTURE)
        for file, text in files.items():
            assert (sandbox / file).read_text(encoding="utf-8") == text, file
        # /etc/default/gpud as the fallback sources it; FLAGS is one word: GPUd's one flag.
        got = _sandbox_run(shell, sandbox, 'FLAGS=\n. ./captured-gpud-config\nset -f\n'
                                           "# shellcheck disable=SC2086\nprintf '%s\\000' $FLAGS\n")
        assert got == [f"--listen-address={options.listen_address}"]
        got = _sandbox_run(shell, sandbox, "set -a\n. ./captured-collector-env\nset +a\n"
                                           + _print_vars(list(env_values)))
        assert got == list(env_values.values())
        for file in files:
            (sandbox / file).unlink()
    left = sorted(p.name for p in sandbox.iterdir())
    assert left == [], f"the sandbox holds {left}: something ran"


def _sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox")


@pytest.mark.skipif(not SHELLS, reason="neither dash nor bash is installed")
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_hostile_value_is_refused_or_inert(field: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    build, values = FIELDS[field]
    sandbox = _sandbox(tmp_path_factory)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(values)
    def check(value: Any) -> None:
        try:
            options = build(value)
        except ConfigError as exc:
            # Refused: the message names what was refused (an option, a variable or the token).
            assert exc.message and ("--" in exc.message or "FLOW_" in exc.message or "token" in exc.message)
            return
        check_scripts(options, sandbox)

    check()


# The values below pass validation and still hold every character a shell or systemd treats
# specially that the grammars allow: they must come out inert and exact.
ACCEPTED_HOSTILE = InstallOptions(
    gpud_bind="::1%eth0",
    gpud_version="v0.5.1-rc.1",
    gpud_source=GpudSource(mirror=f"https://m.internal/a b/$(touch {CANARY})/{{file}}?x=`id`&y=%n;z=\"",
                           sha256="A" * 64),
    metrics_endpoint=f"https://m.example.com/$(touch {CANARY})?a=`id`;b=%h",
    auth_token=f"tok$(touch{CANARY})`id`;%n\"",
    task_id="task-abc123",
    task_name=f'$(touch {CANARY}) `id` ; "x" %n ${{HOME}} * [a]',
    instance_type="h100 8x; `id`",
    package=f"/root/$(touch {CANARY})/flow_health-0.1.0-py3-none-any.whl",
    python=f"/usr/bin/py $(touch {CANARY})",
    root=f"/tmp/x y/$(touch {CANARY})/}}",
    systemd="no",
)


@pytest.mark.skipif(not SHELLS, reason="neither dash nor bash is installed")
def test_accepted_hostile_values_are_inert_and_exact(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    check_scripts(ACCEPTED_HOSTILE, sandbox)
    tarball = GpudSource(tarball=f"/srv/`touch {CANARY}`")
    check_scripts(dataclasses.replace(ACCEPTED_HOSTILE, gpud_source=tarball), sandbox)


@pytest.mark.slow  # shellcheck's analysis takes about a second of CPU per script
@pytest.mark.skipif(not SHELLCHECK.exists(), reason="shellcheck is missing (apt-get install shellcheck)")
def test_scripts_with_hostile_values_pass_shellcheck(tmp_path: Path) -> None:
    paths = []
    for name, text in (("startup", startup_script(ACCEPTED_HOSTILE)),
                       ("status", status_script(ACCEPTED_HOSTILE)),
                       ("uninstall", uninstall_script(ACCEPTED_HOSTILE))):
        path = tmp_path / f"{name}.sh"
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    # SC2016 ("expressions don't expand in single quotes") flags exactly the defence: a `$(...)`
    # inside a value, single-quoted so that it stays text. Every other finding counts.
    result = subprocess.run([str(SHELLCHECK), "--shell=sh", "--severity=style", "--format=gcc",
                             "--exclude=SC2016", *paths], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- issue 12's reproduction, through the real command line ----

def test_issue_12_scope_id_command_substitution_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOW_GPUD_BIND", "::1%'$(id>PWNED)'")
    code = main(["health", "startup-script"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "FLOW_GPUD_BIND=\"::1%'$(id>PWNED)'\"" in err
    assert "is not an interface name" in err and "allowed:" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_issue_12_a_real_scope_id_is_accepted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_GPUD_BIND", "::1%eth0")
    code = main(["health", "startup-script"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert "FLAGS='--listen-address=[::1%eth0]:15132'" in lines
    assert "FLOW_GPUD_BIND='::1%eth0'" in lines
    assert "GPUD_HEALTHZ_URL='https://[::1%25eth0]:15132/healthz'" in lines


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FLOW_GPUD_BIND", "::1%'$(id>PWNED)'", "is not an interface name"),
        ("FLOW_GPUD_BIND", "::1%eth0 x", "is not an interface name"),
        ("FLOW_GPUD_BIND", "::1%" + "e" * 16, "is not an interface name"),
        ("FLOW_GPUD_BIND", "::1%eth/0", "is not an interface name"),
        ("FLOW_GPUD_BIND", "0.0.0.0", "would expose GPUd"),
        ("FLOW_GPUD_VERSION", "v0.5.1$(id)", "is not a GPUd release tag"),
        ("FLOW_GPUD_VERSION", "v\u0661.2.3", "is not a GPUd release tag"),
    ],
)
def test_bad_script_values_exit_2_naming_the_variable(
    variable: str, value: str, message: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, value)
    code = main(["health", "startup-script"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert f"{variable}={value!r}" in err and message in err and "allowed:" in err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("--task-id=../../etc", "--task-id='../../etc' is not an identifier"),
        ("--python=-c", "--python='-c' is not a command"),
        ("--package=--index-url=https://evil.example/", "starts with '-'"),
        ("--gpud-version=v0.5.1\n", "is not a GPUd release tag"),
    ],
)
def test_bad_script_options_exit_2_naming_the_option(
    options: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["health", "startup-script", options])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert message in err


def test_library_callers_get_config_errors_not_type_errors() -> None:
    for bad in ({"gpud_port": "15132"}, {"gpud_port": True}, {"metrics_interval": float("nan")},
                {"metrics_interval": float("inf")}, {"gpud_version": 5}, {"task_name": 5}):
        with pytest.raises(ConfigError):
            InstallOptions(**bad)


# ---- the quoting helpers themselves: the second line of defence ----

def test_helpers_refuse_what_their_reader_cannot_hold() -> None:
    with pytest.raises(ValueError):
        sh_quote("a\0b")
    with pytest.raises(ValueError):
        sh_comment("title\ntouch PWNED")
    for value in ("it's", "back\\slash", "new\nline", "nul\0"):
        with pytest.raises(ValueError):
            env_assignment("NAME", value)
    with pytest.raises(ValueError):
        env_assignment("NAME=x; touch PWNED #", "v")
    for value in ("", "two words", "semi;colon", 'quo"te', "new\nline"):
        with pytest.raises(ValueError):
            systemd_word(value)


def test_systemd_word_escapes_specifiers_and_variables() -> None:
    assert systemd_word("/opt/a%b$c") == "/opt/a%%b$c"
    assert systemd_word("a%b$c", argument=True) == "a%%b$$c"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_word_names_the_executable_systemd_runs(tmp_path: Path) -> None:
    """`%q` unescaped would be the host name; `$` in an executable's path is literal to systemd."""
    binary = tmp_path / "bin%q$x"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)

    def verify(word: str) -> str:
        unit = tmp_path / "probe.service"
        unit.write_text(f"[Service]\nType=oneshot\nExecStart={word}\n")
        result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                                check=False)
        return result.stdout + result.stderr

    assert "is not executable" in verify(str(binary))
    assert "is not executable" not in verify(systemd_word(str(binary)))
