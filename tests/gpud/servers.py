"""Real servers on 127.0.0.1 for the GPUd client tests (used through conftest.py fixtures).

`GpudStub` is a threaded HTTPS server with a self-signed certificate (as GPUd has) that answers
each path from a table: status, body, delay; it gzips when asked and logs every request.
The other servers are the failure classes: a plain-TCP server that is not TLS, and a listener
that accepts and then never says anything.
"""

from __future__ import annotations

import datetime
import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DATA = Path(__file__).resolve().parent.parent / "data" / "gpud"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


@dataclass
class Route:
    body: bytes | str | Any = b"{}"  # bytes/str sent as is; anything else as JSON
    status: int = 200
    delay_s: float = 0.0

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class GpudStub:
    """An HTTPS server answering GPUd's paths from `routes`; unknown paths get GPUd's 404 body."""

    routes: dict[str, Route]
    certfile: Path
    keyfile: Path
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    def start(self) -> GpudStub:
        stub = self
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certfile, self.keyfile)
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                with lock:
                    stub.seen.append(Seen(parts.path, parse_qs(parts.query), dict(self.headers)))
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    route = stub.routes.get(parts.path) or Route(
                        {"code": 404, "message": f"{parts.path} not found"}, status=404)
                    if route.delay_s:
                        stub.release.wait(route.delay_s)
                    payload = route.payload()
                    headers = {"Content-Type": "application/json"}
                    if "gzip" in self.headers.get("Accept-Encoding", ""):
                        payload = gzip.compress(payload)
                        headers["Content-Encoding"] = "gzip"
                    self.send_response(route.status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the client gave up (deadline tests)
                finally:
                    with lock:
                        stub.in_flight -= 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                # The TLS handshake runs here, in the request's own thread, so a client that
                # stalls in it cannot block the accept loop.
                try:
                    request = context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                super().finish_request(request, client_address)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


def h100_routes(*, machine_info: Any = None, events: Any = None, metrics: Any = None) -> dict[str, Route]:
    """A healthy v0.5+ GPUd from the reference samples."""
    routes = {
        "/healthz": Route(load("healthz.json")),
        "/v1/states": Route(load("v1_states_h100_constructed.json")),
        "/v1/events": Route(events if events is not None else []),
        "/v1/metrics": Route(metrics if metrics is not None else []),
    }
    if machine_info is not None:
        routes["/machine-info"] = Route(machine_info)
    return routes


class RawServer:
    """A TCP listener whose connections get `on_connect(conn)` in their own thread."""

    def __init__(self, on_connect: Callable[[socket.socket], None]) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._on_connect = on_connect
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._on_connect, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._conns:
            conn.close()
        self._sock.close()


def answer_plain_http(conn: socket.socket) -> None:
    try:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except OSError:
        pass


def say_nothing(conn: socket.socket) -> None:
    time.sleep(60)  # daemon thread; the socket is closed at teardown




def make_tls_files(folder: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA certificate for 127.0.0.1, like the one GPUd makes at each start."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpud-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return certfile, keyfile


