"""The fault-injection harness, run briefly: real kernels, real kills, invariants checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from weft_nb import chaos

pytestmark = pytest.mark.crash

HERE = Path(__file__).parent


def test_a_short_seeded_campaign_keeps_every_invariant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures_path = tmp_path / "figures.json"
    status = chaos.main(
        [str(HERE / "training.ipynb"), "--trials", "5", "--seed", "3", "--json", str(figures_path)]
    )
    figures = json.loads(figures_path.read_text())
    assert status == 0, capsys.readouterr()
    assert figures["trials"] == 5
    assert figures["kills"] + figures["interrupts"] >= 4
    assert figures["resumes"] >= 4
    assert (figures["lost_steps"], figures["duplicated_steps"]) == (0, 0)
    assert figures["failed_trials"] == []


def test_each_fault_kind_can_be_injected(tmp_path: Path) -> None:
    harness = chaos.Harness(HERE / "training.ipynb", tmp_path, seed=11)
    harness.run_reference()
    assert set(harness.applicable_faults()) == set(chaos.FAULTS)
    kinds = {e["event"] for e in harness.reference_events}
    assert {"attempt_start", "step_completed", "checkpoint_saved", "backoff"} <= kinds


def test_a_broken_invariant_fails_the_run_and_names_the_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # This notebook's result contains a random token: a resumed run can never match the reference.
    status = chaos.main(
        [
            str(HERE / "nondeterministic.ipynb"),
            "--trials",
            "1",
            "--seed",
            "2",
            "--workdir",
            str(tmp_path / "work"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert "INVARIANT BROKEN in trial 0 (replay: --seed 2 --only-trial 0)" in err
    assert "final results differ" in err


def test_storage_faults_keep_the_invariants(tmp_path: Path) -> None:
    # Seed 5: one trial damages the step log, the other injects a disk fault at a write site.
    figures_path = tmp_path / "figures.json"
    status = chaos.main(
        [
            str(HERE / "training.ipynb"),
            "--trials",
            "2",
            "--seed",
            "5",
            "--faults",
            "enospc,damage",
            "--json",
            str(figures_path),
        ]
    )
    figures = json.loads(figures_path.read_text())
    assert status == 0, figures["failed_trials"]
    injected = figures["storage_faults_injected"]
    assert {f["fault"] for f in injected} == {"enospc", "damage"}
    # A fault armed at a visit that never came proves nothing: each one must have been reached.
    assert all(f["fired"] for f in injected), injected
    assert (figures["lost_steps"], figures["duplicated_steps"]) == (0, 0)


def test_trials_keep_their_journals_when_the_command_line_names_the_notebook(
    tmp_path: Path,
) -> None:
    """``python -m weft_nb.chaos training.ipynb`` as a user types it, twice.

    The kernels see the harness's command line (their runner) naming the original notebook; each
    must still journal in its own trial folder, never beside the original: a journal there would
    be shared by every trial (a killed trial's lock blocking the next) and replayed by the next
    campaign's reference run, which would then run no activity at all.
    """
    shutil.copy(HERE / "training.ipynb", tmp_path / "training.ipynb")
    command = [sys.executable, "-m", "weft_nb.chaos", "training.ipynb", "--trials", "1"]
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    for seed in ("7", "8"):
        done = subprocess.run(
            [*command, "--seed", seed],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:]
    assert not (tmp_path / ".weft").exists()
