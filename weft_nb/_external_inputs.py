"""What reaches a run from outside its workflow: signals, out-of-band completions, the endpoint.

``Engine`` inherits these methods; they share one rule: the input is validated and journaled
before anything that depends on it, and the run is woken if it waits in this process.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from . import _task_tokens as task_tokens
from ._journal import STEP_COMPLETED, STEP_FAILED, TERMINAL_STATUSES, StepRecord
from ._payloads import encode, error_to_json
from ._server import Server, serve
from .errors import (
    ActivityFailedError,
    PayloadError,
    RunFinishedError,
    RunNotFoundError,
)

if TYPE_CHECKING:
    from ._clock import Clock
    from ._engine import Engine
    from ._journal import Journal
    from ._run_handle import RunState


def check_failure_size(recorded: str, limit: int, parked: StepRecord, token: str) -> None:
    """Refuse an out-of-band failure too large to journal, before its token is consumed."""
    size = len(recorded.encode())
    if size > limit:
        raise PayloadError(
            f"the failure sent for activity {parked.activity!r} (step {parked.position}, run "
            f"{parked.run_id!r}) is {size} bytes once recorded, over the journal's limit of "
            f"{limit} bytes (max_payload_bytes). Token {token!r} was not used: fail it again "
            "with a shorter error message.",
            run_id=parked.run_id,
            position=parked.position,
            size=size,
            limit=limit,
        )


class ExternalInputs:
    """Signals and async completions (mixed into :class:`~weft_nb.Engine`)."""

    journal: Journal
    clock: Clock
    max_payload_bytes: int
    _lock: threading.RLock
    _active: dict[str, RunState]
    _servers: list[Server]

    def _check_open(self) -> None:  # provided by Engine
        raise NotImplementedError

    def emit(self, kind: str, run_id: str | None, position: int | None, **data: Any) -> None:
        """Provided by Engine."""
        raise NotImplementedError

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 7233,
        *,
        auth_token: str | None = None,
        allow_unauthenticated: bool = False,
        max_body: int = 1024 * 1024,
    ) -> Server:
        """Serve the REST endpoint from this process (it owns the journal); returns the server.

        Routes: ``POST /api/v1/activities/complete`` (``{"token", "result"}``), ``POST
        /api/v1/activities/fail`` (``{"token", "error"}``), ``GET /api/v1/runs``, ``GET
        /api/v1/runs/{id}``, ``POST /api/v1/runs/{id}/signals/{name}`` (``{"payload",
        "signal_id"}``), ``GET /health``. Loopback by default; ``Authorization: Bearer
        <auth_token>`` is required unless ``allow_unauthenticated=True``. ``port=0`` picks a free
        port (``server.port``). The server stops with the engine.
        """
        self._check_open()
        engine: Engine = self  # type: ignore[assignment]  # only Engine mixes this in
        server = serve(
            engine,
            host,
            port,
            auth_token=auth_token,
            allow_unauthenticated=allow_unauthenticated,
            max_body=max_body,
        )
        self._servers.append(server)
        return server

    def signal(
        self, run_id: str, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> bool:
        """Send a signal to a run; it is durable when this returns.

        It is buffered until the workflow waits for ``name`` (``ctx.wait_for_signal``), survives
        restarts, and is delivered once: a repeated ``signal_id`` is ignored (returns False).

        Raises:
            RunNotFoundError: No such run.
            RunFinishedError: The run already finished.
            PayloadError: The payload cannot be stored (nothing is written).
        """
        self._check_open()
        record = self.journal.get_run(run_id)
        if record is None:
            raise RunNotFoundError(
                f"no run {run_id!r} in journal {self.journal.path}", run_id=run_id
            )
        if record.status in TERMINAL_STATUSES:
            raise RunFinishedError(
                f"run {run_id!r} is {record.status}; signal {name!r} cannot be delivered to a "
                "finished run",
                run_id=run_id,
            )
        codec, data = encode(
            payload, what=f"payload of signal {name!r}", max_bytes=self.max_payload_bytes
        )
        added = self.journal.add_signal(run_id, name, signal_id, codec, data, self.clock.now())
        with self._lock:
            state = self._active.get(run_id)
        if added and state is not None and state.signal_arrived is not None:
            state.signal_arrived.set()
        self.emit("signal", run_id, None, name=name, delivered=added)
        return added

    def complete_async_activity(self, token: str, result: Any = None) -> None:
        """Complete a parked activity (``ActivityContext.complete_async``) with ``result``.

        The token is consumed in the same transaction that records the step's result. A
        completion that arrives before the workflow is waiting again (after a restart) is kept
        and delivered when replay reaches the step.

        Raises:
            AsyncTokenNotFoundError: Unknown token, already used (tokens are single-use), or
                spent: its attempt failed, timed out or died with its process.
            RunFinishedError: The token's run has finished or was cancelled.
            PayloadError: ``result`` cannot be stored; the token is not consumed.
        """
        parked = self._parked(token)
        codec, data = encode(
            result, what=f"completion of activity {parked.activity!r}",
            max_bytes=self.max_payload_bytes,
        )  # fmt: skip
        self._settle_token(token, dataclasses.replace(
            parked, status=STEP_COMPLETED, finished_at=self.clock.now(), result_codec=codec,
            result=data,
        ))  # fmt: skip

    def fail_async_activity(self, token: str, error: BaseException | str) -> None:
        """Fail a parked activity; the workflow's ``ctx.run`` raises ``ActivityFailedError``.

        Raises:
            AsyncTokenNotFoundError: Unknown token, already used, or spent.
            RunFinishedError: The token's run has finished or was cancelled.
            PayloadError: The recorded failure would exceed ``max_payload_bytes`` (a huge error
                message); the token is not consumed, so a shorter failure can still be sent.
        """
        parked = self._parked(token)
        failure = ActivityFailedError(
            cause_type=type(error).__name__ if isinstance(error, BaseException) else "AsyncFailure",
            cause_message=str(error),
            attempts=parked.attempts,
            run_id=parked.run_id,
            position=parked.position,
            activity=parked.activity,
        )
        recorded = error_to_json(failure)
        check_failure_size(recorded, self.max_payload_bytes, parked, token)
        self._settle_token(token, dataclasses.replace(
            parked, status=STEP_FAILED, finished_at=self.clock.now(), error=recorded,
        ))  # fmt: skip

    def _parked(self, token: str) -> StepRecord:
        self._check_open()
        parked = self.journal.async_token(token)
        if parked is None:
            raise task_tokens.refusal(self.journal, token)
        record = self.journal.get_run(parked.run_id)
        if record is not None and record.status in TERMINAL_STATUSES:
            raise task_tokens.refusal(self.journal, token)
        return parked

    def _settle_token(self, token: str, outcome: StepRecord) -> None:
        if not self.journal.complete_async_token(token, outcome):
            raise task_tokens.refusal(self.journal, token)  # used, spent or finished meanwhile
        with self._lock:
            state = self._active.get(outcome.run_id)
        if state is not None and state.signal_arrived is not None:
            state.signal_arrived.set()
        self.emit("async_completed", outcome.run_id, outcome.position, status=outcome.status)
