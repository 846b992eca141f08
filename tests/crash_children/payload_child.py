"""Child process for tests/test_payloads.py: records pydantic results, or replays them.

Usage: ``python payload_child.py JOURNAL record|replay OUT.json``. ``record`` runs the workflow
until every step is journaled and it waits for a signal, then closes the engine (the run stays
resumable). ``replay`` (a new process, as after a kernel restart) sends the signal and resumes
the run: every result comes from the journal. Both write to OUT.json, per result, its class and
repr, and how many activities this process executed.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import numpy as np
from pydantic import BaseModel

import weft_nb

sys.set_int_max_str_digits(0)  # repr() of a 5,000-digit int, for the comparison only
np.set_printoptions(floatmode="unique")  # repr() of an array shows every float exactly


class Point(BaseModel):
    x: float
    y: float


class Base(BaseModel):
    name: str


class Sub(Base):
    extra: int


class Loose(BaseModel):
    data: Any


class Blob(BaseModel):
    raw: bytes


class Big(BaseModel):
    n: int


class Plain(BaseModel):
    lr: float
    tags: list[str]


EXECUTED: list[str] = []


@weft_nb.activity
def nan_point(_: object) -> Point:
    EXECUTED.append("nan_point")
    return Point(x=math.nan, y=-math.inf)


@weft_nb.activity
def subclass(_: object) -> Base:
    EXECUTED.append("subclass")
    return Sub(name="s", extra=3)


@weft_nb.activity
def loose(_: object) -> Loose:
    EXECUTED.append("loose")
    return Loose(data={"t": (1, 2), "s": {1, 2}, "f": frozenset({3}), "n": [None]})


@weft_nb.activity
def blob(_: object) -> Blob:
    EXECUTED.append("blob")
    return Blob(raw=b"\xff\x00text")


@weft_nb.activity
def big(_: object) -> Big:
    EXECUTED.append("big")
    return Big(n=10**5000 + 7)


@weft_nb.activity
def plain(_: object) -> Plain:
    EXECUTED.append("plain")
    return Plain(lr=0.5, tags=["a", "b"])


@weft_nb.activity
def pair(_: object) -> tuple[int, str]:
    EXECUTED.append("pair")
    return (1, "two")


@weft_nb.activity
def array(_: object) -> Any:
    EXECUTED.append("array")
    return np.arange(6, dtype=np.float32).reshape(2, 3)


ACTIVITIES = [nan_point, subclass, loose, blob, big, plain, pair, array]


@weft_nb.workflow
def models(ctx: weft_nb.WorkflowContext) -> list[Any]:
    results = [ctx.run(act) for act in ACTIVITIES]
    ctx.wait_for_signal("go")
    return results


def main() -> None:
    journal, phase, out = sys.argv[1], sys.argv[2], sys.argv[3]
    engine = weft_nb.Engine(journal)
    engine.register(*ACTIVITIES, models)
    if phase == "record":
        handle = engine.start(models, run_id="p")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not handle.done:
            rows = engine.journal.query(
                "SELECT count(*) FROM steps WHERE run_id = 'p' AND status = 'completed'"
            )
            if rows[0][0] == len(ACTIVITIES):
                break
            time.sleep(0.05)
        report: dict[str, Any] = {"status": handle.status}
        codecs = engine.journal.query(
            "SELECT result_codec FROM steps WHERE run_id = 'p' ORDER BY position"
        )
        report["codecs"] = [c for (c,) in codecs]
        engine.close()
    else:
        engine.signal("p", "go", None)
        handle = engine.resume("p")
        try:
            results = handle.result(60)
            report = {"status": handle.status}
            report["types"] = [f"{type(r).__module__}.{type(r).__qualname__}" for r in results]
            report["reprs"] = [repr(r) for r in results]
        except Exception as exc:
            report = {"status": handle.status, "error": f"{type(exc).__name__}: {exc}"}
        engine.close()
    live = [act(None) for act in ACTIVITIES]  # what the activities return, for comparison
    EXECUTED[-len(ACTIVITIES) :] = []
    report["expected_types"] = [f"{type(r).__module__}.{type(r).__qualname__}" for r in live]
    report["expected_reprs"] = [repr(r) for r in live]
    report["executed"] = EXECUTED
    with open(out, "w", encoding="utf-8") as handle_out:
        json.dump(report, handle_out)


if __name__ == "__main__":
    main()
