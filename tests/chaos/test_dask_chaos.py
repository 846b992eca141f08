"""The Dask chaos sweep, run briefly: a real LocalCluster whose worker processes are SIGKILLed.

40 short ``ctx.submit`` trials (4 epochs, a checkpoint after each) on 2 workers; the killer
waits for evidence that a trial is past a checkpoint before it kills that trial's worker, and for
the nanny's replacement before the next kill. Nothing here sleeps to let a race settle: the
sweep's own invariants (`weft_nb.chaos.dask_sweep`) are what is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weft_nb import chaos
from weft_nb.chaos.dask_trial import check_sweep, expected_value

pytestmark = pytest.mark.crash

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")


@pytest.mark.timeout(600)
def test_a_dask_sweep_with_sigkilled_workers_loses_nothing_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures_path = tmp_path / "figures.json"
    options = {
        "--executor": "dask",
        "--trials": "40",
        "--workers": "2",
        "--kills": "3",
        "--epochs": "4",
        "--epoch-seconds": "0.2",
        "--seed": "20261202",
        "--deadline": "400",
        "--workdir": str(tmp_path / "sweep"),
        "--json": str(figures_path),
    }
    status = chaos.main([word for pair in options.items() for word in pair])
    output = capsys.readouterr()
    figures = json.loads(figures_path.read_text())
    assert figures["problems"] == [], output
    assert status == 0
    assert (figures["trials"], figures["completed"]) == (40, 40)
    assert (figures["lost"], figures["run_twice"], figures["wrong_results"]) == (0, 0, 0)
    assert figures["workers_killed"] >= 1
    assert figures["attempts_lost_with_worker"] >= 1  # a kill became a retry, not a failure
    assert figures["resumed_on_another_worker"] >= 1  # from its newest checkpoint (problems)
    assert figures["resumed_from_older_checkpoint"] == 0


def test_the_checks_catch_a_lost_a_twice_run_and_a_restarted_trial() -> None:
    """The evidence checks themselves: each invariant they guard is seen broken."""

    def begin(trial: int, t: float, pid: int, from_epoch: int) -> dict[str, object]:
        return {"event": "begin", "trial": trial, "t": t, "pid": pid, "from_epoch": from_epoch}

    events = [
        begin(0, 1.0, 10, 0),
        {"event": "checkpoint", "trial": 0, "t": 1.5, "pid": 10, "epoch": 1},
        begin(0, 2.0, 11, 0),  # restarted from zero after a durable checkpoint
        begin(1, 1.0, 10, 0),
        begin(1, 9.0, 12, 0),  # began again after it was journaled complete
    ]
    steps = [(0, "completed", 3.0), (1, "completed", 5.0)]  # trial 2 never completed: lost
    results = [{"trial": 0, "value": expected_value(0, 2)}, {"trial": 1, "value": -1}]
    figures = check_sweep(events, steps, results, trials=3, epochs=2)
    assert figures.lost == [2]
    assert figures.run_twice == [1]
    assert figures.resumed_from_older_checkpoint == [0]
    assert figures.wrong_result == [1]
    assert figures.resumed_from_checkpoint == 0
