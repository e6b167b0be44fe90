"""GpudClient against real servers on 127.0.0.1: a TLS stub of GPUd and the failure classes.

Every failure ends in a Snapshot whose `gpud` status names its class; nothing is raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import pytest

from flow.errors import GPUdError, GPUdStatusError, GPUdTimeout
from flow.health.gpud import GpudClient, MachineInfoCache, local_boot_id, read_gpud
from flow.health.snapshot import Snapshot
from gpud.servers import GpudStub, RawServer, Route, h100_routes, load

Stub = Callable[[Mapping[str, Route]], GpudStub]
SLACK_S = 3.0  # generous: these bound hang protection, they do not measure speed


def read(url: str, **kwargs: float) -> Snapshot:
    return asyncio.run(read_gpud(url, task_id="task-1", node="node-1", **kwargs))


def machine_info(boot_id: str = "boot-1") -> dict[str, object]:
    info = load("machine_info_from_test.json")
    info.update(bootID=boot_id, hostname="gpu-node-1", gpudVersion="v0.5.1")
    info["gpuInfo"]["gpus"] = [
        {"uuid": "GPU-3f9c1a52-8e47-4b0d-a6d2-5c71e09b4f18", "busID": "00000000:18:00.0", "minorID": "0"},
        {"uuid": "GPU-b84e07d3-19ca-4f65-9e2b-0d6a3c58e7a1", "busID": "00000000:2A:00.0", "minorID": "1"},
    ]
    return info


def _without_temperature_blobs() -> Route:
    """States whose temperature component is missing: the client must ask /v1/metrics."""
    return Route([c for c in load("v1_states_h100_constructed.json")
                  if c["component"] != "accelerator-nvidia-temperature"])


def test_reads_a_healthy_gpud_over_tls(gpud_stub: Stub) -> None:
    stub = gpud_stub(h100_routes(machine_info=machine_info(), metrics=load("v1_metrics_constructed.json")))
    snap = read(stub.url)
    assert (snap.task_id, snap.node, snap.verdict) == ("task-1", "node-1", None)
    assert snap.gpud.reachable and snap.gpud.state == "ok" and snap.gpud.error is None
    assert (snap.gpud.version, snap.gpud.hostname, snap.gpud.boot_id) == ("v0.5.1", "gpu-node-1", "boot-1")
    assert snap.gpud.latency_ms is not None and snap.gpud.latency_ms >= 0
    assert [g.temp_c for g in snap.gpus] == [61, 34]
    assert snap.read_errors == ()
    # The states' blobs held every reading: /v1/metrics (most of a read's CPU) was not asked.
    assert sorted(stub.paths()) == ["/healthz", "/machine-info", "/v1/events", "/v1/states"]


def test_metrics_fill_what_the_states_left_out(gpud_stub: Stub) -> None:
    info = machine_info()
    now_ms = int(time.time() * 1000)
    metrics = [{"component": "accelerator-nvidia-temperature", "metrics": [
        {"unix_seconds": now_ms, "name": "accelerator_nvidia_temperature_current_celsius",
         "labels": {"uuid": gpu["uuid"]}, "value": 55 + i}
        for i, gpu in enumerate(info["gpuInfo"]["gpus"])]}]
    routes = h100_routes(machine_info=info, metrics=metrics)
    states = [c for c in load("v1_states_h100_constructed.json")
              if c["component"] != "accelerator-nvidia-temperature"]
    routes["/v1/states"] = Route(states)
    stub = gpud_stub(routes)
    snap = read(stub.url)
    assert "/v1/metrics" in stub.paths()
    assert [g.temp_c for g in snap.gpus] == [55, 56]
    assert snap.read_errors == ()


def test_asks_for_events_in_unix_seconds_metrics_by_duration_and_gzip(gpud_stub: Stub) -> None:
    routes = h100_routes()
    routes["/v1/states"] = _without_temperature_blobs()
    stub = gpud_stub(routes)
    before = int(time.time())
    asyncio.run(read_gpud(stub.url, task_id="t"))
    seen = {s.path: s for s in stub.seen}
    start = seen["/v1/events"].query["startTime"][0]
    assert start.isdigit() and before - 3600 - 5 <= int(start) <= before - 3600 + 5  # the last hour
    assert seen["/v1/metrics"].query["since"] == ["120s"]
    assert all("gzip" in s.headers.get("Accept-Encoding", "") for s in stub.seen)


def test_requests_of_one_node_share_one_connection(gpud_stub: Stub) -> None:
    # Through an SSH tunnel a new connection costs a channel and a TLS handshake; one
    # keep-alive connection serves all five requests, one after another.
    routes = {path: Route(route.body, delay_s=0.05)
              for path, route in h100_routes(machine_info=machine_info()).items()}
    stub = gpud_stub(routes)
    snap = read(stub.url)
    assert snap.gpud.reachable
    assert stub.max_in_flight == 1
    assert sorted(stub.paths()) == ["/healthz", "/machine-info", "/v1/events", "/v1/states"]


def test_v04_gpud_without_machine_info_is_read(gpud_stub: Stub) -> None:
    stub = gpud_stub(h100_routes())  # /machine-info answers GPUd's 404 body
    snap = read(stub.url)
    assert snap.gpud.reachable and snap.read_errors == ()
    assert snap.gpud.version is None and len(snap.gpus) == 2


def test_connection_refused_is_not_listening(refused_url: str) -> None:
    snap = read(refused_url)
    assert (snap.gpud.reachable, snap.gpud.state) == (False, "not_listening")
    assert snap.gpud.error and "nothing is listening" in snap.gpud.error
    assert snap.gpus == () and snap.verdict is None


def test_a_server_that_is_not_tls_is_a_tls_error(plain_tcp_server: RawServer) -> None:
    snap = read(plain_tcp_server.url)
    assert (snap.gpud.reachable, snap.gpud.state) == (False, "tls_error")
    assert snap.gpud.error and "TLS handshake" in snap.gpud.error


def test_a_server_that_never_answers_times_out_within_the_deadline(silent_server: RawServer) -> None:
    started = time.monotonic()
    snap = read(silent_server.url, timeout_s=5.0, deadline_s=0.5)
    assert time.monotonic() - started < 0.5 + SLACK_S
    assert (snap.gpud.reachable, snap.gpud.state) == (False, "timeout")
    assert snap.gpud.error and "deadline" in snap.gpud.error


def test_per_request_timeout_is_a_timeout(gpud_stub: Stub) -> None:
    routes = h100_routes()
    routes["/v1/states"] = Route(routes["/v1/states"].body, delay_s=30)
    stub = gpud_stub(routes)
    snap = read(stub.url, timeout_s=0.3, deadline_s=10.0)
    assert (snap.gpud.reachable, snap.gpud.state) == (False, "timeout")
    assert snap.gpud.error and "/healthz answered" in snap.gpud.error  # GPUd is up, its states hang


def test_a_body_that_is_not_json_is_a_bad_response(gpud_stub: Stub) -> None:
    garbage = Route(b"<html><body>502 Bad Gateway</body></html>")
    stub = gpud_stub({path: garbage for path in h100_routes()})
    snap = read(stub.url)
    assert (snap.gpud.reachable, snap.gpud.state) == (False, "bad_response")
    assert snap.gpud.error and "not JSON" in snap.gpud.error and "Bad Gateway" in snap.gpud.error


def test_json_that_is_not_gpuds_is_a_bad_response(gpud_stub: Stub) -> None:
    routes = h100_routes()
    routes["/v1/states"] = Route({"status": "ok", "backend": "nginx"})
    snap = read(gpud_stub(routes).url)
    assert (snap.gpud.reachable, snap.gpud.state) == (False, "bad_response")
    assert snap.gpud.error and "not the array of components" in snap.gpud.error


def test_gpud_json_error_body_is_an_error_response(gpud_stub: Stub) -> None:
    routes = h100_routes()
    routes["/v1/states"] = Route({"code": 404, "message": "component not found"})  # with HTTP 200
    snap = read(gpud_stub(routes).url)
    assert (snap.gpud.reachable, snap.gpud.state) == (False, "error_response")
    assert snap.gpud.error and "component not found" in snap.gpud.error


def test_non_2xx_is_an_error_response(gpud_stub: Stub) -> None:
    routes = h100_routes()
    routes["/v1/states"] = Route(b"internal failure", status=500)
    snap = read(gpud_stub(routes).url)
    assert (snap.gpud.reachable, snap.gpud.state) == (False, "error_response")
    assert snap.gpud.error and "HTTP 500" in snap.gpud.error and "internal failure" in snap.gpud.error


def test_failed_secondary_endpoints_cost_only_their_part(gpud_stub: Stub) -> None:
    routes = h100_routes(machine_info=machine_info())
    routes["/v1/states"] = _without_temperature_blobs()
    routes["/v1/metrics"] = Route(b"not json")
    routes["/v1/events"] = Route([], delay_s=30)
    routes["/machine-info"] = Route({"code": 500, "message": "boom"}, status=500)
    snap = read(gpud_stub(routes).url, timeout_s=5.0, deadline_s=1.0)
    assert snap.gpud.reachable and len(snap.gpus) == 2
    errors = {e.component: e.message for e in snap.read_errors}
    assert set(errors) == {"machine-info", "events", "metrics"}
    assert "HTTP 500" in errors["machine-info"] and "deadline" in errors["events"]
    assert "not JSON" in errors["metrics"]


def test_machine_info_is_cached_per_boot_id(gpud_stub: Stub) -> None:
    stub = gpud_stub(h100_routes(machine_info=machine_info("boot-1")))

    async def scenario() -> list[Snapshot]:
        async with GpudClient(stub.url) as client:
            first = await client.read(task_id="t")  # no boot id known: fetched
            again = await client.read(task_id="t", boot_id="boot-1")  # same boot: from the cache
            rebooted = await client.read(task_id="t", boot_id="boot-2")  # another boot: fetched again
            return [first, again, rebooted]

    snaps = asyncio.run(scenario())
    assert stub.paths().count("/machine-info") == 2
    assert [s.gpud.boot_id for s in snaps] == ["boot-1", "boot-1", "boot-1"]


def test_machine_info_cache_keys_on_url_and_boot_and_ignores_junk() -> None:
    cache = MachineInfoCache()
    cache.put("https://a", {"bootID": "b1", "hostname": "x"})
    cache.put("https://a", {"hostname": "no boot id"})
    cache.put("https://a", ["not", "an", "object"])
    assert cache.get("https://a", "b1") == {"bootID": "b1", "hostname": "x"}
    assert cache.get("https://b", "b1") is None and cache.get("https://a", "b2") is None
    expired = MachineInfoCache(ttl_s=0.0)
    expired.put("https://a", {"bootID": "b1"})
    assert expired.get("https://a", "b1") is None


def test_local_boot_id(tmp_path: Path) -> None:
    path = tmp_path / "boot_id"
    path.write_text("5e0c-boot\n")
    assert local_boot_id(path) == "5e0c-boot"
    assert local_boot_id(tmp_path / "missing") is None


@pytest.mark.parametrize("kwargs", [{"timeout_s": 0}, {"deadline_s": -1}, {"timeout_s": float("inf")},
                                    {"events_window_s": True}])
def test_bad_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GpudClient("https://127.0.0.1:15132", **kwargs)


def test_bad_url_is_refused() -> None:
    with pytest.raises(ValueError, match="base_url"):
        GpudClient("127.0.0.1:15132")


# --- get_json: the exception edge ---------------------------------------------------------------

def get(url: str, path: str, **kwargs: float) -> object:
    async def run() -> object:
        async with GpudClient(url, **kwargs) as client:
            return await client.get_json(path)

    return asyncio.run(run())


def test_get_json_maps_failures_to_the_gpud_error_tree(gpud_stub: Stub, refused_url: str,
                                                       plain_tcp_server: RawServer) -> None:
    stub = gpud_stub({"/healthz": Route(load("healthz.json")), "/slow": Route({}, delay_s=30),
                      "/bad": Route(b"\x00\xff"), "/err": Route({"code": 503, "message": "busy"})})
    assert get(stub.url, "/healthz") == {"status": "ok", "version": "v1"}
    with pytest.raises(GPUdStatusError) as missing:
        get(stub.url, "/nope")
    assert (missing.value.status_code, missing.value.kind) == (404, "error_response")
    with pytest.raises(GPUdStatusError) as busy:
        get(stub.url, "/err")
    assert busy.value.status_code == 503 and "busy" in str(busy.value)
    with pytest.raises(GPUdTimeout) as slow:
        get(stub.url, "/slow", timeout_s=0.2)
    assert slow.value.kind == "timeout" and slow.value.url == f"{stub.url}/slow"
    for url, path, kind in ((stub.url, "/bad", "bad_response"), (refused_url, "/healthz", "not_listening"),
                            (plain_tcp_server.url, "/healthz", "tls_error")):
        with pytest.raises(GPUdError) as failed:
            get(url, path)
        assert failed.value.kind == kind


def test_an_injected_transport_replaces_the_network() -> None:
    bodies = {"/v1/states": load("v1_states_h100_constructed.json"), "/healthz": load("healthz.json")}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path in bodies:
            return httpx.Response(200, json=bodies[request.url.path])
        return httpx.Response(404, json={"code": 404, "message": "not found"})

    snap = asyncio.run(read_gpud("https://node-7:15132", task_id="t", transport=httpx.MockTransport(answer)))
    assert snap.gpud.reachable and len(snap.gpus) == 2
    assert {e.component for e in snap.read_errors} == {"events"}  # metrics: not needed, not asked


def test_a_cancelled_read_leaves_no_request_running(gpud_stub: Stub) -> None:
    routes = {path: Route(route.body, delay_s=30) for path, route in h100_routes().items()}
    stub = gpud_stub(routes)

    async def scenario() -> tuple[int, int]:
        async with GpudClient(stub.url, timeout_s=60, deadline_s=60) as client:
            read_task = asyncio.ensure_future(client.read(task_id="t"))
            while stub.max_in_flight < 1:  # the first request is out, the others queued
                await asyncio.sleep(0.01)
            read_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read_task
            left = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
            # Each was told to stop: they end now, not when the server answers in 30 s.
            _, still_running = await asyncio.wait(left, timeout=5.0) if left else (set(), set())
            return len(still_running), sum(not t.cancelled() for t in left)

    assert asyncio.run(scenario()) == (0, 0)


def test_a_kept_client_asks_healthz_only_until_gpud_answers(gpud_stub: Stub) -> None:
    # The collector keeps one client: /healthz tells "up but stuck" from "down" when it matters,
    # and is not worth a request every cycle while GPUd answers.
    stub = gpud_stub(h100_routes(machine_info=machine_info()))

    async def scenario() -> list[Snapshot]:
        async with GpudClient(stub.url) as client:
            return [await client.read(task_id="t", boot_id="boot-1") for _ in range(3)]

    snaps = asyncio.run(scenario())
    assert all(s.gpud.reachable for s in snaps)
    assert stub.paths().count("/healthz") == 1 and stub.paths().count("/v1/states") == 3
