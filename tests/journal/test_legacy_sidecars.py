"""An older weft_nb's lock and step log beside a symlink's name survive the upgrade (issue 12).

Before the journal's files were keyed on the resolved file, an engine opened by ``link.duckdb``
(a symlink to ``data/real.duckdb``) kept ``link.duckdb.lock`` and ``link.duckdb.steplog``. After
the upgrade the same name leads to ``data/real.duckdb.steplog``: the older engine's acknowledged
steps were ignored (every one ran again, silently), and an older engine still running by that
name did not keep a newer one out. The older layout is made here from a real SIGKILLed writer
whose step log is moved to where an older version kept it.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import weft_nb
from weft_nb.errors import JournalLockedError
from weft_nb.journal import step_log as _step_log

MODULE = """
import os, signal
import weft_nb
from weft_nb.journal import step_log as _step_log

@weft_nb.activity
def legacy_step(i: int) -> int:
    with open(os.environ["LEGACY_RAN"], "a") as f:
        f.write(f"{i}\\n")
    if i == 2 and os.environ.get("LEGACY_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)  # dies in step 2; steps 0 and 1 are acknowledged
    return i

@weft_nb.workflow
def legacy_wf(ctx: weft_nb.WorkflowContext) -> list[int]:
    return [ctx.run(legacy_step, i) for i in range(3)]
"""
CHILD = (
    "import sys, weft_nb, legacy_mod; "
    "weft_nb.Engine(sys.argv[1]).run(legacy_mod.legacy_wf, run_id='r')"
)


def _workflow(tmp_path: Path) -> Any:
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module("legacy_mod").legacy_wf
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("legacy_mod", None)


def _old_layout(tmp_path: Path) -> tuple[Path, Path]:
    """A writer killed after two acknowledged steps, its files where an older weft_nb kept them."""
    (tmp_path / "data").mkdir()
    real, link, ran = tmp_path / "data" / "real.duckdb", tmp_path / "link.duckdb", tmp_path / "ran"
    (tmp_path / "legacy_mod.py").write_text(MODULE)
    env = {**os.environ, "LEGACY_RAN": str(ran), "LEGACY_KILL": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(real)], env=env, timeout=120, check=False
    )
    assert child.returncode == -9
    link.symlink_to(real)
    log = Path(str(real) + ".steplog")
    assert log.stat().st_size > 0  # the two acknowledged steps are only in the step log
    log.rename(str(link) + ".steplog")
    Path(str(real) + ".lock").rename(str(link) + ".lock")
    return link, ran


def test_an_older_writers_step_log_beside_a_symlink_is_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link, ran = _old_layout(tmp_path)
    monkeypatch.setenv("LEGACY_RAN", str(ran))
    with weft_nb.Engine(link) as engine:
        assert engine.run(_workflow(tmp_path), run_id="r") == [0, 1, 2]
    # Steps 0 and 1 ran once (before the kill); only step 2, which never finished, ran again.
    assert ran.read_text().split() == ["0", "1", "2", "2"]
    assert not Path(str(link) + ".steplog").exists()
    assert list(tmp_path.glob("link.duckdb.steplog.applied-*"))


def test_an_older_engine_holding_the_symlinks_lock_keeps_a_newer_one_out(tmp_path: Path) -> None:
    link, _ran = _old_layout(tmp_path)
    fd = os.open(str(link) + ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as an older engine running by the link
        with pytest.raises(JournalLockedError, match="older weft_nb"):
            weft_nb.Engine(link)
    finally:
        os.close(fd)
    with weft_nb.Engine(link):  # once it is gone, the journal opens
        pass


def test_a_hand_made_older_step_log_beside_a_symlink_is_applied_once(tmp_path: Path) -> None:
    """The older layout written byte by byte: one record, in ``link.duckdb.steplog``."""
    (tmp_path / "data").mkdir()
    real, link = tmp_path / "data" / "real.duckdb", tmp_path / "link.duckdb"
    weft_nb.Engine(real).close()
    link.symlink_to(real)
    row = ("r", 0, "legacy_step", "completed", "h", "s", 1, 1.0, 2.0, "json", b"7", None, None)
    Path(str(link) + ".steplog").write_bytes(_step_log.LOG_MAGIC + _step_log.encode_record(1, row))
    for _ in range(2):  # the second open finds it applied and renamed: nothing twice
        with weft_nb.Engine(link) as engine:
            rows = engine.journal.query("SELECT run_id, position, status FROM steps")
        assert rows == [("r", 0, "completed")]
    assert not Path(str(link) + ".steplog").exists()
    assert len(list(tmp_path.glob("link.duckdb.steplog.applied-*"))) == 1
    assert Path(str(real) + ".steplog").stat().st_size == 0
