"""Random workflow programs as plain data, their generator, and the reference model of them.

A :class:`Program` is a list of operations (``Run``, ``All``, ``Race``, ``RunAll``, ``Memo``,
``Sleep``, ``Wait``), each over activity specs (:class:`Act`) that say how every attempt behaves:
fail the first ``k`` attempts, overrun a per-attempt timeout, fail non-retryably, cancel the run,
park on ``complete_async``, carry an idempotency key with or without a verifier. Everything is
keyed on the attempt number, never on chance, so a program means one thing.

:func:`model` interprets a program without the engine: the workflow's final result (or error
signature), the result of every position, and how many times each position's activity runs.
``tests/model_engine.py`` runs the same data on the engine; ``tests/test_model_based.py`` compares.

``Program.snippet()`` prints a failing program as Python that reproduces it. The hypothesis
strategies that generate programs are in ``tests/model_generator.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

# Known defects the generator steers around until their fixes merge (an entry here, and a check
# of it where the generator draws the pattern); delete the entry once its fix is in. None is open:
# issue 13.1-13.3 and memo_failure_replay (notes/model-fix.md) are fixed.
KNOWN_DEFECTS: dict[str, str] = {}
# ``WEFT_NB_MODEL_KNOWN_OFF=memo_with_run,...`` (or ``all``) switches entries off for a campaign.
_OFF = {name for name in os.environ.get("WEFT_NB_MODEL_KNOWN_OFF", "").split(",") if name}
for _name in list(KNOWN_DEFECTS):
    if "all" in _OFF or _name in _OFF:
        del KNOWN_DEFECTS[_name]

SUB_BASE = 1_000_000  # durable_activity sub-positions: SUB_BASE * (memo position + 1) + ordinal
TIMEOUT = 5  # the per-attempt timeout of an Act with timeout_first > 0 (virtual seconds)
SIGNAL_TIMEOUT = 30


def backoff(attempt: int) -> int:
    """The retry policy every Act runs with: 1 s initial, doubling, capped at 4 s."""
    return int(min(2 ** (attempt - 1), 4))


@dataclasses.dataclass(frozen=True)
class Act:
    """One activity call and how each of its attempts behaves."""

    name: str
    fail_first: int = 0  # attempts 1..k raise FlakyError (retryable)
    timeout_first: int = 0  # attempts 1..k overrun a per-attempt timeout of TIMEOUT s
    permanent: bool = False  # every attempt raises PermanentError (non-retryable)
    duration: int = 0  # virtual seconds an attempt works (< TIMEOUT)
    max_attempts: int = 3
    key: bool = False  # idempotency key "k-<name>"
    # Tier-0 verifier: "not-completed" (always), "indeterminate" (always), or
    # "completed-with-result" (truthful: the result if an attempt returned, else not-completed)
    verifier: str | None = None
    async_mode: str | None = None  # complete_async, then: complete, fail or cancel
    cancels: bool = False  # a successful attempt cancels the run
    token_then_fail: bool = False  # read the task token, then fail (issue 13.1)

    def options(self) -> dict[str, Any]:
        """The ctx.run call options."""
        opts: dict[str, Any] = {
            "retry": {
                "max_attempts": self.max_attempts,
                "initial_backoff": 1,
                "max_backoff": 4,
                "non_retryable_errors": ["PermanentError"],
            }
        }
        if self.timeout_first:
            opts["timeout"] = TIMEOUT
        if self.key:
            opts["idempotency_key"] = f"k-{self.name}"
        return opts

    def activity(self) -> str:
        """The registered activity it calls (one with a verifier, one without)."""
        return "model_act_v" if self.verifier is not None else "model_act"

    def short(self) -> str:
        fields = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)]
        defaults = Act("")
        kept = [
            s
            for f, s in zip(dataclasses.fields(self), fields, strict=True)
            if f.name == "name" or getattr(self, f.name) != getattr(defaults, f.name)
        ]
        return f"Act({', '.join(kept)})"


@dataclasses.dataclass(frozen=True)
class Op:
    """Base of the operations; ``catch``: the workflow catches its error and goes on."""

    catch: bool = False


@dataclasses.dataclass(frozen=True)
class Run(Op):
    act: Act = Act("")


@dataclasses.dataclass(frozen=True)
class All(Op):
    acts: tuple[Act, ...] = ()


@dataclasses.dataclass(frozen=True)
class Race(Op):
    acts: tuple[Act, ...] = ()


@dataclasses.dataclass(frozen=True)
class RunAll(Op):
    acts: tuple[Act, ...] = ()


@dataclasses.dataclass(frozen=True)
class Memo(Op):
    key: str = ""
    acts: tuple[Act, ...] = ()  # called with weft_nb.durable_activity inside the callback
    run_inside: bool = False  # the callback first calls ctx.run: refused with StepScopeError
    inner_catch: bool = False  # the callback catches each call's error and goes on


@dataclasses.dataclass(frozen=True)
class Sleep(Op):
    seconds: int = 1


@dataclasses.dataclass(frozen=True)
class Wait(Op):
    name: str = ""
    delivery: str = "early"  # early (buffered at start), late (once parked), cancel, none
    timeout: int | None = None


OPS: dict[str, type[Op]] = {
    cls.__name__: cls for cls in (Run, All, Race, RunAll, Memo, Sleep, Wait)
}


def _act_json(act: Act) -> dict[str, Any]:
    return dataclasses.asdict(act)


def _op_json(op: Op) -> dict[str, Any]:
    data: dict[str, Any] = {"op": type(op).__name__}
    for field in dataclasses.fields(op):
        value = getattr(op, field.name)
        if isinstance(value, Act):
            value = _act_json(value)
        elif isinstance(value, tuple):
            value = [_act_json(a) for a in value]
        data[field.name] = value
    return data


def _op_from_json(data: dict[str, Any]) -> Op:
    cls = OPS[data["op"]]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "op":
            continue
        if key == "act":
            kwargs[key] = Act(**value)
        elif key == "acts":
            kwargs[key] = tuple(Act(**a) for a in value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class Program:
    """A workflow program: what the generic workflow ``model_workflow`` interprets."""

    ops: tuple[Op, ...]

    def to_json(self) -> dict[str, Any]:
        return {"ops": [_op_json(op) for op in self.ops]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Program:
        return Program(tuple(_op_from_json(op) for op in data["ops"]))

    def acts(self) -> list[Act]:
        found: list[Act] = []
        for op in self.ops:
            found.extend([op.act] if isinstance(op, Run) else getattr(op, "acts", ()))
        return found

    def snippet(self, crashes: tuple[CrashPoint, ...] = ()) -> str:
        """Python that reproduces this program and its crash points (run it from tests/)."""
        lines = [
            "from model_programs import *",
            "from model_driver import check, execute",
            "",
            "P = Program((",
        ]
        for op in self.ops:
            parts = []
            for field in dataclasses.fields(op):
                value = getattr(op, field.name)
                if value == field.default:
                    continue
                if isinstance(value, Act):
                    parts.append(f"act={value.short()}")
                elif isinstance(value, tuple):
                    parts.append(f"acts=({', '.join(a.short() for a in value)},)")
                else:
                    parts.append(f"{field.name}={value!r}")
            lines.append(f"    {type(op).__name__}({', '.join(parts)}),")
        lines.append("))")
        lines.append(f"E = execute(P, crashes={crashes!r})")
        lines.append(f"print(E.outcome, check(P, E, crash_free={not crashes}))  # [] = as model(P)")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class CrashPoint:
    """Crash (simulate_restart, or SIGKILL) at the ``n``-th event of ``kind`` since the last start.

    Kinds: ``start`` (an attempt or memo callback begins), ``end`` (an attempt's work is done, its
    outcome not yet reported), ``parked`` (every engine thread waits with no deadline: on a
    signal or a completion).
    """

    kind: str
    n: int

    def __repr__(self) -> str:
        return f"CrashPoint({self.kind!r}, {self.n})"


# -- the reference model -----------------------------------------------------------------------

ErrSig = tuple[str, str | None]


class ModelError(Exception):
    def __init__(self, sig: ErrSig) -> None:
        super().__init__(sig)
        self.sig = sig


class ModelCancelled(Exception):
    pass


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def act_input(act: Act, prev: Any) -> dict[str, Any]:
    """The input an Act is called with: its spec and a digest of the previous op's result."""
    return {"spec": _act_json(act), "prev": digest(prev)}


def act_value(inp: dict[str, Any]) -> list[Any]:
    """What a successful attempt returns (and what a completion or a verifier reports)."""
    return [inp["spec"]["name"], inp["prev"]]


@dataclasses.dataclass
class ActPlan:
    """The model's view of one call: its outcome, attempts run, and virtual time to settle."""

    value: Any
    error: ErrSig | None
    attempts: int
    settle: int
    cancels: bool = False


def plan_act(act: Act, inp: dict[str, Any]) -> ActPlan:
    if act.async_mode is not None:
        if act.async_mode == "complete":
            return ActPlan(act_value(inp), None, 1, act.duration)
        if act.async_mode == "fail":
            return ActPlan(None, ("ActivityFailedError", "AsyncFailure"), 1, act.duration)
        return ActPlan(None, None, 1, act.duration, cancels=True)
    t, attempt = 0, 1
    while True:
        if attempt <= act.timeout_first:
            t += TIMEOUT
            error: ErrSig = ("ActivityPerAttemptTimeoutError", "ActivityPerAttemptTimeoutError")
        elif act.permanent:
            t += act.duration
            return ActPlan(None, ("ActivityFailedError", "PermanentError"), attempt, t)
        elif attempt <= act.fail_first or (act.token_then_fail and attempt == 1):
            t += act.duration
            error = ("ActivityFailedError", "FlakyError")
        else:
            t += act.duration
            return ActPlan(act_value(inp), None, attempt, t, cancels=act.cancels)
        if attempt == act.max_attempts:
            return ActPlan(None, error, attempt, t)
        t += backoff(attempt)
        attempt += 1


@dataclasses.dataclass
class Expected:
    """What the model says a program does."""

    outcome: Any  # ["completed", trace] | ["failed", type, cause] | ["cancelled"]
    executions: dict[int, tuple[int, int]]  # position -> (min, max) attempts run
    acts: dict[int, Act]  # position -> the Act called there
    async_results: dict[int, Any]  # position -> the value a completion delivers
    memo_positions: set[int]
    exact: bool  # False when a cancel makes counts of concurrent branches unknowable


def model(program: Program, overrides: dict[int, ErrSig] | None = None) -> Expected:
    """Interpret ``program``; ``overrides`` turn positions into errors (fail-closed steps)."""
    overrides = overrides or {}
    exp = Expected(["completed", []], {}, {}, {}, set(), True)
    trace: list[Any] = []
    memo_cache: dict[str, Any] = {}
    position = 0

    def take() -> int:
        nonlocal position
        position += 1
        return position - 1

    def call(act: Act, pos: int, prev: Any, full: bool = True) -> ActPlan:
        inp = act_input(act, prev)
        exp.acts[pos] = act
        if pos in overrides:
            return ActPlan(None, overrides[pos], 0, 0)
        plan = plan_act(act, inp)
        exp.executions[pos] = (plan.attempts if full else 1, plan.attempts)
        if act.async_mode == "complete":
            exp.async_results[pos] = plan.value
        return plan

    def settle(plan: ActPlan) -> Any:
        if plan.cancels:
            raise ModelCancelled
        if plan.error is not None:
            raise ModelError(plan.error)
        return plan.value

    def memo_answer(op: Memo, pos: int, prev: Any) -> Any:
        """The memo callback's value, or the ModelError it raised."""
        exp.memo_positions.add(pos)
        try:
            if op.run_inside:
                raise ModelError(("StepScopeError", None))
            results = []
            for ordinal, act in enumerate(op.acts, start=1):
                try:
                    results.append(settle(call(act, SUB_BASE * (pos + 1) + ordinal, prev)))
                except ModelError as err:
                    if not op.inner_catch:
                        raise
                    results.append(["error", *err.sig])
        except ModelError as err:
            return err
        return ["memo", op.key, results]

    for op in program.ops:
        prev = trace[-1] if trace else None
        try:
            if isinstance(op, Run):
                value = settle(call(op.act, take(), prev))
            elif isinstance(op, All | RunAll):
                if isinstance(op, RunAll):
                    take()
                plans = [call(a, take(), prev) for a in op.acts]
                if any(p.cancels for p in plans):
                    exp.exact = False
                    raise ModelCancelled
                errors = [p.error for p in plans if p.error is not None]
                if errors:
                    raise ModelError(errors[0])
                values = [p.value for p in plans]
                value = (
                    dict(zip([a.name for a in op.acts], values, strict=True))
                    if isinstance(op, RunAll)
                    else values
                )
            elif isinstance(op, Race):
                positions = [take() for _ in op.acts]
                plans = [
                    call(a, p, prev, full=False) for a, p in zip(op.acts, positions, strict=True)
                ]
                take()
                winner = min(range(len(plans)), key=lambda i: plans[i].settle)
                exp.executions[positions[winner]] = (plans[winner].attempts,) * 2
                value = [winner, settle(plans[winner])]
            elif isinstance(op, Memo):
                # A memo remembers its answer, a failure included: a repeated key gives it again.
                if op.key not in memo_cache:
                    memo_cache[op.key] = memo_answer(op, take(), prev)
                value = memo_cache[op.key]
                if isinstance(value, ModelError):
                    raise value
            elif isinstance(op, Sleep):
                take()
                value = ["slept", op.seconds]
            elif isinstance(op, Wait):
                pos = take()
                if pos in overrides:
                    raise ModelError(overrides[pos])
                if op.delivery == "cancel":
                    raise ModelCancelled
                if op.delivery == "none":
                    raise ModelError(("SignalTimeoutError", None))
                value = ["signal", f"payload-{op.name}"]
            else:
                raise AssertionError(op)
        except ModelCancelled:
            exp.outcome = ["cancelled"]
            exp.exact = False
            return exp
        except ModelError as err:
            if not op.catch:
                exp.outcome = ["failed", *err.sig]
                return exp
            value = ["error", *err.sig]
        trace.append(value)
    exp.outcome = ["completed", trace]
    return exp
