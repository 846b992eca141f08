"""A checksum tells a damaged checkpoint from one this process cannot read (review 18, finding 5).

Each checkpoint row records a checksum of its file's bytes (the crc32; the sha256 in rows written
before it, which still load and are still checked). Bytes that fail it are damage: the
previous checkpoint is used, with a warning. Intact bytes that fail to unpickle, for any reason
(a module or class missing, a constructor that changed, a package upgrade), stop the step with
``CheckpointEnvironmentError``: falling back would silently restart the training. Rows written
before checksums still load, told apart by the old heuristic. An activity or workflow that
catches that error and raises its own fails like any other error; only the error itself stops
the run as interrupted.

The changed-constructor case is real: a child process, with version 1 of a class, checkpoints
and dies mid-step; this process, with version 2, resumes the run.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import CHECKPOINT_CHILD, load_checkpoint_child, run_status

import weft_nb
from weft_nb import Engine
from weft_nb.activity.checkpoints import CheckpointStore, recorded_checksum, recorded_sha256
from weft_nb.activity.restore import CHECKSUMMED, CRC32
from weft_nb.base.clock import RealClock
from weft_nb.errors import CheckpointEnvironmentError
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.protocol import CheckpointRecord

CHILD_PATH = CHECKPOINT_CHILD
ROOT = Path(__file__).resolve().parents[2]
SCRATCH = "weft_test_checksum_state"  # a module of this test process only

# The child's Weights, rebuilt through its constructor (as many library classes are)...
WEIGHTS_V1 = (
    "class Weights:\n"
    "    def __init__(self, epoch):\n        self.epoch = epoch\n"
    "    def __reduce__(self):\n        return (Weights, (self.epoch,))\n"
)
# ...whose constructor then gains a required parameter...
WEIGHTS_V2 = WEIGHTS_V1.replace("(self, epoch)", "(self, epoch, optimizer)")
# ...and is fixed to accept the old state again.
WEIGHTS_V3 = WEIGHTS_V1.replace("(self, epoch)", "(self, epoch, optimizer=None)")


child = load_checkpoint_child()


@pytest.fixture
def weights_version(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``install(source)``: make ``source`` the importable weights module of this process."""
    installed: list[str] = []
    versions = iter(range(1, 100))

    def install(source: str) -> Path:
        folder = tmp_path / f"site{next(versions)}"
        folder.mkdir()
        (folder / f"{child.WEIGHTS_MODULE}.py").write_text(source)
        for old in installed:
            sys.path.remove(old)
        installed[:] = [str(folder)]
        sys.path.insert(0, str(folder))
        sys.modules.pop(child.WEIGHTS_MODULE, None)
        return folder

    yield install
    for old in installed:
        sys.path.remove(old)
    sys.modules.pop(child.WEIGHTS_MODULE, None)


@pytest.fixture
def scratch() -> Iterator[types.ModuleType]:
    """A module whose ``State`` class the tests define and redefine."""
    module = types.ModuleType(SCRATCH)
    sys.modules[SCRATCH] = module
    yield module
    del sys.modules[SCRATCH]


def define_state(module: types.ModuleType, init: str = "(self, epoch)") -> type:
    exec(  # a class of the scratch module, as a notebook cell defines it
        f"class State:\n    def __init__{init}:\n        self.epoch = epoch\n"
        "    def __reduce__(self):\n        return (State, (self.epoch,))\n",
        module.__dict__,
    )
    state_class: type = module.State
    return state_class


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CheckpointStore]:
    journal = DuckDBJournal(tmp_path / "j.duckdb")
    yield CheckpointStore(journal, RealClock(), keep=3)
    journal.close()


def test_a_byte_flip_in_a_pickled_class_name_is_damage_and_falls_back(
    store: CheckpointStore, scratch: types.ModuleType
) -> None:
    state = define_state(scratch)
    store.save("run", 0, 1, {"epoch": 1, "state": state(1)})
    newest = store.save("run", 0, 1, {"epoch": 2, "state": state(2)})
    assert newest.codec.startswith(CRC32)
    path = Path(store.root) / newest.path
    good = path.read_bytes()
    path.write_bytes(good.replace(b"State", b"Stbte"))  # same size: only the checksum sees it
    assert path.stat().st_size == newest.size
    with pytest.warns(RuntimeWarning, match="unreadable.*crc32.*falling back"):
        loaded = store.load_latest("run", 0)
    assert loaded["epoch"] == 1  # the older, intact one; not a stop, not None


def test_a_truncated_checkpoint_is_damage(
    store: CheckpointStore, scratch: types.ModuleType
) -> None:
    state = define_state(scratch)
    store.save("run", 0, 1, {"epoch": 1, "state": state(1)})
    newest = store.save("run", 0, 1, {"epoch": 2, "state": state(2)})
    path = Path(store.root) / newest.path
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.warns(RuntimeWarning, match="unreadable.*falling back"):
        assert store.load_latest("run", 0)["epoch"] == 1


def test_intact_bytes_that_fail_for_any_reason_stop_instead_of_falling_back(
    store: CheckpointStore, scratch: types.ModuleType
) -> None:
    state = define_state(scratch)
    store.save("run", 0, 1, {"epoch": 1, "state": state(1)})
    newest = store.save("run", 0, 1, {"epoch": 2, "state": state(2)})
    define_state(scratch, "(self, epoch, optimizer)")  # the cell was edited: a new parameter
    with pytest.raises(CheckpointEnvironmentError, match="class or package version") as caught:
        store.load_latest("run", 0)
    assert caught.value.missing == "version"
    assert caught.value.path == str(Path(store.root) / newest.path)
    assert "TypeError" in caught.value.cause and "optimizer" in caught.value.cause
    del scratch.State  # a kernel restart before the cell ran again: the class is missing
    with pytest.raises(CheckpointEnvironmentError, match="run the cell") as caught:
        store.load_latest("run", 0)
    assert caught.value.missing == "class"
    define_state(scratch)
    assert store.load_latest("run", 0)["epoch"] == 2


def test_a_constructor_that_changed_stops_the_run_and_resumes_once_fixed(
    tmp_path: Path, weights_version: Callable[[str], Path]
) -> None:
    install = weights_version
    journal = tmp_path / "train.duckdb"
    v1 = install(WEIGHTS_V1)
    died = subprocess.run(
        [sys.executable, str(CHILD_PATH), str(journal), str(v1)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert died.returncode == child.DIED, died.stderr

    install(WEIGHTS_V2)
    with Engine(journal) as engine:
        with pytest.raises(CheckpointEnvironmentError) as caught:
            engine.run(child.training, child.EPOCHS, run_id=child.RUN_ID)
    assert caught.value.missing == "version"
    assert caught.value.path.endswith("00000002-a1.pkl")  # the newest; no older one was tried
    message = str(caught.value)
    assert "missing 1 required positional argument: 'optimizer'" in message
    assert "restore that version" in message and "starts from this checkpoint" in message
    assert run_status(journal, child.RUN_ID) == "interrupted"  # kept resumable, not restarted

    install(WEIGHTS_V3)
    with Engine(journal) as engine:
        result = engine.run(child.training, child.EPOCHS, run_id=child.RUN_ID)
    assert result == {"resumed_from": 2, "epochs": child.EPOCHS}
    assert run_status(journal, child.RUN_ID) == "completed"


def write_old_format(
    store: CheckpointStore, seq: int, state: object, *, sha256: bool = False
) -> str:
    """A checkpoint as an older weft_nb wrote it: a plain pickle, with the codec ``pickle``
    (before checksums) or, with ``sha256``, ``pickle+sha256:<hex>`` (before the crc32)."""
    relative = os.path.join("run", "0", f"{seq:08d}-a1.pkl")
    path = Path(store.root) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pickle.dumps(state, protocol=5)
    path.write_bytes(data)
    store.journal.add_checkpoint(
        CheckpointRecord(
            run_id="run",
            position=0,
            attempt=1,
            seq=seq,
            created_at=float(seq),
            path=relative,
            size=path.stat().st_size,
            codec=CHECKSUMMED + hashlib.sha256(data).hexdigest() if sha256 else "pickle",
        ),
        store.keep,
    )
    return str(path)


def test_an_old_checkpoint_without_a_checksum_still_loads_by_the_old_rules(
    store: CheckpointStore, scratch: types.ModuleType
) -> None:
    state = define_state(scratch)
    write_old_format(store, 1, {"epoch": 1})
    assert store.load_latest("run", 0) == {"epoch": 1}
    newest = write_old_format(store, 2, {"epoch": 2, "state": state(2)})
    del scratch.State  # intact by the old rules: the class is missing
    with pytest.raises(CheckpointEnvironmentError, match="run the cell"):
        store.load_latest("run", 0)
    define_state(scratch, "(self, epoch, optimizer)")  # without a checksum, taken for damage
    with pytest.warns(RuntimeWarning, match=f"{newest}.*TypeError.*falling back"):
        assert store.load_latest("run", 0) == {"epoch": 1}
    new = store.save("run", 0, 1, {"epoch": 3})  # a new checkpoint beside them has a checksum
    assert recorded_checksum(new.codec) is not None and new.seq == 3
    assert store.load_latest("run", 0) == {"epoch": 3}


def test_a_sha256_checkpoint_of_an_older_version_loads_and_its_damage_is_still_found(
    store: CheckpointStore, scratch: types.ModuleType
) -> None:
    state = define_state(scratch)
    write_old_format(store, 1, {"epoch": 1}, sha256=True)
    newest = write_old_format(store, 2, {"epoch": 2, "state": state(2)}, sha256=True)
    assert recorded_sha256(store.records("run", 0)[0].codec) is not None
    assert store.load_latest("run", 0)["epoch"] == 2
    define_state(scratch, "(self, epoch, optimizer)")  # intact by its sha256: the code differs
    with pytest.raises(CheckpointEnvironmentError, match="class or package version"):
        store.load_latest("run", 0)
    define_state(scratch)
    good = Path(newest).read_bytes()
    Path(newest).write_bytes(good.replace(b"State", b"Stbte"))  # same size: only sha256 sees it
    with pytest.warns(RuntimeWarning, match="unreadable.*sha256.*falling back"):
        assert store.load_latest("run", 0) == {"epoch": 1}


@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_one_flipped_bit_anywhere_in_a_crc32_checkpoint_is_damage(
    store: CheckpointStore, where: float
) -> None:
    store.save("run", 0, 1, {"epoch": 1})
    newest = store.save("run", 0, 1, {"epoch": 2, "blob": bytes(range(256)) * 64})
    path = Path(store.root) / newest.path
    data = bytearray(path.read_bytes())
    data[int(where * len(data))] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="unreadable.*crc32.*falling back"):
        assert store.load_latest("run", 0) == {"epoch": 1}


@weft_nb.activity(retry={"max_attempts": 1})
def gives_up(_: object, activity: weft_nb.ActivityContext) -> int:
    """Handles an unreadable checkpoint by raising an error of its own."""
    try:
        state = activity.last_checkpoint
    except CheckpointEnvironmentError as exc:
        raise ValueError("cannot resume this model") from exc
    return int(state["epoch"])


@weft_nb.activity(retry={"max_attempts": 1})
def reads(_: object, activity: weft_nb.ActivityContext) -> int:
    """Reads the checkpoint without handling its error."""
    return int(activity.last_checkpoint["epoch"])


@weft_nb.workflow
def activity_handles(ctx: weft_nb.WorkflowContext) -> int:
    result: int = ctx.run(gives_up, None)
    return result


@weft_nb.workflow
def workflow_handles(ctx: weft_nb.WorkflowContext) -> int:
    try:
        result: int = ctx.run(reads, None)
    except CheckpointEnvironmentError:
        raise LookupError("no usable checkpoint") from None
    return result


@pytest.mark.parametrize(
    ("workflow", "raised"),
    [(activity_handles, ValueError), (workflow_handles, LookupError)],
    ids=["activity", "workflow"],
)
def test_an_error_raised_while_handling_it_fails_the_run_instead_of_interrupting(
    tmp_path: Path, scratch: types.ModuleType, workflow: Any, raised: type[Exception]
) -> None:
    journal = tmp_path / "j.duckdb"
    state = define_state(scratch)
    with Engine(journal) as engine:
        engine.checkpoints.save("r", 0, 1, {"epoch": 1, "state": state(1)})  # an earlier attempt
        define_state(scratch, "(self, epoch, optimizer)")
        with pytest.raises(Exception) as caught:
            engine.run(workflow, run_id="r")
    assert run_status(journal, "r") == "failed"
    assert raised.__name__ in f"{type(caught.value).__name__}: {caught.value}"
