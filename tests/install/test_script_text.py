"""The generated scripts and files: shellcheck-clean, parseable by sh, and saying what they must.

These read the text only; tests/install/test_script_run.py runs the scripts in an isolated root.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from flow.config import load_config
from flow.errors import ConfigError
from flow.health.install import (
    GpudSource,
    InstallOptions,
    startup_script,
    status_script,
    uninstall_script,
    units,
)

SHELLCHECK = Path("/usr/bin/shellcheck")
TOKEN = "tok-3f9a1c.Zx_42~"
SHA = "0123456789abcdef" * 4

STARTUP_VARIANTS: dict[str, InstallOptions] = {
    "defaults (official installer)": InstallOptions(),
    "disabled": InstallOptions(enabled=False),
    "air-gapped tarball + sha256 + token": InstallOptions(
        gpud_source=GpudSource(tarball="/srv/gpud/gpud_v0.5.1_linux_amd64.tgz", sha256=SHA),
        metrics_endpoint="https://metrics.example.com/ingest", auth_token=TOKEN,
        task_id="task-abc123", task_name="train-a", instance_type="h100.8xlarge",
    ),
    "air-gapped tarball directory": InstallOptions(gpud_source=GpudSource(tarball="/srv/gpud")),
    "mirror with placeholders": InstallOptions(
        gpud_source=GpudSource(mirror="https://mirror.internal/gpud/{version}/gpud_{version}_linux_{arch}.tgz",
                               sha256=SHA)),
    "mirror base url": InstallOptions(gpud_source=GpudSource(mirror="https://mirror.internal/gpud/")),
    "ipv6 loopback, odd port": InstallOptions(gpud_bind="::1", gpud_port=20000, gpud_version="v0.12.24"),
    "skip pip, isolated root, no systemd": InstallOptions(package=None, root="/tmp/x y/root", systemd="no"),
    "local wheel, forced systemd": InstallOptions(
        package="/root/flow_health-0.1.0-py3-none-any.whl", systemd="yes", python="/usr/bin/python3.11"),
}


def _scripts() -> dict[str, str]:
    scripts = {f"startup: {name}": startup_script(o) for name, o in STARTUP_VARIANTS.items()}
    base = InstallOptions(root="/tmp/root", systemd="no")
    scripts["uninstall"] = uninstall_script(InstallOptions())
    scripts["uninstall --purge, isolated root"] = uninstall_script(base, purge=True)
    scripts["uninstall --keep-gpud"] = uninstall_script(InstallOptions(), keep_gpud=True)
    scripts["status"] = status_script(InstallOptions())
    scripts["status, ipv6, isolated root"] = status_script(InstallOptions(gpud_bind="::1", root="/tmp/r"))
    return scripts


SCRIPTS = _scripts()


@pytest.mark.slow  # shellcheck's analysis takes about a second of CPU per script
@pytest.mark.skipif(not SHELLCHECK.exists(), reason="shellcheck is missing (apt-get install shellcheck)")
def test_every_script_passes_shellcheck(tmp_path: Path) -> None:
    paths = []
    for index, name in enumerate(sorted(SCRIPTS)):
        path = tmp_path / f"{index:02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.sh"
        path.write_text(SCRIPTS[name])
        paths.append(str(path))
    # One shellcheck run over every variant; every severity, including style: the scripts must
    # be clean, not merely free of errors.
    result = subprocess.run([str(SHELLCHECK), "--shell=sh", "--severity=style", "--format=gcc", *paths],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("shell", ["sh", "dash", "bash"])
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_parses(name: str, shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    path = tmp_path / "script.sh"
    path.write_text(SCRIPTS[name])
    result = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_scripts_are_deterministic() -> None:
    options = STARTUP_VARIANTS["air-gapped tarball + sha256 + token"]
    assert startup_script(options) == startup_script(options)


def test_every_absolute_path_hangs_off_flow_root() -> None:
    for name, script in SCRIPTS.items():
        for line in script.splitlines():
            match = re.match(r'^([A-Z_]+)="(.*)"$', line)
            if match and match.group(2).startswith(("/", "$FLOW_ROOT")):
                assert match.group(2).startswith("$FLOW_ROOT/"), f"{name}: {line}"


def test_token_only_in_the_env_file_heredoc() -> None:
    script = startup_script(STARTUP_VARIANTS["air-gapped tarball + sha256 + token"])
    lines = [line for line in script.splitlines() if TOKEN in line]
    assert lines == [f"FLOW_METRICS_AUTH_TOKEN='{TOKEN}'"]
    # ...and that line sits inside the quoted heredoc that feeds the 0600 env file.
    all_lines = script.splitlines()
    at = all_lines.index(lines[0])
    opener = max(i for i in range(at) if "<<'FLOW_EOF'" in all_lines[i])
    assert all_lines[opener].startswith('    write_file collector-env "$ENV_FILE" 0600')
    assert "FLOW_EOF" not in all_lines[opener + 1 : at]


def test_token_never_in_repr() -> None:
    assert TOKEN not in repr(STARTUP_VARIANTS["air-gapped tarball + sha256 + token"])


def test_disabled_script_is_a_logged_no_op() -> None:
    script = startup_script(InstallOptions(enabled=False))
    assert "health monitoring is disabled" in script
    assert "FLOW_HEALTH_MONITORING=false" in script
    for forbidden in ("gpud run", "install.sh", "systemctl", "pip install", "metrics.env"):
        assert forbidden not in script


def test_disabled_follows_the_config() -> None:
    config = load_config({"FLOW_HEALTH_MONITORING": "false"})
    script = startup_script(InstallOptions.from_config(config))
    assert "health monitoring is disabled" in script


def test_official_installer_is_the_default_source() -> None:
    script = startup_script(InstallOptions(gpud_version="v0.5.1"))
    assert "GPUD_SOURCE=installer" in script
    assert "GPUD_INSTALLER_URL=https://pkg.gpud.dev/install.sh" in script
    assert 'run sh -s "$GPUD_VERSION" <"$WORK/install.sh"' in script
    assert "GPUD_VERSION=v0.5.1" in script


def _mirror_url(options: InstallOptions, arch: str) -> str:
    script = startup_script(options)
    start = script.index("gpud_mirror_url() {")
    function = script[start : script.index("\n}\n", start) + 3]
    return subprocess.run(["sh", "-c", f"ARCH={arch}\n{function}gpud_mirror_url"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_mirror_url_takes_the_node_arch() -> None:
    options = STARTUP_VARIANTS["mirror with placeholders"]
    assert _mirror_url(options, "arm64") == "https://mirror.internal/gpud/v0.5.1/gpud_v0.5.1_linux_arm64.tgz"
    base = STARTUP_VARIANTS["mirror base url"]
    assert _mirror_url(base, "amd64") == "https://mirror.internal/gpud/gpud_v0.5.1_linux_amd64.tgz"
    odd = InstallOptions(gpud_source=GpudSource(mirror="https://m.internal/a b/$(reboot)/{file}?x=`id`"))
    assert _mirror_url(odd, "amd64") == "https://m.internal/a b/$(reboot)/gpud_v0.5.1_linux_amd64.tgz?x=`id`"


def test_gpud_defaults_bind_loopback() -> None:
    assert "FLAGS='--listen-address=127.0.0.1:15132'" in units.gpud_defaults(InstallOptions())
    ipv6 = units.gpud_defaults(InstallOptions(gpud_bind="::1", gpud_port=20000))
    assert "FLAGS='--listen-address=[::1]:20000'" in ipv6


def test_gpud_unit() -> None:
    text = units.gpud_unit()
    for line in ("ExecStart=/usr/local/bin/gpud run $FLAGS", "EnvironmentFile=-/etc/default/gpud",
                 "Restart=always", "WantedBy=multi-user.target"):
        assert line in text.splitlines()


def test_collector_unit_is_hardened_but_can_write_its_store() -> None:
    lines = units.collector_unit().splitlines()
    for line in ("ExecStart=/opt/flow/venv/bin/flow health collect", "Restart=on-failure",
                 "EnvironmentFile=/etc/flow/metrics.env", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/flow", "ProtectHome=yes", "PrivateTmp=yes",
                 "StateDirectory=flow"):
        assert line in lines


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_have_no_unknown_directives(tmp_path: Path) -> None:
    for name, text in (("gpud.service", units.gpud_unit()),
                       ("flow-metrics-streamer.service", units.collector_unit())):
        (tmp_path / name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", *(str(p) for p in sorted(tmp_path.iterdir()))],
                            capture_output=True, text=True, check=False)
    # The binaries do not exist on this machine; anything else (unknown key, bad value) is a bug.
    problems = [line for line in (result.stderr + result.stdout).splitlines()
                if line.strip() and "is not executable" not in line]
    assert problems == []


def test_env_file_content() -> None:
    options = STARTUP_VARIANTS["air-gapped tarball + sha256 + token"]
    text = units.metrics_env(options)
    values = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert values == {
        "FLOW_TASK_ID": "'task-abc123'",
        "FLOW_TASK_NAME": "'train-a'",
        "FLOW_INSTANCE_TYPE": "'h100.8xlarge'",
        "FLOW_EXPECTED_GPUS": "''",  # the task sets no `gpus:`: the instance type's count
        "FLOW_GPUD_BIND": "'127.0.0.1'",
        "FLOW_GPUD_PORT": "'15132'",
        "FLOW_GPUD_VERSION": "'v0.5.1'",
        "FLOW_METRICS_ENDPOINT": "'https://metrics.example.com/ingest'",
        "FLOW_METRICS_INTERVAL": "'60'",
        "FLOW_METRICS_BATCH_SIZE": "'100'",
        "FLOW_METRICS_FLUSH_INTERVAL": "'300'",
        "FLOW_METRICS_RETENTION_DAYS": "'7'",
        "FLOW_METRICS_COMPRESS_AFTER_DAYS": "'1'",
        "FLOW_METRICS_AUTH_TOKEN": f"'{TOKEN}'",
        "FLOW_HOME": "'/var/lib/flow'",
        "FLOW_METRICS_DIR": "'/var/lib/flow/metrics'",
    }


def test_env_file_is_read_back_by_flows_config_loader(tmp_path: Path) -> None:
    """What the collector will see: the env file, as systemd/sh reads it, loads as a valid Config."""
    options = InstallOptions(metrics_endpoint="https://m.example.com/x", auth_token=TOKEN,
                             metrics_interval=30, metrics_batch_size=50, metrics_flush_interval=45)
    env_file = tmp_path / "metrics.env"
    env_file.write_text(units.metrics_env(options))
    out = subprocess.run(["sh", "-c", f'set -a; . "{env_file}"; env'], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("FLOW_"))
    config = load_config(env)
    assert config.health.metrics_endpoint == "https://m.example.com/x"
    assert config.health.metrics_auth_token == TOKEN
    assert config.health.metrics_interval == 30
    assert config.health.metrics_batch_size == 50
    assert config.health.metrics_flush_interval == 45
    assert config.metrics_dir == Path("/var/lib/flow/metrics")


def test_cursor_path_matches_the_collectors() -> None:
    from flow.health.collector import default_cursor_path
    from flow.health.install import layout

    assert str(default_cursor_path(Path(layout.STORE_DIR))) == layout.CURSOR_FILE


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: GpudSource(sha256="abc"), "--gpud-sha256='abc' is not a SHA-256 digest"),
        (lambda: GpudSource(sha256=SHA), "--gpud-sha256 needs --gpud-tarball or --gpud-mirror"),
        (lambda: GpudSource(tarball="rel/gpud.tgz"), "is not an absolute path"),
        (lambda: GpudSource(tarball="/a.tgz", mirror="https://m/x"), "both set"),
        (lambda: GpudSource(mirror="ftp:/x"), "--gpud-mirror='ftp:/x' is not a URL"),
        (lambda: InstallOptions(gpud_version="0.5.1"), "--gpud-version='0.5.1' is not a GPUd release tag"),
        (lambda: InstallOptions(metrics_endpoint="http://metrics.example.com"),
         "plain http to a remote host"),
        (lambda: InstallOptions(task_name="it's"), "--task-name=\"it's\" holds a quote"),
        (lambda: InstallOptions(auth_token="two words"),
         "the metrics auth token is empty or holds whitespace"),
        (lambda: InstallOptions(package="  "), "--package='  ' is empty"),
        (lambda: InstallOptions(root="/"), "--root='/' is not allowed"),
        (lambda: InstallOptions(root="relative"), "--root='relative' is not allowed"),
        (lambda: InstallOptions(systemd="maybe"), "--systemd='maybe' is not allowed; allowed: auto, yes, no"),
    ],
)
def test_bad_options_name_the_option(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert message in info.value.message


def test_a_bad_token_is_never_quoted_back() -> None:
    with pytest.raises(ConfigError) as info:
        InstallOptions(auth_token="se'cret")
    assert "se'cret" not in info.value.message


def test_from_config_takes_the_health_settings() -> None:
    config = load_config({"FLOW_GPUD_VERSION": "v0.6.0", "FLOW_GPUD_PORT": "16000",
                          "FLOW_METRICS_ENDPOINT": "https://m.example.com/in",
                          "FLOW_METRICS_INTERVAL": "15", "FLOW_METRICS_AUTH_TOKEN": TOKEN,
                          "FLOW_METRICS_FLUSH_INTERVAL": "20"})
    options = InstallOptions.from_config(config, metrics_batch_size=7)
    assert options.metrics_flush_interval == 20.0  # reaches the node's metrics.env
    assert (options.gpud_version, options.gpud_port, options.metrics_endpoint) == (
        "v0.6.0", 16000, "https://m.example.com/in")
    assert (options.metrics_interval, options.metrics_batch_size, options.auth_token) == (15.0, 7, TOKEN)
    task = options.for_task(task_id="task-x1y", task_name="n", instance_type=None, gpud_port=17000)
    assert (task.task_id, task.gpud_port, task.expected_gpus) == ("task-x1y", 17000, None)
    # A task's `gpus:` reaches its nodes' collectors: what each node should have.
    task = options.for_task(task_id="task-x1y", task_name="n", instance_type="custom", expected_gpus=6)
    assert "FLOW_EXPECTED_GPUS='6'" in units.metrics_env(task).splitlines()
    for bad in (-1, 1025, True, "6"):
        with pytest.raises(ConfigError, match=r"--expected-gpus=.* allowed: an integer 0-1024"):
            replace(task, expected_gpus=bad)
