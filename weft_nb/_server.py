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

Discovery: while it serves, the endpoint's URL and bearer token are recorded in
``<journal>.endpoint.json`` beside the journal (mode 0600: readable by this user only), so the
``weft-nb`` command line can reach the kernel that holds the journal. The file is removed when the
server stops (and at interpreter exit); one left by a killed process is ignored, because its PID no
longer holds the journal.
"""

from __future__ import annotations

import atexit
import contextlib
import hmac
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from ._journal_paths import resolve_journal
from .errors import (
    AsyncTokenNotFoundError,
    PayloadError,
    RunFinishedError,
    RunNotFoundError,
    WeftError,
)

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("weft_nb.server")
DEFAULT_MAX_BODY = 1024 * 1024
_RUN = re.compile(r"^/api/v1/runs/(?P<run>[^/]+)$")
_SIGNAL = re.compile(r"^/api/v1/runs/(?P<run>[^/]+)/signals/(?P<name>[^/]+)$")


class _Reject(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Server:
    """A running endpoint: ``port`` (the real one when 0 was asked) and ``stop()``."""

    def __init__(self, engine: Engine, host: str, port: int, auth_token: str | None,
                 max_body: int) -> None:  # fmt: skip
        handler = _handler(engine, auth_token, max_body)
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"weft-server-{self.port}", daemon=True
        )
        self._thread.start()
        self.endpoint_file = endpoint_file(engine.journal.path)
        # A server on every interface is reached on loopback from this machine.
        local = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self._local_url = f"http://{local}:{self.port}"
        self._recorded = _record_endpoint(self.endpoint_file, self._local_url, auth_token)
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
        recorded = read_endpoint(self.endpoint_file)
        if (
            recorded
            and recorded.get("pid") == os.getpid()
            and recorded.get("url") == self._local_url
        ):
            with contextlib.suppress(OSError):
                os.unlink(self.endpoint_file)


def endpoint_file(journal_path: str) -> str:
    """Where a serving engine records its endpoint for the journal at ``journal_path``."""
    return resolve_journal(journal_path) + ".endpoint.json"  # one file for every name of it


def read_endpoint(path: str) -> dict[str, Any] | None:
    """The recorded endpoint (``url``, ``token``, ``pid``, ``host``, ``since``), or None."""
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) and isinstance(loaded.get("url"), str) else None


def _record_endpoint(path: str, url: str, auth_token: str | None) -> bool:
    """Write the discovery file (mode 0600, atomically); False, with a warning, if it cannot."""
    info = {
        "url": url,
        "token": auth_token,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.time(),
    }
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a leftover tmp file may have had another mode
            os.write(fd, json.dumps(info).encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        log.warning("weft_nb endpoint could not be recorded in %s (%s); weft-nb cannot find it",
                    path, exc)  # fmt: skip
        return False
    return True


def serve(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 7233,
    *,
    auth_token: str | None = None,
    allow_unauthenticated: bool = False,
    max_body: int = DEFAULT_MAX_BODY,
) -> Server:
    """Start the endpoint; see :meth:`weft_nb.Engine.serve`."""
    if not auth_token and not allow_unauthenticated:
        raise ValueError(
            "serve() needs auth_token=... (a secret the callers send as 'Authorization: Bearer "
            "<token>'), or allow_unauthenticated=True to run without one"
        )
    if not auth_token:
        log.warning("weft_nb REST endpoint on %s:%s accepts requests without a token", host, port)
    return Server(engine, host, port, auth_token or None, max_body)


def _handler(engine: Engine, auth_token: str | None, max_body: int) -> type[BaseHTTPRequestHandler]:
    expected = None if auth_token is None else f"Bearer {auth_token}".encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "weft_nb"

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
                self._send(reject.status, {"error": str(reject)})
            except Exception as exc:
                log.exception("weft_nb endpoint failed on %s", self.path)
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}"})

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
            try:
                body = json.loads(raw or b"{}")
            except (ValueError, UnicodeDecodeError):
                raise _Reject(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
            if not isinstance(body, dict):
                raise _Reject(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return body

        def _get(self, path: str) -> Any:
            if path == "/health":
                return {"status": "ok"}
            if path == "/api/v1/runs":
                return [_run_json(r) for r in engine.runs()]
            match = _RUN.match(path)
            if match:
                run_id = urllib.parse.unquote(match["run"])
                return _call(lambda: engine.snapshot(run_id).text())
            raise _Reject(HTTPStatus.NOT_FOUND, f"no route {path}")

        def _post(self, path: str) -> Any:
            if path in ("/api/v1/activities/complete", "/api/v1/activities/fail"):
                body = self._body()
                token = body.get("token")
                if not isinstance(token, str) or not token:
                    raise _Reject(HTTPStatus.BAD_REQUEST, "'token' (a string) is required")
                if path.endswith("complete"):
                    _call(lambda: engine.complete_async_activity(token, body.get("result")))
                else:
                    error = body.get("error")
                    if not isinstance(error, str) or not error:
                        raise _Reject(HTTPStatus.BAD_REQUEST, "'error' (a string) is required")
                    _call(lambda: engine.fail_async_activity(token, error))
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
                delivered = _call(lambda: engine.signal(run_id, name, payload, signal_id=signal_id))
                return {"ok": True, "delivered": delivered}
            raise _Reject(HTTPStatus.NOT_FOUND, f"no route {path}")

        def _send(self, status: HTTPStatus, body: Any) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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


def _run_json(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "workflow": run.workflow,
        "status": run.status,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "active": run.active,
    }
