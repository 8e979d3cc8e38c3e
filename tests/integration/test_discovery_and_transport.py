"""Login by server name through .well-known over real TLS, and the transport against real sockets
that misbehave: a server that never answers, one that hangs up, one that rate-limits."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nimbus.api import discovery
from nimbus.api.errors import RequestTimeout, ServerUnreachable
from nimbus.client.transport import Transport
from nimbus.homeserver import Homeserver
from nimbus.homeserver.ca import CertificateAuthority
from tests.integration.cli import NewUser, env_with, nimbus

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def https_server(tmp_path: Path, routes: dict[str, object]) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on localhost with a certificate from a private CA; yields (port, ca.pem)."""
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    issued = ca.issue(tmp_path / "tls")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.certificate, issued.private_key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1], ca.certificate_path
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_login_by_server_name_through_well_known(
    homeserver: Homeserver, new_user: NewUser, tmp_path: Path
) -> None:
    user_id, password = new_user(homeserver, "wk")
    well_known = {"m.homeserver": {"base_url": homeserver.client_url}}
    with https_server(tmp_path, {"/.well-known/matrix/client": well_known}) as (port, ca_pem):
        result = nimbus(
            tmp_path / "p", "login", f"localhost:{port}", user_id, "--password-env", "PW",
            "--ca-file", str(ca_pem), "--json", env=env_with(PW=password),
        )  # fmt: skip
        assert result.code == 0, result.stderr
        assert result.objects[0]["homeserver"] == homeserver.client_url
        # Without trusting the private CA the TLS check fails and nothing is found.
        untrusted = nimbus(
            tmp_path / "q",
            "login",
            f"localhost:{port}",
            user_id,
            "--password-env",
            "PW",
            env=env_with(PW=password),
        )
        assert untrusted.code == 1 and "no Matrix homeserver found" in untrusted.stderr
    me = nimbus(tmp_path / "p", "whoami", "--json")
    assert me.code == 0 and me.objects[0]["user_id"] == user_id


@contextlib.contextmanager
def raw_server(behaviour: str) -> Iterator[int]:
    """A TCP server on loopback that accepts and then stays silent ("silent") or hangs up ("hangup")."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if behaviour == "hangup":
                conn.recv(65536)
                conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for conn in held:
            conn.close()


async def no_sleep(_delay: float) -> None:
    await asyncio.sleep(0)


def test_a_server_that_never_answers_times_out_clearly() -> None:
    async def go() -> None:
        with raw_server("silent") as port:
            async with Transport(f"http://127.0.0.1:{port}", timeout=0.5, max_retries=1, sleep=no_sleep) as t:
                started = time.monotonic()
                with pytest.raises(RequestTimeout) as info:
                    await t.send(discovery.versions())
                assert time.monotonic() - started < 10
                assert "/_matrix/client/versions" in str(info.value)

    asyncio.run(go())


def test_a_server_that_hangs_up_is_reported_unreachable() -> None:
    async def go() -> None:
        with raw_server("hangup") as port:
            async with Transport(f"http://127.0.0.1:{port}", timeout=5, max_retries=2, sleep=no_sleep) as t:
                with pytest.raises(ServerUnreachable):
                    await t.send(discovery.versions())

    asyncio.run(go())


def test_rate_limit_from_a_real_server_is_honoured(tmp_path: Path) -> None:
    hits: list[float] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(time.monotonic())
            if len(hits) == 1:
                data = json.dumps(
                    {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 300}
                )
                self.send_response(429)
            else:
                data = json.dumps({"versions": ["v1.12"]})
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data.encode())

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    async def go() -> None:
        async with Transport(f"http://127.0.0.1:{httpd.server_address[1]}") as t:
            versions = discovery.parse_versions(await t.send(discovery.versions()))
            assert "v1.12" in versions.versions

    try:
        asyncio.run(go())
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(hits) == 2 and hits[1] - hits[0] >= 0.29  # waited as the server asked
