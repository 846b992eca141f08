"""The endpoint under clients that misbehave or are refused: every client gets its status.

Real sockets on loopback, real ``urllib`` and ``http.client`` clients. No test here depends on
timing: a client that must be let go is waited for with a generous deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from weft_nb.endpoint.server import EndpointSettings, Server, serve
from weft_nb.testing import TestEngine

SECRET = "s3cret-token"
BIG = b'{"token": "' + b"x" * (4 * 1024 * 1024) + b'"}'  # 4 MB: over the 1 MB default limit


def urllib_status(server: Server, body: bytes, token: str) -> int:
    request = urllib.request.Request(
        server.url + "/api/v1/activities/complete", data=body, method="POST"
    )
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def http_client_status(server: Server, body: bytes, token: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(
            "POST",
            "/api/v1/activities/complete",
            body=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture
def server(engine: TestEngine) -> Server:
    return engine.serve(port=0, auth_token=SECRET)


@pytest.mark.parametrize("client", [urllib_status, http_client_status])
@pytest.mark.parametrize(("token", "status"), [(SECRET, 413), ("wrong", 401)])
def test_a_refused_big_body_still_gets_its_status(
    server: Server, client: object, token: str, status: int
) -> None:
    # Before: the server answered without reading the body and closed; the client, still
    # writing, got a broken pipe (or a reset) instead of the status.
    assert callable(client)
    for _ in range(3):  # a reset is a race the client sometimes wins; three tries show it
        assert client(server, BIG, token) == status


def test_json_nested_too_deeply_is_a_400_not_a_500(server: Server) -> None:
    deep = b'{"token": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert urllib_status(server, deep, SECRET) == 400


def test_the_default_port_is_not_temporals(engine: TestEngine) -> None:
    server = engine.serve(auth_token=SECRET)
    assert server.port not in (0, 7233)
    assert urllib_status(server, b'{"token": "nope"}', SECRET) == 404


@contextlib.contextmanager
def serving(
    engine: TestEngine, *, request_timeout: float = 30.0, max_connections: int = 32
) -> Iterator[Server]:
    settings = EndpointSettings(
        auth_token=SECRET, request_timeout=request_timeout, max_connections=max_connections
    )
    server = serve(engine, settings)
    try:
        yield server
    finally:
        server.stop()


def read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(4096):  # the socket's own timeout bounds each wait
        received += chunk
    return received


def test_a_silent_connection_is_let_go(engine: TestEngine) -> None:
    with serving(engine, request_timeout=0.5) as server:
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        with stalled:
            stalled.sendall(b"POST /api/v1/activities/complete HTTP/1.1\r\n")  # nothing more
            # Before: the handler thread waited for the rest as long as the client stayed.
            assert b" 200 " not in read_until_closed(stalled)


def test_stalled_clients_cannot_take_every_thread(engine: TestEngine) -> None:
    with serving(engine, max_connections=3) as server:
        stalled = [
            socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(3)
        ]
        try:
            for connection in stalled:
                connection.sendall(b"GET /health HTTP/1.1\r\n")  # headers that never end
            # Once the server has accepted the three, the next client gets a quick 503 rather
            # than a thread of its own.
            deadline = time.monotonic() + 60
            status = 0
            while status != 503 and time.monotonic() < deadline:
                with socket.create_connection(("127.0.0.1", server.port), timeout=60) as extra:
                    extra.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                    status = int(read_until_closed(extra).split(b" ")[1])
            assert status == 503
        finally:
            for connection in stalled:
                connection.close()
        deadline = time.monotonic() + 60
        status = 0
        while status != 200 and time.monotonic() < deadline:  # slots return as clients leave
            with socket.create_connection(("127.0.0.1", server.port), timeout=60) as again:
                again.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                status = int(read_until_closed(again).split(b" ")[1])
        assert status == 200


def test_a_client_that_hangs_up_prints_no_traceback(
    server: Server, capfd: pytest.CaptureFixture[str]
) -> None:
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as rude:
            rude.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            rude.sendall(
                b"POST /api/v1/activities/complete HTTP/1.1\r\nContent-Length: 100000\r\n"
                b"Authorization: Bearer " + SECRET.encode() + b"\r\n\r\n{"
            )
        # closed with a reset mid-body: the server's read fails, then its answer does
    with urllib.request.urlopen(server.url + "/health", timeout=60) as response:
        assert response.status == 200
    server.stop()  # every handler thread has finished writing to stderr by now
    assert "Traceback" not in capfd.readouterr().err
