"""``Engine.start``, ``Engine.run`` and ``Engine.run_async``, with their typed overloads.

The engine's public way in to a run (a base class of `Engine`): each checks the engine is open
and hands the workflow to the `RunLauncher` (`weft_nb.engine.launcher`).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any, TypedDict, overload

from weft_nb.base.typed_api import InputT, ModelT, ResultT

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from weft_nb.base.definitions import WorkflowDefinition
    from weft_nb.base.typed_api import ModelInput
    from weft_nb.engine.launcher import RunLauncher
    from weft_nb.engine.live_runs import LiveRuns
    from weft_nb.engine.runs import RunHandle
    from weft_nb.engine.workflow_context import BareWorkflowFn, WorkflowFn


class StartOptions(TypedDict, total=False):
    """The keyword options of ``Engine.start``, for its typed overloads."""

    run_id: str | None
    on_change: str | None


class RunOptions(StartOptions, total=False):
    """The keyword options of ``Engine.run``: those of ``start``, and ``timeout``."""

    timeout: float | None


class RunStarting:
    """``Engine.start`` and ``Engine.run``, with their typed overloads (a base of `Engine`).

    A workflow function's types reach the handle: ``engine.start(wf, input)`` checks ``input``
    against ``wf``'s parameter (a pydantic model's fields too) and returns ``RunHandle[R]``.
    """

    _live: LiveRuns
    _launcher: RunLauncher
    on_change: str

    def interrupt(self, run_id: str) -> bool:
        """Stop a live run as a kernel interrupt does (`Engine.interrupt`)."""
        raise NotImplementedError

    @overload
    def start(
        self,
        workflow: WorkflowFn[ModelT, ResultT],
        input: ModelInput[ModelT],
        **options: Unpack[StartOptions],
    ) -> RunHandle[ResultT]: ...
    @overload
    def start(
        self, workflow: WorkflowFn[InputT, ResultT], input: InputT, **options: Unpack[StartOptions]
    ) -> RunHandle[ResultT]: ...
    @overload
    def start(
        self, workflow: BareWorkflowFn[ResultT], input: None = None, **options: Unpack[StartOptions]
    ) -> RunHandle[ResultT]: ...
    @overload
    def start(
        self, workflow: str | WorkflowDefinition, input: Any = None, **options: Unpack[StartOptions]
    ) -> RunHandle[Any]: ...
    def start(
        self,
        workflow: Any,
        input: Any = None,
        *,
        run_id: str | None = None,
        on_change: str | None = None,
    ) -> RunHandle[Any]:
        """Start a run in the background and return its handle at once.

        With a ``run_id`` that exists, a finished run's handle returns its recorded outcome and an
        unfinished run resumes.

        Raises:
            InvalidRunIdError: ``run_id`` cannot name a run (empty, too long, control characters).
        """
        self._live.check_open()
        return self._launcher.start(workflow, run_id, input, on_change or self.on_change)

    @overload
    def run(
        self,
        workflow: WorkflowFn[ModelT, ResultT],
        input: ModelInput[ModelT],
        **options: Unpack[RunOptions],
    ) -> ResultT: ...
    @overload
    def run(
        self, workflow: WorkflowFn[InputT, ResultT], input: InputT, **options: Unpack[RunOptions]
    ) -> ResultT: ...
    @overload
    def run(
        self, workflow: BareWorkflowFn[ResultT], input: None = None, **options: Unpack[RunOptions]
    ) -> ResultT: ...
    @overload
    def run(
        self, workflow: str | WorkflowDefinition, input: Any = None, **options: Unpack[RunOptions]
    ) -> Any: ...
    def run(
        self,
        workflow: Any,
        input: Any = None,
        *,
        run_id: str | None = None,
        timeout: float | None = None,
        on_change: str | None = None,
    ) -> Any:
        """Start (or resume) a run and wait for its result.

        Ctrl-C (``KeyboardInterrupt``) while it waits interrupts the run, as ``%weft run`` does:
        its activities' ``cancelled`` is set, it is recorded as ``interrupted``, and the
        ``KeyboardInterrupt`` is raised again. Starting it again (same ``run_id``) resumes it.

        Nothing is acknowledged before the result (or a ``TimeoutError`` naming the run, which
        makes its start durable first), so the run's start is made durable with its first
        step's sync instead of one of its own (docs/guarantees.md).
        """
        if run_id is None:  # known here: Ctrl-C may land inside start()
            run_id = uuid.uuid4().hex[:16]
        try:
            return self._start_unacknowledged(workflow, input, run_id, on_change).result(timeout)
        except KeyboardInterrupt:
            self.interrupt(run_id)  # False (nothing to do) when the run was not launched
            raise
        except TimeoutError:  # it names the run, which keeps running: an acknowledgement
            self._launcher.acknowledge(run_id)
            raise

    async def run_async(
        self,
        workflow: Any,
        input: Any = None,
        *,
        run_id: str | None = None,
        on_change: str | None = None,
    ) -> Any:
        """``await engine.run_async(wf, input)``: `run()` without blocking the running loop.

        For a cell's top-level ``await``, or any coroutine; sync and ``async def`` workflows alike.

        Cancelling the awaiting task (or Ctrl-C) interrupts the run, as `run()` does on Ctrl-C.
        """
        if run_id is None:
            run_id = uuid.uuid4().hex[:16]
        try:
            return await self._start_unacknowledged(workflow, input, run_id, on_change)
        except (KeyboardInterrupt, asyncio.CancelledError):
            self.interrupt(run_id)
            raise

    def _start_unacknowledged(
        self, workflow: Any, input: Any, run_id: str, on_change: str | None
    ) -> RunHandle[Any]:
        """`start()` for `run()` and `run_async()`, whose caller sees nothing before the outcome.

        A new run's start record is not synced by itself: the first step's sync (or the outcome's,
        or any commit) makes it durable with what follows it (docs/guarantees.md). One
        ``fdatasync`` fewer per run; nothing was acknowledged that a power loss before that sync
        could take back.
        """
        self._live.check_open()
        policy = on_change or self.on_change
        return self._launcher.start(workflow, run_id, input, policy, sync_start=False)
