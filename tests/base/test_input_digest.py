"""Step signatures: equal inputs hash alike live, on replay and in any dict order (13.9)."""

from __future__ import annotations

import itertools
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

import weft_nb
from tests.helpers import wait_until
from weft_nb.base.input_digest import ResultDigests, input_digest
from weft_nb.base.payloads import digest, encode
from weft_nb.engine.workflow_context import StepChangedWarning
from weft_nb.testing import TestEngine

_COUNTER = itertools.count()


class Restorable:
    """Pickles to other bytes once it was unpickled, as a scikit-learn model can."""

    def __init__(self) -> None:
        self.weights = [1.0, 2.0]

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.restored = True


class Drifting:
    """Pickles to other bytes every time (a counter in its state): an untrustworthy hash."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Drifting._make, (next(_COUNTER),))

    @staticmethod
    def _make(_: int) -> Drifting:
        return Drifting()


def _digest(value: Any, refs: ResultDigests | None = None) -> str:
    codec, data = encode(value, what="x")
    return input_digest(value, codec, data, refs or ResultDigests()).value


def test_equal_inputs_in_any_order_have_one_digest() -> None:
    assert _digest({"lr": 0.1, "epochs": 3}) == _digest({"epochs": 3, "lr": 0.1})
    nested_a = {"opt": {"lr": 0.1, "betas": (0.9, 0.99)}, "tags": {"b", "a", "c"}, 1: "k"}
    nested_b = {1: "k", "tags": {"c", "a", "b"}, "opt": {"betas": (0.9, 0.99), "lr": 0.1}}
    assert _digest(nested_a) == _digest(nested_b)
    # different values and types still differ
    assert len({_digest(v) for v in (1, 1.0, True, "1", [1], (1,), {1}, None, b"1")}) == 9
    assert _digest({"lr": 0.1}) != _digest({"lr": 0.2})
    assert _digest(10**5000) != _digest(10**5000 + 1)  # huge ints hash without a digit limit
    assert _digest(np.arange(4.0)) != _digest(np.arange(4.0).reshape(2, 2))


def test_a_result_is_hashed_by_its_recorded_digest_and_forgotten_when_it_dies() -> None:
    refs = ResultDigests()
    model = Restorable()
    codec, data = encode(model, what="x")
    refs.remember(model, codec, data)
    assert refs.lookup(model) == digest(codec.encode() + data)
    assert _digest({"m": model}, refs) != _digest({"m": model})  # by reference, not re-pickled
    assert _digest([1, model], refs) == _digest([1, model], refs)
    del model
    assert not refs._refs  # weakly held: a discarded result is freed


def _completed(engine: TestEngine, run_id: str) -> int:
    rows = engine.journal.query(
        "SELECT count(*) FROM steps WHERE run_id = ? AND status = 'completed' AND NOT superseded",
        [run_id],
    )
    return int(rows[0][0])


def _start_until_journaled(engine: TestEngine, wf: Any, value: Any, completed: int) -> None:
    """Start ``wf`` as run "r" and return once ``completed`` of its steps are journaled."""
    engine.start(wf, value, run_id="r")
    wait_until(lambda: _completed(engine, "r") >= completed, what="steps journaled")


def _run_then_wait(act: Any, make_input: Callable[[], Any]) -> Any:
    """A workflow that runs ``act`` on ``make_input()`` (built as it runs, on replay too), then
    waits for the signal "go": the point where a test restarts the engine."""

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> Any:
        out = ctx.run(act, make_input())
        ctx.wait_for_signal("go")
        return out

    return wf


def _counted_train(calls: Counter[str]) -> Any:
    """An activity ``train`` that counts its executions in ``calls`` and returns its ``lr``."""

    @weft_nb.activity
    def train(params: dict[str, Any]) -> float:
        calls["train"] += 1
        return float(params["lr"])

    return train


def _crash_and_resume(
    engine: TestEngine, wf: Any, value: Any, completed: int
) -> tuple[Any, list[warnings.WarningMessage]]:
    """Run ``wf`` until ``completed`` steps are journaled and it waits; crash; resume to the end."""
    _start_until_journaled(engine, wf, value, completed)
    restarted = engine.simulate_restart()
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            restarted.signal("r", "go", None)
            result = restarted.resume("r").result(30)
        return result, list(seen)
    finally:
        restarted.close()


def test_a_replayed_result_that_pickles_differently_does_not_rerun_its_consumer(
    engine: TestEngine,
) -> None:
    calls: Counter[str] = Counter()

    @weft_nb.activity
    def make(_: object) -> Restorable:
        calls["make"] += 1
        return Restorable()

    @weft_nb.activity
    def use(inputs: dict[str, Any]) -> float:
        calls["use"] += 1
        return float(sum(inputs["model"].weights)) * inputs["scale"]

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> float:
        model = ctx.run(make)
        score = ctx.run(use, {"model": model, "scale": 2})
        ctx.wait_for_signal("go")
        return score

    result, seen = _crash_and_resume(engine, wf, None, completed=2)
    assert result == 6.0
    assert calls == Counter({"make": 1, "use": 1})  # base code: use ran twice
    assert not [w for w in seen if issubclass(w.category, StepChangedWarning)]


def test_the_run_input_is_hashed_by_its_recorded_encoding(engine: TestEngine) -> None:
    calls: Counter[str] = Counter()

    @weft_nb.activity
    def use(model: Restorable) -> float:
        calls["use"] += 1
        return float(sum(model.weights))

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, model: Restorable) -> float:
        score = ctx.run(use, model)
        ctx.wait_for_signal("go")
        return score

    result, _ = _crash_and_resume(engine, wf, Restorable(), completed=1)
    assert result == 3.0
    assert calls == Counter({"use": 1})  # base code: ran again after the restart


def test_dict_order_does_not_change_a_step_signature(engine: TestEngine) -> None:
    calls: Counter[str] = Counter()
    order = {"flip": False}

    @weft_nb.activity
    def train(params: dict[str, Any]) -> float:
        calls["train"] += 1
        return float(params["lr"] * params["epochs"])

    # e.g. params assembled from a widget, whose order changed between kernels
    wf = _run_then_wait(
        train, lambda: {"epochs": 3, "lr": 0.5} if order["flip"] else {"lr": 0.5, "epochs": 3}
    )

    _start_until_journaled(engine, wf, None, completed=1)
    restarted = engine.simulate_restart()
    order["flip"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error", StepChangedWarning)
        restarted.signal("r", "go", None)
        assert restarted.resume("r").result(30) == 1.5
    restarted.close()
    assert calls == Counter({"train": 1})  # base code: "its input changed", train ran again


def test_an_untrustworthy_input_hash_keeps_the_journaled_step_with_a_warning(
    engine: TestEngine,
) -> None:
    calls: Counter[str] = Counter()

    @weft_nb.activity
    def use(inputs: dict[str, Any]) -> int:
        calls["use"] += 1
        return 1

    wf = _run_then_wait(use, lambda: {"thing": Drifting()})

    result, seen = _crash_and_resume(engine, wf, None, completed=1)
    assert result == 1
    assert calls == Counter({"use": 1})  # base code: superseded and ran again, silently kept
    messages = [str(w.message) for w in seen if issubclass(w.category, StepChangedWarning)]
    assert len(messages) == 1
    assert "not reliable" in messages[0] and "Drifting" in messages[0]
    assert "step 0 ('use') of run 'r'" in messages[0]


def test_a_changed_plain_input_still_supersedes(engine: TestEngine) -> None:
    calls: Counter[str] = Counter()
    lr = {"value": 0.1}
    wf = _run_then_wait(_counted_train(calls), lambda: {"lr": lr["value"], "data": np.ones(3)})

    _start_until_journaled(engine, wf, None, completed=1)
    restarted = engine.simulate_restart()
    lr["value"] = 0.2
    restarted.signal("r", "go", None)
    with pytest.warns(StepChangedWarning, match="its input changed"):
        assert restarted.resume("r").result(30) == 0.2
    restarted.close()
    assert calls == Counter({"train": 2})


def test_a_journal_with_the_previous_hash_scheme_replays_without_superseding(
    journal_path: Path,
) -> None:
    calls: Counter[str] = Counter()
    train = _counted_train(calls)
    wf = _run_then_wait(train, lambda: {"lr": 0.5, "pair": (1, 2)})

    engine = TestEngine(journal_path)
    _start_until_journaled(engine, wf, None, completed=1)
    engine.close()
    # What the previous version wrote: digest(codec + encoding) of the input.
    codec, data = encode({"lr": 0.5, "pair": (1, 2)}, what="x")
    with duckdb.connect(str(journal_path)) as con:
        con.execute("UPDATE steps SET input_hash = ?", [digest(codec.encode() + data)])
    with TestEngine(journal_path) as engine, warnings.catch_warnings():
        warnings.simplefilter("error", StepChangedWarning)
        engine.register(train, wf)
        engine.signal("r", "go", None)
        assert engine.resume("r").result(30) == 0.5
    assert calls == Counter({"train": 1})


def test_the_demo_pipeline_does_not_rerun_evaluate_after_a_crash(engine: TestEngine) -> None:
    """notebooks/train_resume.ipynb's shape with a real scikit-learn model, which pickles to
    other bytes once unpickled: the chaos campaign's "completed step 2 ... ran again"."""
    sklearn_nn = pytest.importorskip("sklearn.neural_network")
    calls: Counter[str] = Counter()

    @weft_nb.activity
    def prepare(_: object) -> dict[str, Any]:
        calls["prepare"] += 1
        rng = np.random.default_rng(0)
        return {"X": rng.normal(size=(60, 4)), "y": np.arange(60) % 3}

    @weft_nb.activity
    def train(inputs: dict[str, Any]) -> Any:
        calls["train"] += 1
        model = sklearn_nn.MLPClassifier(hidden_layer_sizes=(8,), random_state=0, max_iter=5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning
            return model.fit(inputs["data"]["X"], inputs["data"]["y"])

    @weft_nb.activity
    def evaluate(inputs: dict[str, Any]) -> float:
        calls["evaluate"] += 1
        return float(inputs["model"].score(inputs["data"]["X"], inputs["data"]["y"]))

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> float:
        data = ctx.run(prepare)
        model = ctx.run(train, {"data": data, "epochs": 5, "lr": 0.001})
        score = ctx.run(evaluate, {"model": model, "data": data})
        ctx.wait_for_signal("go")
        return score

    result, seen = _crash_and_resume(engine, wf, None, completed=3)
    assert 0.0 <= result <= 1.0
    assert calls == Counter({"prepare": 1, "train": 1, "evaluate": 1})  # base: evaluate twice
    assert not [w for w in seen if issubclass(w.category, StepChangedWarning)]
