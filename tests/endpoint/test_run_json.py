"""``GET /api/v1/runs/{id}`` over real HTTP on loopback: the run as JSON (schema 1), or as text."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.endpoint.server import Server
from weft_nb.errors import ActivityFailedError
from weft_nb.journal.protocol import HeartbeatRecord
from weft_nb.testing import TestEngine

SECRET = "run-json-secret"


def _strict(constant: str) -> Any:
    raise AssertionError(f"the answer holds {constant}, which strict JSON has no spelling for")


def get(
    server: Server, run_id: str, query: str = "", accept: str | None = None
) -> tuple[int, str, Any]:
    """GET a run: (status, content type, body), the body decoded as strict JSON or kept as text."""
    request = urllib.request.Request(f"{server.url}/api/v1/runs/{run_id}{query}")
    request.add_header("Authorization", f"Bearer {SECRET}")
    if accept is not None:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, kind, data = (
                response.status,
                response.headers.get_content_type(),
                response.read(),
            )
    except urllib.error.HTTPError as error:
        status, kind, data = error.code, error.headers.get_content_type(), error.read()
    if kind == "text/plain":
        return status, kind, data.decode()
    return status, kind, json.loads(data, parse_constant=_strict)


@pytest.fixture
def server(engine: TestEngine) -> Server:
    """The engine's endpoint (it stops when the engine fixture closes the engine)."""
    return engine.serve(port=0, auth_token=SECRET)


STEP_KEYS = {
    "position",
    "activity",
    "status",
    "attempt",
    "max_attempts",
    "started_at",
    "finished_at",
    "progress",
    "heartbeat",
    "error",
    "token",
    "attempts",
    "note",
}


def test_a_completed_run_with_a_retry_and_a_heartbeat(engine: TestEngine, server: Server) -> None:
    @weft_nb.activity(retry={"max_attempts": 3})
    def flaky(x: int, activity: weft_nb.ActivityContext) -> int:
        if activity.attempt == 1:
            raise ValueError("first try fails")
        return x + 1

    @weft_nb.activity
    def train(x: int, activity: weft_nb.ActivityContext) -> int:
        activity.heartbeat({"epoch": 3, "loss": 0.25})
        return x * 2

    @weft_nb.workflow
    def pipeline(ctx: weft_nb.WorkflowContext) -> int:
        return int(ctx.run(train, ctx.run(flaky, 1)))

    assert engine.run(pipeline, run_id="done") == 4
    status, kind, run = get(server, "done")
    assert (status, kind) == (200, "application/json")
    assert run["schema"] == 1
    assert (run["run_id"], run["workflow"], run["status"], run["error"]) == (
        "done",
        "pipeline",
        "completed",
        None,
    )
    assert run["started_at"] <= run["finished_at"] == run["updated_at"]
    assert run["elapsed"] == pytest.approx(run["finished_at"] - run["started_at"])
    first, second = run["steps"]
    assert set(first) == set(second) == STEP_KEYS
    assert (first["position"], first["activity"], first["status"]) == (0, "flaky", "completed")
    assert (first["attempt"], first["progress"], first["heartbeat"]) == (2, 1.0, None)
    failed, succeeded = first["attempts"]
    assert failed["attempt"] == 1 and failed["status"] == "failed"
    assert (failed["error_type"], failed["error"]) == ("ValueError", "first try fails")
    assert failed["started_at"] <= failed["finished_at"] <= first["finished_at"]
    assert succeeded == {
        "attempt": 2,
        "status": "completed",
        "started_at": None,  # a retry's start is not journaled for a completed step
        "finished_at": first["finished_at"],
        "error_type": None,
        "error": None,
    }
    assert (second["activity"], second["status"], second["attempt"]) == ("train", "completed", 1)
    beat = second["heartbeat"]
    assert beat["codec"] == "json" and beat["repr"] is None
    assert beat["details"] == {"epoch": 3, "loss": 0.25}
    assert second["started_at"] <= beat["recorded_at"] <= second["finished_at"]
    assert [a["status"] for a in second["attempts"]] == ["completed"]
    assert second["attempts"][0]["started_at"] == second["started_at"]  # its only attempt


def test_a_failed_step_carries_its_error_and_every_attempt(
    engine: TestEngine, server: Server
) -> None:
    @weft_nb.activity(retry={"max_attempts": 2})
    def broken() -> None:
        raise RuntimeError("the service is down")

    @weft_nb.workflow
    def doomed(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(broken)

    with pytest.raises(ActivityFailedError):
        engine.run(doomed, run_id="doomed")
    _, _, run = get(server, "doomed")
    assert run["status"] == "failed" and "the service is down" in run["error"]
    assert run["finished_at"] == run["updated_at"]
    (step,) = run["steps"]
    assert (step["status"], step["attempt"]) == ("failed", 2)
    assert "the service is down" in step["error"]
    assert [(a["attempt"], a["status"], a["error_type"]) for a in step["attempts"]] == [
        (1, "failed", "RuntimeError"),
        (2, "failed", "RuntimeError"),
    ]
    assert all(a["error"] == "the service is down" for a in step["attempts"])


def test_a_running_step_shows_its_heartbeat_progress(engine: TestEngine, server: Server) -> None:
    release = threading.Event()

    @weft_nb.activity
    def crunch(_: object, activity: weft_nb.ActivityContext) -> str:
        activity.heartbeat({"current": 3, "total": 4, "loss": float("nan")})
        release.wait(30)
        return "crunched"

    @weft_nb.workflow
    def long(ctx: weft_nb.WorkflowContext) -> str:
        return str(ctx.run(crunch))

    handle = engine.start(long, run_id="long")
    try:

        def beating() -> dict[str, Any] | None:
            _, _, run = get(server, "long")
            steps = run["steps"]
            return run if steps and steps[0]["heartbeat"] is not None else None

        run = wait_until(beating, what="the running step's heartbeat")
        assert (run["status"], run["finished_at"]) == ("running", None)
        (step,) = run["steps"]
        assert (step["status"], step["attempt"], step["progress"]) == ("running", 1, 0.75)
        assert step["heartbeat"]["details"] == {"current": 3, "total": 4, "loss": "NaN"}
        assert step["heartbeat"]["recorded_at"] >= step["started_at"]
        assert step["attempts"] == [
            {
                "attempt": 1,
                "status": "running",
                "started_at": step["started_at"],
                "finished_at": None,
                "error_type": None,
                "error": None,
            }
        ]
    finally:
        release.set()
    assert handle.result(30) == "crunched"


class Reading:
    """Heartbeat details that are no JSON (so they are pickled)."""

    def __repr__(self) -> str:
        return "Reading(volts=3.3)"


def test_pickled_or_undecodable_heartbeats_get_a_placeholder(
    engine: TestEngine, server: Server
) -> None:
    @weft_nb.activity
    def measure(_: object, activity: weft_nb.ActivityContext) -> int:
        activity.heartbeat(Reading())
        return 1

    @weft_nb.workflow
    def probe(ctx: weft_nb.WorkflowContext) -> int:
        return int(ctx.run(measure)) + int(ctx.run(measure))

    assert engine.run(probe, run_id="probe") == 2
    _, _, run = get(server, "probe")
    assert run["steps"][0]["heartbeat"]["codec"] == "pickle"
    assert run["steps"][0]["heartbeat"]["details"] is None
    assert run["steps"][0]["heartbeat"]["repr"] == "Reading(volts=3.3)"

    # a pickle whose class this process cannot import (written by other code): still no error
    engine.journal.record_heartbeats(
        [
            HeartbeatRecord(
                run_id="probe",
                position=1,
                attempt=1,
                recorded_at=engine.clock.now(),
                codec="pickle",
                details=b"cweft_nb_no_such_module\nGone\n.",
                beat=99,
                activity="measure",
            )
        ]
    )
    status, _, run = get(server, "probe")
    assert status == 200
    beat = run["steps"][1]["heartbeat"]
    assert (beat["codec"], beat["details"]) == ("pickle", None)
    assert "not decodable here" in beat["repr"] and "weft_nb_no_such_module" in beat["repr"]
    status, _, text = get(server, "probe", "?format=text")
    assert status == 200 and "<pickle details not" in text


def test_the_text_format_and_the_errors(engine: TestEngine, server: Server) -> None:
    @weft_nb.activity
    def double(x: int) -> int:
        return x * 2

    @weft_nb.workflow
    def twice(ctx: weft_nb.WorkflowContext) -> int:
        return int(ctx.run(double, ctx.run(double, 1)))

    assert engine.run(twice, run_id="twice") == 4
    text = engine.snapshot("twice").text()
    assert text.startswith("twice run twice: completed")
    assert get(server, "twice", "?format=text") == (200, "text/plain", text)
    assert get(server, "twice", accept="text/plain") == (200, "text/plain", text)
    for asked in ({"query": "?format=json", "accept": "text/plain"}, {"accept": "*/*"}):
        status, kind, run = get(server, "twice", **asked)
        assert (status, kind, run["schema"]) == (200, "application/json", 1)
    status, _, body = get(server, "nope")
    assert status == 404 and "nope" in body["error"]
    status, _, body = get(server, "twice", "?format=xml")
    assert status == 400 and "'format'" in body["error"]
