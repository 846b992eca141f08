"""Journal ownership across processes, and journals that cannot be opened.

Ownership (see ``weft_nb/journal/file.py``): an engine holds a sidecar ``<journal>.lock`` with
``flock`` for its whole life, so a second engine, in this process or another, gets
``JournalLockedError`` at once, naming the file and the holder's PID. The kernel drops ``flock``
when the holder dies, even by SIGKILL, so a new engine opens the journal right away. The DuckDB
file itself is held only while runs are active (plus a short idle grace); while the owner is idle,
``DuckDBJournal(path, read_only=True)`` in another process reads the runs, writes nothing, and
does not stop the owner from writing again.

Every cross-process check uses a real child running ``tests/lock_holder.py``. Corrupt or foreign
files must raise ``JournalCorruptError`` naming the path and stay byte-for-byte untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import weft_nb
from weft_nb import Engine
from weft_nb.errors import JournalCorruptError, JournalError, JournalLockedError
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.protocol import RunRecord

HELPER = Path(__file__).resolve().parents[1] / "lock_holder.py"
REPO = HELPER.parent.parent
CHILD_TIMEOUT = 60.0  # generous: a child imports duckdb and pydantic before doing anything


# -- child processes -------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("WEFT_NB_KILL_AT", None)
    return env


class Child:
    """A running ``lock_holder.py`` with line-by-line JSON on stdout."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.stderr_path = tmp_path / f"child-{time.monotonic_ns()}.stderr"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=REPO,
            env=_child_env(),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_json(self, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no output from child in {timeout}s; {self.stderr()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    self.proc.wait(timeout=10)
                    raise AssertionError(
                        f"child exited ({self.proc.returncode}) without output; {self.stderr()}"
                    )
                return json.loads(line)  # type: ignore[no-any-return]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        self._stderr.flush()
        return "stderr:\n" + self.stderr_path.read_text()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    children: list[Child] = []

    def _spawn(*args: str) -> Child:
        child = Child(tmp_path, *args)
        children.append(child)
        return child

    yield _spawn
    for child in children:
        child.stop()


def run_child(tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run a one-shot child mode and return its (single) JSON outcome."""
    done = subprocess.run(
        [sys.executable, str(HELPER), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_child_env(),
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, f"child failed ({done.returncode}): {done.stderr}"
    assert lines, f"child printed nothing: {done.stderr}"
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- a tiny workflow for the in-process engine -----------------------------------------------

_GATE = threading.Event()


@weft_nb.activity
def add_one(x: int) -> int:
    return x + 1


@weft_nb.activity
def wait_for_gate(x: int) -> int:
    if not _GATE.wait(timeout=120):
        raise TimeoutError("the test never opened the gate")
    return x


@weft_nb.workflow
def quick(ctx: Any, x: int) -> int:
    return ctx.run(add_one, x)


@weft_nb.workflow
def gated(ctx: Any, x: int) -> int:
    return ctx.run(wait_for_gate, ctx.run(add_one, x))


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    _GATE.clear()
    yield _GATE
    _GATE.set()  # never leave a run thread blocked


def assert_refused_by_this_process(outcome: dict[str, Any], path: Path) -> None:
    """A child's outcome: ``JournalLockedError`` naming ``path`` and this process as the holder."""
    assert outcome["ok"] is False, outcome
    assert outcome["error_type"] == "JournalLockedError"
    assert outcome["holder_pid"] == os.getpid()
    assert str(os.getpid()) in outcome["message"]
    assert str(path) in outcome["message"]


# -- a second engine is refused at once ------------------------------------------------------


@pytest.mark.parametrize("active", [False, True], ids=["idle", "active-run"])
def test_second_process_gets_locked_error_naming_file_and_pid(
    tmp_path: Path, gate: threading.Event, active: bool
) -> None:
    path = tmp_path / "j.duckdb"
    with Engine(path) as engine:
        if active:
            handle = engine.start(gated, 1)
        outcome = run_child(tmp_path, "open", str(path))
        if active:
            gate.set()
            assert handle.result(timeout=60) == 2
    assert_refused_by_this_process(outcome, path)
    assert outcome["path"] == str(path)
    assert outcome["elapsed"] < 1.0, f"refusal took {outcome['elapsed']:.2f}s"


def test_second_engine_in_same_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.duckdb"
    first = Engine(path)
    try:
        started = time.monotonic()
        with pytest.raises(JournalLockedError) as caught:
            Engine(path)
        assert time.monotonic() - started < 1.0
        assert caught.value.holder_pid == os.getpid()
        assert str(os.getpid()) in str(caught.value)
        assert str(path) in str(caught.value)
        # The refused engine did not disturb the owner.
        assert first.run(quick, 1) == 2
    finally:
        first.close()
    with Engine(path) as again:
        assert [r.status for r in again.runs()] == ["completed"]


def test_a_closed_engine_hands_the_journal_over(tmp_path: Path, spawn: Any) -> None:
    path = tmp_path / "j.duckdb"
    holder = spawn("hold", str(path))
    assert holder.read_json()["ready"] is True
    with pytest.raises(JournalLockedError):
        Engine(path)
    holder.send("close")
    assert holder.read_json() == {"closed": True}
    with Engine(path) as engine:
        assert engine.runs() == []


# -- no stale lock after SIGKILL -------------------------------------------------------------


@pytest.mark.parametrize("active", [False, True], ids=["idle", "active-run"])
def test_sigkilled_holder_leaves_no_stale_lock(tmp_path: Path, spawn: Any, active: bool) -> None:
    path = tmp_path / "j.duckdb"
    holder = spawn("hold", str(path), *(["--active"] if active else []))
    ready = holder.read_json()
    assert ready == {"ready": True, "pid": holder.pid}, holder.stderr()

    with pytest.raises(JournalLockedError) as caught:
        Engine(path)
    assert caught.value.holder_pid == holder.pid
    assert str(holder.pid) in str(caught.value)

    os.kill(holder.pid, signal.SIGKILL)
    assert holder.proc.wait(timeout=30) == -signal.SIGKILL

    started = time.monotonic()
    engine = Engine(path)
    elapsed = time.monotonic() - started
    try:
        assert elapsed < 1.0, f"opening after the holder died took {elapsed:.2f}s"
        assert engine.journal.read_lock_holder()["pid"] == os.getpid()  # type: ignore[attr-defined]
        if active:
            # The killed holder's committed work is there, its run left unfinished.
            (info,) = engine.runs()
            assert (info.run_id, info.status) == ("held", "running")
            steps = engine.journal.load_steps("held")
            assert sorted(steps) == [0]
            assert steps[0].activity == "first_step"
    finally:
        engine.close()


# -- readers while the owner is idle ---------------------------------------------------------


def test_read_only_reader_in_another_process_while_fresh_owner_is_idle(tmp_path: Path) -> None:
    """An engine that has not run anything yet leaves the DuckDB file to readers at once."""
    path = tmp_path / "j.duckdb"
    _journal_with_runs(path, 2, 10)
    with Engine(path):
        seen = run_child(tmp_path, "read", str(path))
    assert seen["ok"] is True, seen
    assert seen["runs"] == [["run-0", "completed"], ["run-1", "completed"]]
    assert seen["write_error"] == "JournalReadOnlyError"  # a JournalError
    assert seen["elapsed"] < 5.0


def test_read_only_reader_in_another_process_after_a_run(tmp_path: Path, spawn: Any) -> None:
    """An idle owner (no active run) leaves the DuckDB file to readers after its idle grace.

    The reader sees the owner's runs and cannot write; while it keeps its read-only journal
    object, the owner can still run workflows, which the reader then sees too.
    """
    path = tmp_path / "j.duckdb"
    with Engine(path) as engine:
        assert engine.run(quick, 1, run_id="first") == 2
        reader = spawn("read", str(path), "--wait")
        seen = reader.read_json()
        assert seen["ok"] is True, seen
        assert seen["runs"] == [["first", "completed"]]
        assert seen["write_error"] == "JournalReadOnlyError"  # a JournalError

        assert engine.run(quick, 10, run_id="second") == 11
        assert [r.run_id for r in engine.runs()] == ["first", "second"]

        deadline = time.monotonic() + 10
        while True:  # the owner may still hold the file for its idle grace after the run
            reader.send("again")
            again = reader.read_json()
            if again["ok"] or time.monotonic() > deadline:
                break
        assert again["ok"] is True, again
        assert again["runs"] == [["first", "completed"], ["second", "completed"]]


def test_reader_is_refused_while_a_run_is_active(tmp_path: Path, gate: threading.Event) -> None:
    """While a run is active the owner holds the DuckDB file; a reader gets JournalLockedError
    naming the file and the owner's PID after its short wait.
    """
    path = tmp_path / "j.duckdb"
    with Engine(path) as engine:
        handle = engine.start(gated, 1, run_id="busy")
        refused = run_child(tmp_path, "read", str(path))
        gate.set()
        assert handle.result(timeout=60) == 2
    assert_refused_by_this_process(refused, path)
    assert refused["elapsed"] < 15.0


def test_acquire_nests_and_release_if_idle_frees_the_file(tmp_path: Path) -> None:
    """The DuckDB file is held while any acquire is outstanding; release_if_idle frees it."""
    path = tmp_path / "j.duckdb"
    journal = DuckDBJournal(path)
    try:
        assert run_child(tmp_path, "probe", str(path))["ok"] is True  # fresh and idle
        journal.acquire()
        journal.acquire()
        journal.create_run(
            RunRecord(
                run_id="r",
                workflow="wf",
                version="v",
                status="running",
                on_change="rerun",
                input_codec="json",
                input=b"1",
                created_at=1.0,
                updated_at=1.0,
            )
        )
        journal.release()
        assert journal.release_if_idle(0.0) is False
        held = run_child(tmp_path, "probe", str(path))
        assert held["ok"] is False
        assert "lock" in held["message"].lower()
        journal.release()
        assert journal.release_if_idle(0.0) is True
        assert run_child(tmp_path, "probe", str(path))["ok"] is True
        assert journal.get_run("r") is not None  # reopens on demand
    finally:
        journal.close()


def test_read_only_journal_refuses_writes_and_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "j.duckdb"
    with Engine(path) as engine:
        engine.run(quick, 1, run_id="r1")
    before = sha256(path)
    reader = DuckDBJournal(path, read_only=True)
    try:
        assert [r.run_id for r in reader.list_runs()] == ["r1"]
        with pytest.raises(JournalError):
            reader.set_run_status("r1", "failed", 2.0)
        assert reader.get_run("r1").status == "completed"  # type: ignore[union-attr]
    finally:
        reader.close()
    assert sha256(path) == before
    assert not os.path.exists(str(path) + ".wal")


def test_a_reader_takes_no_ownership(tmp_path: Path) -> None:
    path = tmp_path / "j.duckdb"
    with Engine(path) as engine:
        engine.run(quick, 1, run_id="r1")
    reader = DuckDBJournal(path, read_only=True)
    try:
        assert [r.run_id for r in reader.list_runs()] == ["r1"]
        with Engine(path) as engine:  # no sidecar lock taken by the reader
            assert engine.run(quick, 2, run_id="r2") == 3
    finally:
        reader.close()


def test_read_only_open_of_a_missing_journal_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "sub" / "missing.duckdb"
    with pytest.raises(JournalError, match="no journal"):
        DuckDBJournal(missing, read_only=True)
    assert not missing.parent.exists()


# -- corrupt, foreign and newer journals -----------------------------------------------------


def _journal_with_runs(path: Path, runs: int, input_size: int) -> None:
    """A real journal; inputs are incompressible (seeded) bytes, so the file grows with them."""
    rng = random.Random(1234)
    journal = DuckDBJournal(path)
    try:
        for i in range(runs):
            data = rng.randbytes(input_size)
            journal.create_run(
                RunRecord(
                    run_id=f"run-{i}",
                    workflow="wf",
                    version="v1",
                    status="completed",
                    on_change="rerun",
                    input_codec="pickle",
                    input=data,
                    created_at=i,
                    updated_at=i,
                )
            )
    finally:
        journal.close()


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(64 * 1024))


def _zeros_and_one_byte(path: Path) -> None:
    path.write_bytes(bytes(2048) + b"\x01" + bytes(2047))  # not an interrupted creation's stub


def _zeros_beyond_a_block(path: Path) -> None:
    path.write_bytes(bytes(256 * 1024 + 1))  # longer than any stub DuckDB leaves


def _foreign_duckdb(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE sales (id INTEGER, amount DOUBLE)")
    con.execute("INSERT INTO sales VALUES (1, 9.5), (2, 3.25)")
    con.close()


def _truncated(runs: int, input_size: int) -> Any:
    def make(path: Path) -> None:
        _journal_with_runs(path, runs, input_size)
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.truncate(size // 2)

    return make


CORRUPT_FILES = [
    pytest.param(_random_bytes, id="random-bytes"),
    pytest.param(_zeros_and_one_byte, id="zeros-and-one-byte"),
    pytest.param(_zeros_beyond_a_block, id="zeros-beyond-a-block"),
    pytest.param(_foreign_duckdb, id="foreign-duckdb"),
    pytest.param(_truncated(3, 10), id="truncated-small-journal"),
    pytest.param(_truncated(50, 20_000), id="truncated-large-journal"),
]

OPENERS = [
    pytest.param(Engine, id="engine"),
    pytest.param(DuckDBJournal, id="writer"),
    pytest.param(lambda p: DuckDBJournal(p, read_only=True), id="reader"),
]


def _open_and_close(opener: Any, path: Path) -> None:
    opener(path).close()


@pytest.mark.parametrize("opener", OPENERS)
@pytest.mark.parametrize("make_file", CORRUPT_FILES)
def test_corrupt_journal_is_refused_and_left_untouched(
    tmp_path: Path, make_file: Any, opener: Any
) -> None:
    path = tmp_path / "j.duckdb"
    make_file(path)
    before = sha256(path)
    size = path.stat().st_size
    for _ in range(2):  # a failed open must not leave the journal locked either
        with pytest.raises(JournalCorruptError) as caught:
            _open_and_close(opener, path)
        assert caught.value.path == str(path)
        assert str(path) in str(caught.value)
    assert path.stat().st_size == size
    assert sha256(path) == before


def test_newer_schema_version_is_a_clear_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "j.duckdb"
    _journal_with_runs(path, 2, 10)
    con = duckdb.connect(str(path))
    con.execute("UPDATE weft_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    before = sha256(path)
    for opener in (Engine, DuckDBJournal, lambda p: DuckDBJournal(p, read_only=True)):
        with pytest.raises(JournalError) as caught:
            opener(path)
        assert not isinstance(caught.value, (JournalLockedError, JournalCorruptError))
        message = str(caught.value)
        assert "schema version 99" in message
        assert str(path) in message
        assert caught.value.path == str(path)
    assert sha256(path) == before
