"""A ``ctx.memo`` callback that raised: its failure is journaled and replayed like its value.

A memo is "run once, remember the answer", and a failure is an answer: a workflow that caught it
must see the same failure after a crash, not a second run of the callback (whose unkeyed
``durable_activity`` calls would go on with attempt numbers past their retry policy, so a failure
could turn into a value). The failure is stored twice in the failed step: as the JSON every
failed step keeps (``error_to_json``; weft_nb errors are rebuilt from it with their fields, as a
failed ``ctx.run`` is), and, for any other exception, pickled, so that a replay raises the same
type (``except ValueError`` catches it after a crash too): by plain pickling where that gives it
back, else by pickling its class, ``args`` and ``__dict__`` (for constructors with other
parameters). An exception that survives neither (a class defined inside a function, arguments
that cannot be pickled), or whose class cannot be imported when the run resumes, replays as
``WorkflowFailedError`` carrying its class name and message.

Errors that say nothing about the callback's answer are not journaled: the engine stopping, the
run being cancelled or interrupted, journal I/O, replay mismatches, and a checkpoint that needs
what this process lacks.
"""

from __future__ import annotations

import dataclasses
import pickle
import traceback

from weft_nb.base.payloads import PICKLE, error_from_json, error_to_json
from weft_nb.errors import (
    CheckpointEnvironmentError,
    JournalError,
    NonDeterminismError,
    RunInterruptedError,
    WeftError,
    WorkflowCancelledError,
)
from weft_nb.journal.protocol import StepRecord

_REBUILD = "weft_nb.memo-exception"
_NOT_AN_ANSWER = (
    CheckpointEnvironmentError,
    JournalError,
    NonDeterminismError,
    RunInterruptedError,
    WorkflowCancelledError,
)


class MemoFailure:
    """A memo key whose callback raised: later calls with the key in this run raise it again."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def is_answer(error: Exception) -> bool:
    """Whether ``error`` is the callback's own outcome, to be journaled and replayed."""
    return not isinstance(error, _NOT_AN_ANSWER)


def with_failure(failed: StepRecord, error: Exception, *, max_bytes: int) -> StepRecord:
    """The memo's ``STEP_FAILED`` record ``failed``, carrying the callback's ``error``.

    The JSON of every failed step, plus the pickled exception when it survives pickling within
    ``max_bytes`` (the engine's payload limit).
    """
    text = error_to_json(error, "".join(traceback.format_exception(error)))
    pickled = None if isinstance(error, WeftError) else _pickled(error, max_bytes)
    return dataclasses.replace(
        failed,
        result_codec=PICKLE if pickled is not None else None,
        result=pickled,
        error=text,
    )


def replay(run_id: str, recorded: StepRecord) -> Exception:
    """The journaled failure of a memo, rebuilt: the same type where it can be."""
    if recorded.result_codec == PICKLE and recorded.result is not None:
        try:
            error = _unpickled(recorded.result)
        except Exception:  # its class is gone (e.g. a notebook cell not run again): use the JSON
            error = None
        if error is not None:
            return error
    assert recorded.error is not None
    rebuilt = error_from_json(recorded.error, run_id=run_id)
    assert isinstance(rebuilt, Exception)
    return rebuilt


def _pickled(error: Exception, max_bytes: int) -> bytes | None:
    """``error`` pickled, if it comes back as the same type with the same text; else None.

    Plain pickling rebuilds an exception by calling its class with ``args``, which fails for a
    constructor with other parameters; then the class, ``args`` and ``__dict__`` are pickled
    and the replay rebuilds the exception without calling the constructor.
    """
    for payload in (error, (_REBUILD, type(error), error.args, dict(vars(error)))):
        try:
            data = pickle.dumps(payload, protocol=5)
            back = _unpickled(data)
        except Exception:
            continue
        if type(back) is type(error) and str(back) == str(error) and len(data) <= max_bytes:
            return data
    return None


def _unpickled(data: bytes) -> Exception | None:
    """The exception `_pickled()` stored (raises when its class cannot be imported)."""
    loaded = pickle.loads(data)
    if isinstance(loaded, tuple) and len(loaded) == 4 and loaded[0] == _REBUILD:
        _, cls, args, state = loaded
        rebuilt = BaseException.__new__(cls)
        rebuilt.args = args
        rebuilt.__dict__.update(state)
        loaded = rebuilt
    return loaded if isinstance(loaded, Exception) else None
