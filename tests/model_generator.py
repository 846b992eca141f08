"""The hypothesis strategies that generate model programs (tests/model_programs.py) and crashes.

Each behaviour is drawn where the engine supports it: parallel branches take no idempotency keys,
async completion or token reads; ``durable_activity`` calls inside a memo take no async
completion; ``run_all`` branches run with the default retry policy (it takes no call options).
Race branches get distinct settle times, so each race has one winner. A memo callback may catch
its calls' errors and go on. Patterns of ``KNOWN_DEFECTS`` (none open) would not be generated
while their switch is on.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st
from model_programs import (
    SIGNAL_TIMEOUT,
    TIMEOUT,
    Act,
    All,
    CrashPoint,
    Memo,
    Op,
    Program,
    Race,
    Run,
    RunAll,
    Sleep,
    Wait,
    act_input,
    plan_act,
)


@st.composite
def acts(draw: st.DrawFn, name: str, *, parallel: bool = False, in_memo: bool = False) -> Act:
    """An Act; parallel branches and memo calls take the subset of behaviours they support."""
    max_attempts = draw(st.integers(1, 4))
    choices = ["ok", "ok", "ok", "flaky", "flaky", "flaky", "timeout", "permanent"]
    if not parallel and not in_memo:
        choices += ["async", "async", "cancel", "token_then_fail"]
    elif parallel:
        choices.append("cancel")
    behaviour = draw(st.sampled_from(choices))
    keyable = not parallel
    kwargs: dict[str, Any] = {"name": name, "max_attempts": max_attempts}
    kwargs["duration"] = draw(st.integers(0, 3))
    if behaviour == "flaky":
        kwargs["fail_first"] = draw(st.integers(1, 4))
    elif behaviour == "timeout":
        kwargs["timeout_first"] = draw(st.integers(1, 3))
    elif behaviour == "permanent":
        kwargs["permanent"] = True
    elif behaviour == "async":
        kwargs["async_mode"] = draw(st.sampled_from(["complete", "complete", "fail", "cancel"]))
    elif behaviour == "cancel":
        kwargs["cancels"] = True
        kwargs["fail_first"] = draw(st.integers(0, max_attempts - 1))
    elif behaviour == "token_then_fail":
        kwargs["token_then_fail"] = True
        kwargs["max_attempts"] = max(2, max_attempts)
    if keyable and behaviour not in ("async", "token_then_fail") and draw(st.booleans()):
        kwargs["key"] = True
        kwargs["verifier"] = draw(
            st.sampled_from([None, "not-completed", "completed-with-result", "indeterminate"])
        )
    return Act(**kwargs)


def _race_settles(branches: list[Act]) -> list[Act]:
    """Make the branches' settle times distinct (a race's winner must be unambiguous)."""
    seen: set[int] = set()
    fixed = []
    for branch in branches:
        act = branch
        while plan_act(act, act_input(act, None)).settle in seen | {0}:
            if act.timeout_first >= act.max_attempts or act.duration + 1 >= TIMEOUT:
                # every attempt times out (duration has no say), or the next duration would
                act = dataclasses.replace(act, timeout_first=0)
            act = dataclasses.replace(act, duration=act.duration + 1)
        seen.add(plan_act(act, act_input(act, None)).settle)
        fixed.append(act)
    return fixed


@st.composite
def programs(draw: st.DrawFn, max_ops: int = 6) -> Program:
    """A random program of 1..max_ops operations."""
    count = draw(st.integers(1, max_ops))
    ops: list[Op] = []
    names = iter(f"a{i}" for i in range(1000))
    memo_keys: list[str] = []
    for index in range(count):
        kind = draw(
            st.sampled_from(["Run", "Run", "Run", "All", "Race", "RunAll", "Memo", "Sleep", "Wait"])
        )
        catch = draw(st.sampled_from([True, True, False]))
        op: Op
        if kind == "Run":
            op = Run(catch=catch, act=draw(acts(next(names))))
        elif kind in ("All", "RunAll"):
            width = draw(st.integers(1, 3))
            branches = tuple(draw(acts(next(names), parallel=True)) for _ in range(width))
            if kind == "RunAll":  # run_all branches take no call options: the defaults apply
                branches = tuple(
                    dataclasses.replace(a, max_attempts=3, permanent=False, timeout_first=0)
                    for a in branches
                )
            op = (All if kind == "All" else RunAll)(catch=catch, acts=branches)
        elif kind == "Race":
            width = draw(st.integers(1, 3))
            branches = [draw(acts(next(names), parallel=True)) for _ in range(width)]
            branches = [dataclasses.replace(a, cancels=False) for a in branches]
            op = Race(catch=catch, acts=tuple(_race_settles(branches)))
        elif kind == "Memo":
            if memo_keys and draw(st.booleans()):
                key = draw(st.sampled_from(memo_keys))
            else:
                key = f"m{index}"
                memo_keys.append(key)
            width = draw(st.integers(0, 2))
            calls = tuple(draw(acts(next(names), in_memo=True)) for _ in range(width))
            run_inside = draw(st.booleans())
            inner_catch = bool(calls) and draw(st.booleans())
            op = Memo(
                catch=catch, key=key, acts=calls, run_inside=run_inside, inner_catch=inner_catch
            )
        elif kind == "Sleep":
            op = Sleep(seconds=draw(st.integers(1, 100)))
        else:
            delivery, timeout = draw(
                st.sampled_from(
                    [
                        ("early", None),
                        ("early", SIGNAL_TIMEOUT),
                        ("late", None),
                        ("late", None),
                        ("cancel", None),
                        ("none", SIGNAL_TIMEOUT),
                    ]
                )
            )
            op = Wait(catch=catch, name=f"s{index}", delivery=delivery, timeout=timeout)
        ops.append(op)
    return Program(tuple(ops))


def crash_points(max_crashes: int = 2) -> st.SearchStrategy[tuple[CrashPoint, ...]]:
    point = st.one_of(
        st.builds(CrashPoint, st.sampled_from(["start", "end"]), st.integers(1, 4)),
        st.builds(CrashPoint, st.just("parked"), st.integers(1, 2)),
    )
    return st.lists(point, min_size=1, max_size=max_crashes).map(tuple)
