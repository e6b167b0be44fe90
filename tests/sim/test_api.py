"""The GPUd API surface of a simulated node: endpoints, query parameters, errors, encodings."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import time

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flow.health.sim import SimNode
from sim.sim_helpers import get_json


@pytest.fixture(scope="module")
def node(by_scenario: dict[str, SimNode]) -> SimNode:
    return by_scenario["healthy"]


def test_healthz(node: SimNode, client: httpx.Client) -> None:
    assert get_json(client, node, "/healthz") == {"status": "ok", "version": "v1"}


def test_components_lists_every_registered_component_sorted(node: SimNode, client: httpx.Client) -> None:
    comps = get_json(client, node, "/v1/components")
    assert comps == sorted(comps)
    assert {"accelerator-nvidia-error-xid", "accelerator-nvidia-temperature", "cpu", "docker"} <= set(comps)
    states = get_json(client, node, "/v1/states")
    assert {e["component"] for e in states} < set(comps)


def test_states_filtered_by_components(node: SimNode, client: httpx.Client) -> None:
    states = get_json(client, node, "/v1/states", components="cpu,accelerator-nvidia-power")
    assert [e["component"] for e in states] == ["accelerator-nvidia-power", "cpu"]
    (st,) = states[1]["states"]
    assert list(st) == ["time", "component", "name", "health", "reason", "extra_info"]
    assert st["time"].endswith("Z") and len(st["time"]) == 20


@pytest.mark.parametrize("path", ["/v1/states", "/v1/events", "/v1/metrics", "/v1/info"])
def test_unknown_component_is_a_404_json_error(path: str, node: SimNode, client: httpx.Client) -> None:
    r = client.get(node.url + path, params={"components": "cpu,no-such-thing"})
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == 404
    assert "no-such-thing" in body["message"]


def test_bad_since_and_start_time_are_400(node: SimNode, client: httpx.Client) -> None:
    r = client.get(node.url + "/v1/metrics", params={"since": "30"})
    assert r.status_code == 400 and r.json()["code"] == 400 and "duration" in r.json()["message"]
    r = client.get(node.url + "/v1/events", params={"startTime": "yesterday"})
    assert r.status_code == 400 and "time" in r.json()["message"]


def test_unknown_path_is_404(node: SimNode, client: httpx.Client) -> None:
    assert client.get(node.url + "/v1/gpu").status_code == 404


def test_metrics_since_filters_history_and_uses_milliseconds(node: SimNode, client: httpx.Client) -> None:
    now_ms = time.time() * 1000

    def stamps(since: str) -> list[int]:
        metrics = get_json(client, node, "/v1/metrics", components="accelerator-nvidia-temperature",
                           since=since)
        return sorted({m["unix_seconds"] for e in metrics for m in e["metrics"]})

    ten, hour, default = stamps("10m"), stamps("1h"), stamps("")
    assert 9 <= len(ten) <= 11 and 59 <= len(hour) <= 61 and 29 <= len(default) <= 31
    for ts in hour:
        assert now_ms - 3600_000 - 1000 <= ts <= now_ms + 1000  # milliseconds, inside the window
        assert ts % 60_000 == hour[0] % 60_000  # sampled once a minute
    assert set(ten) <= set(hour)
    assert len(stamps("24h")) <= 181  # GPUd keeps 3 h


def test_metric_shape(node: SimNode, client: httpx.Client) -> None:
    metrics = get_json(client, node, "/v1/metrics", since="2m")
    power = "accelerator_nvidia_power_current_usage_milli_watts"
    m = next(m for e in metrics for m in e["metrics"] if m["name"] == power)
    assert list(m) == ["unix_seconds", "name", "labels", "value"]
    assert m["labels"]["uuid"] in node.gpu_uuids and isinstance(m["value"], int)
    host = next(m for e in metrics for m in e["metrics"] if m["name"] == "cpu_load_average")
    assert host["labels"]["load_duration"] in {"1m0s", "5m0s", "15m0s"}


def test_values_move_over_time_but_stay_deterministic(node: SimNode) -> None:
    from flow.health.sim.physics import sample

    t = 1_800_000_000
    a = [sample(node.profile, t + 60 * k).gpus[0].util_pct for k in range(30)]
    b = [sample(node.profile, t + 60 * k).gpus[0].util_pct for k in range(30)]
    assert a == b and len(set(a)) > 3


def test_events_envelope(node: SimNode, client: httpx.Client) -> None:
    start = int(time.time()) - 600
    events = get_json(client, node, "/v1/events", startTime=start, endTime=start + 60)
    assert events and all(set(e) == {"component", "startTime", "endTime", "events"} for e in events)
    assert events[0]["startTime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    assert events[0]["endTime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 60))


def test_info_combines_states_events_metrics(by_scenario: dict[str, SimNode], client: httpx.Client) -> None:
    node = by_scenario["xid-fatal"]
    (info,) = get_json(client, node, "/v1/info", components="accelerator-nvidia-error-xid",
                       startTime=int(time.time()) - 3600, since="5m")
    assert info["component"] == "accelerator-nvidia-error-xid"
    assert info["info"]["states"][0]["health"] == "Unhealthy"
    assert info["info"]["events"][0]["type"] == "Fatal"
    assert info["info"]["metrics"][0]["name"] == "accelerator_nvidia_xid_errors_total"


def test_trigger_check_answers_like_states(node: SimNode, client: httpx.Client) -> None:
    states = get_json(client, node, "/v1/components/trigger-check", componentName="cpu")
    assert [e["component"] for e in states] == ["cpu"]


def test_machine_info(node: SimNode, client: httpx.Client) -> None:
    info = get_json(client, node, "/machine-info")
    assert info["gpudVersion"] == "v0.5.1"
    gpu = info["gpuInfo"]
    assert gpu["product"] == "NVIDIA H100 80GB HBM3" and gpu["memory"] == "80GB"
    assert [g["uuid"] for g in gpu["gpus"]] == node.gpu_uuids
    assert info["memoryInfo"]["totalBytes"] > 0 and info["hostname"]


def test_gzip_on_v1_when_asked(node: SimNode) -> None:
    with httpx.Client(verify=False, timeout=10) as c:
        raw = c.get(node.url + "/v1/states", headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip"
        assert isinstance(raw.json(), list)  # httpx decoded it
        plain = c.get(node.url + "/v1/states", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
    with httpx.Client(verify=False, timeout=10) as c, c.stream(
        "GET", node.url + "/v1/states", headers={"Accept-Encoding": "gzip"}
    ) as r:
        body = b"".join(r.iter_raw())
    assert orjson.loads(gzip.decompress(body)) == plain.json()


def test_json_indent_header(node: SimNode, client: httpx.Client) -> None:
    r = client.get(node.url + "/v1/components", headers={"json-indent": "true"})
    assert r.text.startswith('[\n    "')


def test_prometheus_metrics_parse_and_carry_gpud_component(node: SimNode, client: httpx.Client) -> None:
    r = client.get(node.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert "accelerator_nvidia_temperature_current_celsius" in families
    for fam in families.values():
        for s in fam.samples:
            assert s.labels["gpud_component"]
    temps = families["accelerator_nvidia_temperature_current_celsius"].samples
    assert {s.labels["uuid"] for s in temps} == set(node.gpu_uuids)


def test_tls_is_self_signed_ecdsa(node: SimNode) -> None:
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ssl.get_server_certificate((node.host, node.port))
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.issuer == cert.subject
    with pytest.raises(httpx.ConnectError):  # a verifying client must refuse it
        httpx.get(node.url + "/healthz", timeout=5)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_into_json_tool(node: SimNode) -> None:
    curl = subprocess.run(["curl", "-sk", f"https://127.0.0.1:{node.port}/v1/states"],
                          capture_output=True, check=True, timeout=30)
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=curl.stdout, capture_output=True,
                          check=True, timeout=30)
    assert json.loads(tool.stdout)[0]["component"].startswith("accelerator-nvidia-")
