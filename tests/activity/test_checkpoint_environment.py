"""A checkpoint that needs what this process lacks stops the run; it never restarts the work.

An intact checkpoint can need a module (a package not installed here), a class (a notebook cell
not run again after a restart) or a device (PyTorch tensors saved on a GPU, loaded on a CPU-only
machine). Falling back to an older checkpoint, or to none, would silently restart the training;
instead ``CheckpointEnvironmentError`` says which checkpoint, what is missing and what to do, and
the run stops resumable. Damaged bytes are another matter: skipped with a warning (see
``test_checkpoint_store.py`` and ``test_checkpoint_checksums.py``), which these tests keep apart.

The module case is real: a child process that can import the module writes the checkpoint and
dies mid-step, and this process, which cannot, resumes the run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import CHECKPOINT_CHILD, load_checkpoint_child, run_status

from weft_nb import Engine
from weft_nb.activity.checkpoints import (
    CheckpointStore,
    missing_from_environment,
    recorded_checksum,
)
from weft_nb.base.clock import RealClock
from weft_nb.errors import CheckpointEnvironmentError, PayloadError
from weft_nb.journal.dispatch_log import CRASHED
from weft_nb.journal.duckdb_journal import DuckDBJournal

CHILD_PATH = CHECKPOINT_CHILD
ROOT = Path(__file__).resolve().parents[2]


child = load_checkpoint_child()


@pytest.fixture
def weights_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder holding the weights module; on ``sys.path`` only where a test puts it."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / f"{child.WEIGHTS_MODULE}.py").write_text(child.WEIGHTS_SOURCE)
    yield folder
    if str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.modules.pop(child.WEIGHTS_MODULE, None)


def checkpoint_files(journal: Path) -> dict[str, bytes]:
    root = Path(f"{journal}.checkpoints")
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.pkl")}


def test_a_checkpoint_whose_module_is_missing_stops_the_run_and_resumes_once_installed(
    tmp_path: Path, weights_dir: Path
) -> None:
    journal = tmp_path / "train.duckdb"
    died = subprocess.run(
        [sys.executable, str(CHILD_PATH), str(journal), str(weights_dir)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert died.returncode == child.DIED, died.stderr
    assert importlib.util.find_spec(child.WEIGHTS_MODULE) is None  # absent in this process
    written = checkpoint_files(journal)
    assert len(written) == 2  # epochs 1 and 2 (keep=2)
    reader = DuckDBJournal(journal, read_only=True)
    try:  # intact by checksum, so the unpickling error below is the environment's
        assert all(recorded_checksum(c.codec) for c in reader.checkpoints_of(child.RUN_ID, 0))
    finally:
        reader.close()

    for _ in range(3):  # running the notebook again (and again) before the fix changes nothing
        with Engine(journal) as engine, warnings.catch_warnings():
            warnings.simplefilter("error")  # no "falling back" warning: nothing is skipped
            with pytest.raises(CheckpointEnvironmentError) as caught:
                engine.run(child.training, child.EPOCHS, run_id=child.RUN_ID)
    error = caught.value
    assert isinstance(error, PayloadError)
    assert (error.missing, error.run_id, error.position) == ("module", child.RUN_ID, 0)
    assert error.path.endswith("00000002-a1.pkl")  # the newest, not an older fallback
    message = str(error)
    assert f"No module named '{child.WEIGHTS_MODULE}'" in message
    assert error.path in message and "install its package" in message
    assert "starts from this checkpoint" in message
    assert run_status(journal, child.RUN_ID) == "interrupted"  # not failed: resumable
    reader = DuckDBJournal(journal, read_only=True)
    try:  # only the crash counts as an attempt: stops for the environment spend no retries
        assert [a.error_type for a in reader.attempts_of(child.RUN_ID, 0)] == [CRASHED]
    finally:
        reader.close()
    assert checkpoint_files(journal) == written  # kept, byte for byte

    sys.path.insert(0, str(weights_dir))  # the package is installed now
    with Engine(journal) as engine:
        result = engine.run(child.training, child.EPOCHS, run_id=child.RUN_ID)
    assert result == {"resumed_from": 2, "epochs": child.EPOCHS}  # not from scratch
    assert run_status(journal, child.RUN_ID) == "completed"


_AVAILABLE_DEVICES = {"cpu"}


def _restore_on(device: str, values: list[float]) -> dict[str, Any]:
    """Unpickles like a PyTorch tensor does: refuses a device this process lacks."""
    if device not in _AVAILABLE_DEVICES:
        raise RuntimeError(
            f"Attempting to deserialize object on a {device.upper()} device but "
            f"torch.{device}.is_available() is False. If you are running on a CPU-only machine, "
            "please use torch.load with map_location=torch.device('cpu')"
        )
    return {"device": device, "values": values}


class OnDevice:
    """State that pickles with the device it lives on, as a CUDA tensor does."""

    def __init__(self, device: str, values: list[float]) -> None:
        self.device, self.values = device, values

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_on, (self.device, self.values))


class Garbled:
    """State whose unpickling fails with a RuntimeError that says nothing of devices."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_garbled, ())


def _garbled() -> None:
    raise RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CheckpointStore]:
    journal = DuckDBJournal(tmp_path / "j.duckdb")
    yield CheckpointStore(journal, RealClock(), keep=3)
    journal.close()


def test_a_checkpoint_saved_on_a_missing_device_raises_instead_of_falling_back(
    store: CheckpointStore,
) -> None:
    store.save("run", 0, 1, {"epoch": 1, "state": OnDevice("cpu", [1.0])})
    newest = store.save("run", 0, 1, {"epoch": 2, "state": OnDevice("cuda", [2.0])})
    with pytest.raises(CheckpointEnvironmentError, match="needs a device this machine lacks") as e:
        store.load_latest("run", 0)
    assert e.value.missing == "device"
    assert e.value.path == str(Path(store.root) / newest.path)
    assert "checkpoint CPU tensors" in str(e.value) and "CUDA device" in str(e.value)
    _AVAILABLE_DEVICES.add("cuda")  # the same checkpoint, where the device exists
    try:
        assert store.load_latest("run", 0)["epoch"] == 2
    finally:
        _AVAILABLE_DEVICES.discard("cuda")


def test_intact_bytes_stop_whatever_the_error_and_damage_does_not_hide_a_missing_device(
    store: CheckpointStore,
) -> None:
    store.save("run", 0, 1, {"epoch": 1})
    store.save("run", 0, 1, {"epoch": 2, "state": Garbled()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its checksum matches: not damage, whatever the error
        with pytest.raises(CheckpointEnvironmentError, match="PytorchStreamReader") as caught:
            store.load_latest("run", 0)
    assert caught.value.missing == "version"
    store.save("run", 1, 1, {"epoch": 1, "state": OnDevice("cuda", [1.0])})
    damaged = store.save("run", 1, 1, {"epoch": 2})
    (Path(store.root) / damaged.path).write_bytes(b"\x00" * damaged.size)
    with pytest.warns(RuntimeWarning, match="falling back"):
        with pytest.raises(CheckpointEnvironmentError, match="device"):
            store.load_latest("run", 1)  # never None: that would restart from scratch


@pytest.mark.parametrize(
    ("error", "missing"),
    [
        (ModuleNotFoundError("No module named 'torch'", name="torch"), "module"),
        (ImportError("cannot import name 'Net' from 'models'"), "module"),
        (AttributeError("Can't get attribute 'Net' on <module '__main__'>"), "class"),
        (RuntimeError("Attempting to deserialize object on CUDA device 1"), "device"),
        (RuntimeError("PytorchStreamReader failed reading zip archive"), None),
        (EOFError("Ran out of input"), None),
        (ValueError("size 3 != recorded 9"), None),
    ],
)
def test_what_an_unpickling_error_says_is_missing(error: Exception, missing: str | None) -> None:
    assert missing_from_environment(error) == missing
