"""The REST endpoint over real HTTP on loopback: every route, every error code, and a fuzz."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weft_nb
from weft_nb.endpoint.server import Server
from weft_nb.testing import TestEngine

SECRET = "s3cret-token"


def call(
    server: Server,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = SECRET,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(server.url + path, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class Parked:
    """A run parked on an async activity, and one waiting for a signal."""

    def __init__(self, engine: TestEngine) -> None:
        self.tokens: list[str] = []

        @weft_nb.activity
        def ask(_: object, activity: weft_nb.ActivityContext) -> None:
            self.tokens.append(activity.task_token)
            activity.complete_async()

        @weft_nb.workflow
        def review(ctx: weft_nb.WorkflowContext) -> object:
            return ctx.run(ask)

        @weft_nb.workflow
        def gate(ctx: weft_nb.WorkflowContext) -> object:
            return ctx.wait_for_signal("go")

        self.review = engine.start(review, run_id="review")
        self.gate = engine.start(gate, run_id="gate")
        end = threading.Event()
        for _ in range(3000):
            if self.tokens:
                break
            end.wait(0.01)
        assert self.tokens


@pytest.fixture
def served(engine: TestEngine) -> tuple[TestEngine, Server, Parked]:
    """A served engine (the engine fixture closes it, which stops the server)."""
    parked = Parked(engine)
    return engine, engine.serve(port=0, auth_token=SECRET), parked


def test_routes_complete_fail_signal_and_list(served: tuple[TestEngine, Server, Parked]) -> None:
    _, server, parked = served
    assert call(server, "GET", "/health", token=None) == (200, {"status": "ok"})
    status, runs = call(server, "GET", "/api/v1/runs")
    assert status == 200
    assert {r["run_id"]: r["status"] for r in runs} == {"review": "running", "gate": "running"}
    status, run = call(server, "GET", "/api/v1/runs/review")
    assert status == 200 and (run["workflow"], run["status"]) == ("review", "running")
    assert [(s["status"], s["token"]) for s in run["steps"]] == [("waiting", parked.tokens[0])]
    assert call(server, "POST", "/api/v1/runs/gate/signals/go", {"payload": 7}) == (
        200,
        {"ok": True, "delivered": True},
    )
    assert parked.gate.result(10) == 7
    token = parked.tokens[0]
    assert call(
        server, "POST", "/api/v1/activities/complete", {"token": token, "result": "ok"}
    ) == (
        200,
        {"ok": True},
    )
    assert parked.review.result(10) == "ok"
    # a replayed token: 404, and nothing changes
    status, body = call(server, "POST", "/api/v1/activities/complete", {"token": token})
    assert status == 404 and "single-use" in body["error"]
    # a signal to a finished run: 409
    status, body = call(server, "POST", "/api/v1/runs/gate/signals/go", {"payload": 1})
    assert status == 409 and "finished run" in body["error"]


def test_fail_route(served: tuple[TestEngine, Server, Parked]) -> None:
    _, server, parked = served
    assert call(
        server, "POST", "/api/v1/activities/fail", {"token": parked.tokens[0], "error": "rejected"}
    ) == (200, {"ok": True})
    with pytest.raises(weft_nb.errors.ActivityFailedError, match="rejected"):
        parked.review.result(10)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/api/v1/runs", {"token": None}, 401),
        ("GET", "/api/v1/runs", {"token": "wrong"}, 401),
        ("POST", "/api/v1/activities/complete", {"raw": b"{not json"}, 400),
        ("POST", "/api/v1/activities/complete", {"body": [1, 2]}, 400),
        ("POST", "/api/v1/activities/complete", {"body": {"result": 1}}, 400),
        ("POST", "/api/v1/activities/fail", {"body": {"token": "x"}}, 400),
        ("POST", "/api/v1/activities/complete", {"body": {"token": "nope"}}, 404),
        ("POST", "/api/v1/activities/complete", {"raw": b"x" * (1024 * 1024 + 1)}, 413),
        ("GET", "/api/v1/runs/nope", {}, 404),
        ("POST", "/api/v1/runs/nope/signals/go", {"body": {}}, 404),
        ("POST", "/api/v1/runs/gate/signals/go", {"body": {"signal_id": 5}}, 400),
        ("GET", "/elsewhere", {}, 404),
        ("PUT", "/api/v1/runs", {}, 405),
    ],
)
def test_error_codes(
    served: tuple[TestEngine, Server, Parked],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    _, server, parked = served
    code, body = call(server, method, path, **kwargs)
    assert code == status
    assert "error" in body
    assert not parked.review.done  # no rejected request consumed the token


def test_serve_requires_a_token_unless_told_otherwise(engine: TestEngine) -> None:
    with pytest.raises(ValueError, match="auth_token"):
        engine.serve(port=0)
    open_server = engine.serve(port=0, allow_unauthenticated=True)
    assert call(open_server, "GET", "/api/v1/runs", token=None)[0] == 200
    engine.close()  # the server stops with the engine
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(open_server.url + "/health", timeout=5)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(
        [
            "/health",
            "/api/v1/runs",
            "/api/v1/runs/review",
            "/api/v1/runs/gate/signals/go",
            "/api/v1/activities/complete",
            "/api/v1/activities/fail",
            "/api/v1/runs/%00",
            "/x",
        ]
    ),
    raw=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda v: json.dumps(v).encode(),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                lambda children: (
                    st.lists(children, max_size=4)
                    | st.dictionaries(
                        st.sampled_from(["token", "result", "error", "payload", "signal_id"]),
                        children,
                        max_size=4,
                    )
                ),
                max_leaves=8,
            ),
        ),
    ),
    token=st.sampled_from([SECRET, "wrong", None]),
)
def test_fuzz_no_5xx_and_no_token_consumed(
    served: tuple[TestEngine, Server, Parked],
    method: str,
    path: str,
    raw: bytes,
    token: str | None,
) -> None:
    _, server, parked = served
    code, _ = call(server, method, path, raw=raw if method == "POST" else None, token=token)
    assert code < 500
    assert not parked.review.done  # random requests never hold the real token


COMPLETE, FAIL = "/api/v1/activities/complete", "/api/v1/activities/fail"


@st.composite
def malformed_with_the_real_token(draw: st.DrawFn, token: str) -> dict[str, Any]:
    """A request that carries the real token but must be refused (so must not consume it)."""
    valid = json.dumps({"token": token, "result": "ok"}).encode()
    kind = draw(
        st.sampled_from(
            [
                "auth",
                "method",
                "truncated",
                "shape",
                "near_token",
                "fail_without_error",
                "content_length",
            ]
        )
    )
    request: dict[str, Any] = {"method": "POST", "path": COMPLETE, "raw": valid}
    if kind == "auth":
        request["token"] = draw(st.sampled_from([None, "wrong", SECRET + " ", SECRET.upper()]))
        request["path"] = draw(st.sampled_from([COMPLETE, FAIL]))
    elif kind == "method":
        request["method"] = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH"]))
        if request["method"] == "GET":
            request["raw"] = None
    elif kind == "truncated":
        request["raw"] = valid[: draw(st.integers(1, len(valid) - 1))]
    elif kind == "shape":
        body = draw(
            st.sampled_from(
                [
                    [token],
                    token,
                    {"token": [token]},
                    {"token": {"token": token}},
                    {"Token": token, "result": 1},
                    {"tokens": token},
                ]
            )
        )
        request["raw"] = json.dumps(body).encode()
        if draw(st.booleans()):
            request["raw"] = draw(st.binary(max_size=8)) + request["raw"]
    elif kind == "near_token":
        near = draw(
            st.sampled_from(
                [
                    token + " ",
                    " " + token,
                    token.upper(),
                    token[:-1],
                    token + "0",
                    token.replace(":", "/"),
                ]
            )
        )
        request["raw"] = json.dumps({"token": near, "result": "ok"}).encode()
        request["path"] = draw(st.sampled_from([COMPLETE, FAIL, COMPLETE + "/", "/api/v1/x"]))
    elif kind == "fail_without_error":
        request["path"] = FAIL
        error = draw(st.sampled_from([None, "", 5, ["no"], {"e": "x"}]))
        body = {"token": token} if error is None else {"token": token, "error": error}
        request["raw"] = json.dumps(body).encode()
    else:  # an oversized body is left out: the server answers 413 unread, the client's pipe breaks
        request["headers"] = {
            "Content-Length": draw(st.sampled_from(["abc", "-1", "1.5", str(len(valid) - 3)]))
        }
    return request


def test_fuzz_with_the_real_token_never_consumes_it_and_a_valid_request_does_once(
    served: tuple[TestEngine, Server, Parked],
) -> None:
    engine, server, parked = served
    token = parked.tokens[0]

    @settings(max_examples=80, deadline=None)
    @given(request=malformed_with_the_real_token(token))
    def fuzz(request: dict[str, Any]) -> None:
        code, _ = call(server, **request)
        assert 400 <= code < 500, request
        assert engine.journal.async_token(token) is not None, request  # still unconsumed
        assert not parked.review.done

    fuzz()
    assert call(server, "POST", COMPLETE, {"token": token, "result": "ok"}) == (200, {"ok": True})
    assert parked.review.result(10) == "ok"
    assert call(server, "POST", COMPLETE, {"token": token, "result": "again"})[0] == 404
    assert call(server, "POST", FAIL, {"token": token, "error": "again"})[0] == 404
    assert engine.journal.query(
        "SELECT count(*) FROM steps WHERE run_id = 'review' AND status = 'completed'"
    ) == [(1,)]
