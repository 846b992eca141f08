"""The REST endpoint: ``engine.serve()`` runs a small HTTP server inside the kernel.

The kernel owns the journal, so outside systems (a webhook, a reviewer's script, another process)
complete activities and send signals through it instead of opening the file.

Why the standard library (``http.server.ThreadingHTTPServer``) rather than an ASGI framework: the
endpoint has six routes and small JSON bodies, and it runs inside a notebook kernel that already
has an event loop of its own. A thread with a blocking server cannot conflict with that loop,
needs no new dependency, and stops cleanly with the engine.

Security: it binds to loopback unless told otherwise. A bearer token is required (compared in
constant time) unless ``allow_unauthenticated=True`` is passed explicitly, which logs a warning.
Request bodies are capped. Bad input never produces a 5xx.

Sturdiness: every client gets its status. A refused request (401, 413, ...) still has its body
read and thrown away (up to `DRAIN_LIMIT`), since closing a socket with unread data makes
the kernel send a reset, and a client still writing (``urllib``, ``curl`` without ``Expect:
100-continue``) then sees a broken pipe instead of the answer. A connection that sends nothing
for ``request_timeout`` seconds is closed; at most ``max_connections`` are served at once (the
next get 503). Errors of the transport (a client hanging up) go to the ``weft_nb.server`` logger
at DEBUG, never as a traceback into the notebook.

Port: by default the operating system picks a free one (``port=0``), so two kernels never
collide; ``server.port`` and the discovery file say which. 7233, the port of earlier versions, is
Temporal's default.

Discovery: while it serves, the endpoint's URL and bearer token are recorded in a discovery file
the engine names (see `weft_nb.endpoint.discovery`).

The server talks to an `EndpointTarget` (the engine, in practice)
and imports nothing of the engine: the engine depends on the endpoint, never the reverse.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hmac
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from weft_nb.endpoint.discovery import forget_endpoint, record_endpoint
from weft_nb.endpoint.target import EndpointTarget, RunRow
from weft_nb.errors import (
    AsyncTokenNotFoundError,
    PayloadError,
    RunFinishedError,
    RunNotFoundError,
    WeftError,
)

log = logging.getLogger("weft_nb.server")
DEFAULT_MAX_BODY = 1024 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024
"""The most a refused request's body is read (and dropped) so its client can read the status."""
_DRAIN_CHUNK = 64 * 1024
_RUN = re.compile(r"^/api/v1/runs/(?P<run>[^/]+)$")
_SIGNAL = re.compile(r"^/api/v1/runs/(?P<run>[^/]+)/signals/(?P<name>[^/]+)$")


@dataclasses.dataclass(frozen=True)
class PlainText:
    """A route's answer sent as ``text/plain`` rather than JSON."""

    text: str


class _Reject(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True, kw_only=True)
class EndpointSettings:
    """Where the endpoint listens and what it accepts (the options of ``Engine.serve``)."""

    host: str = "127.0.0.1"
    """Interface to bind (loopback by default)."""
    port: int = 0
    """Port to bind; 0 (the default) lets the system pick a free one."""
    auth_token: str | None = None
    """The bearer token every request but ``/health`` must send."""
    allow_unauthenticated: bool = False
    """Serve without a token (logs a warning)."""
    max_body: int = DEFAULT_MAX_BODY
    """Largest request body accepted, in bytes."""
    discovery_file: str | None = None
    """Where to record the URL and token for the command line; None: nowhere."""
    request_timeout: float = 30.0
    """Seconds a connection may stay silent (mid-request) before it is closed."""
    max_connections: int = 32
    """Connections served at once; more are answered 503 and closed."""


class _BoundedServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most ``max_connections`` at once, and logs quietly.

    Over the bound, a connection gets a short 503 from the accepting thread instead of a thread
    of its own, so stalled clients cannot pin an unbounded number of threads.
    """

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limit: int
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(limit)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("weft_nb endpoint: connection from %s failed", client_address, exc_info=True)


_BUSY_BODY = b'{"error": "the endpoint is serving too many connections; retry shortly"}'
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_BUSY_BODY)).encode()
    + b"\r\n\r\n"
    + _BUSY_BODY
)


class Server:
    """A running endpoint: ``port`` (the real one when 0 was asked) and ``stop()``."""

    def __init__(self, target: EndpointTarget, settings: EndpointSettings) -> None:
        auth_token = settings.auth_token or None
        handler = _handler(target, auth_token, settings.max_body, settings.request_timeout)
        self._httpd = _BoundedServer(
            (settings.host, settings.port), handler, settings.max_connections
        )
        self.host = settings.host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"weft-server-{self.port}", daemon=True
        )
        self._thread.start()
        self.endpoint_file = settings.discovery_file
        # A server on every interface is reached on loopback from this machine.
        local = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        self._local_url = f"http://{local}:{self.port}"
        self._recorded = self.endpoint_file is not None and record_endpoint(
            self.endpoint_file, self._local_url, auth_token
        )
        if self._recorded:
            atexit.register(self._forget_endpoint)

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        if self._recorded:
            atexit.unregister(self._forget_endpoint)
            self._forget_endpoint()

    def _forget_endpoint(self) -> None:
        """Remove the discovery file, if it still describes this server."""
        self._recorded = False
        if self.endpoint_file is not None:
            forget_endpoint(self.endpoint_file, self._local_url)


def serve(target: EndpointTarget, settings: EndpointSettings) -> Server:
    """Start the endpoint for ``target``; see the engine's ``serve``.

    Args:
        target: What the routes call (the engine).
        settings: Where to listen, the token and the limits.

    Raises:
        ValueError: No ``auth_token`` and no ``allow_unauthenticated=True``.
    """
    if not settings.auth_token and not settings.allow_unauthenticated:
        raise ValueError(
            "serve() needs auth_token=... (a secret the callers send as 'Authorization: Bearer "
            "<token>'), or allow_unauthenticated=True to run without one"
        )
    if not settings.auth_token:
        log.warning(
            "weft_nb REST endpoint on %s:%s accepts requests without a token",
            settings.host,
            settings.port,
        )
    return Server(target, settings)


def _handler(
    target: EndpointTarget, auth_token: str | None, max_body: int, request_timeout: float
) -> type[BaseHTTPRequestHandler]:
    expected = None if auth_token is None else f"Bearer {auth_token}".encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "weft_nb"
        timeout = request_timeout  # the socket's timeout: a silent client is let go
        body_read = False

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            self._respond(self._get)

        def do_POST(self) -> None:
            self._respond(self._post)

        def do_PUT(self) -> None:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use GET or POST"})

        do_DELETE = do_PATCH = do_PUT

        def _respond(self, route: Callable[[str], Any]) -> None:
            try:
                path = self.path.split("?", 1)[0]
                if path != "/health":
                    self._authorise()
                self._send(HTTPStatus.OK, route(path))
            except _Reject as reject:
                self._drain()
                self._send(reject.status, {"error": str(reject)})
            except OSError:  # the client went away, or stalled past the timeout
                log.debug("weft_nb endpoint: %s %s broke off", self.command, self.path)
            except Exception as exc:
                log.exception("weft_nb endpoint failed on %s", self.path)
                self._drain()
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}"})

        def _drain(self) -> None:
            """Read and drop an unread body (up to DRAIN_LIMIT), so the client sees the status."""
            if self.body_read:
                return
            self.body_read = True
            try:
                left = min(int(self.headers.get("Content-Length") or 0), DRAIN_LIMIT)
                while left > 0:
                    chunk = self.rfile.read(min(left, _DRAIN_CHUNK))
                    if not chunk:
                        return
                    left -= len(chunk)
            except (ValueError, OSError):  # a bad length, or the client stopped sending
                return

        def _authorise(self) -> None:
            if expected is None:
                return
            given = (self.headers.get("Authorization") or "").encode()
            if not hmac.compare_digest(given, expected):
                raise _Reject(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")

        def _body(self) -> dict[str, Any]:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise _Reject(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
            if length < 0:
                raise _Reject(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            if length > max_body:
                raise _Reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {max_body} bytes")
            raw = self.rfile.read(length)
            self.body_read = True
            try:
                body = json.loads(raw or b"{}")
            except (ValueError, UnicodeDecodeError):
                raise _Reject(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
            except RecursionError:
                raise _Reject(HTTPStatus.BAD_REQUEST, "the body's JSON nests too deeply") from None
            if not isinstance(body, dict):
                raise _Reject(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return body

        def _get(self, path: str) -> Any:
            if path == "/health":
                return {"status": "ok"}
            if path == "/api/v1/runs":
                return [_run_json(r) for r in target.runs()]
            match = _RUN.match(path)
            if match:
                run_id = urllib.parse.unquote(match["run"])
                as_text = self._wants_text()
                state = _call(lambda: target.snapshot(run_id))
                return PlainText(state.text()) if as_text else state.to_json()
            raise _Reject(HTTPStatus.NOT_FOUND, f"no route {path}")

        def _wants_text(self) -> bool:
            """``?format=text``, or no ``format`` and an ``Accept`` naming text but not JSON."""
            query = urllib.parse.parse_qs(self.path.partition("?")[2])
            formats = query.get("format", [])
            if formats:
                if formats[-1] not in ("json", "text"):
                    raise _Reject(HTTPStatus.BAD_REQUEST, "'format' must be 'json' or 'text'")
                return formats[-1] == "text"
            accept = self.headers.get("Accept") or ""
            return "text/plain" in accept and "application/json" not in accept

        def _post(self, path: str) -> Any:
            if path in ("/api/v1/activities/complete", "/api/v1/activities/fail"):
                body = self._body()
                token = body.get("token")
                if not isinstance(token, str) or not token:
                    raise _Reject(HTTPStatus.BAD_REQUEST, "'token' (a string) is required")
                if path.endswith("complete"):
                    _call(lambda: target.complete_async_activity(token, body.get("result")))
                else:
                    error = body.get("error")
                    if not isinstance(error, str) or not error:
                        raise _Reject(HTTPStatus.BAD_REQUEST, "'error' (a string) is required")
                    _call(lambda: target.fail_async_activity(token, error))
                return {"ok": True}
            match = _SIGNAL.match(path)
            if match:
                body = self._body()
                signal_id = body.get("signal_id")
                if signal_id is not None and not isinstance(signal_id, str):
                    raise _Reject(HTTPStatus.BAD_REQUEST, "'signal_id' must be a string")
                run_id, name = (
                    urllib.parse.unquote(match["run"]),
                    urllib.parse.unquote(match["name"]),
                )
                payload = body.get("payload")
                delivered = _call(lambda: target.signal(run_id, name, payload, signal_id=signal_id))
                return {"ok": True, "delivered": delivered}
            raise _Reject(HTTPStatus.NOT_FOUND, f"no route {path}")

        def _send(self, status: HTTPStatus, body: Any) -> None:
            if isinstance(body, PlainText):
                data, kind = body.text.encode(), "text/plain; charset=utf-8"
            else:
                data, kind = json.dumps(body, default=str).encode(), "application/json"
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client hung up before reading its answer
                log.debug("weft_nb endpoint: the client of %s left before the answer", self.path)

    return Handler


def _call(action: Callable[[], Any]) -> Any:
    """Run an engine call, mapping its named errors to HTTP statuses."""
    try:
        return action()
    except (AsyncTokenNotFoundError, RunNotFoundError) as exc:
        raise _Reject(HTTPStatus.NOT_FOUND, str(exc)) from None
    except RunFinishedError as exc:
        raise _Reject(HTTPStatus.CONFLICT, str(exc)) from None
    except PayloadError as exc:
        raise _Reject(HTTPStatus.BAD_REQUEST, str(exc)) from None
    except WeftError as exc:
        raise _Reject(HTTPStatus.CONFLICT, str(exc)) from None


def _run_json(run: RunRow) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "workflow": run.workflow,
        "status": run.status,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "active": run.active,
    }
