"""The ``weft-nb`` command line, run as real subprocesses (``python -m weft_nb ...``).

Journals are built in this process with a ``TestEngine`` and closed before the CLI runs, except
where a real child process ("the kernel", ``KERNEL`` below) holds the journal: then write commands
must reach it through its REST endpoint (found in ``<journal>.endpoint.json``), or, without one,
fail naming the holder. Every wait polls with a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from helpers import wait_until

import weft_nb
from weft_nb.errors import ActivityFailedError
from weft_nb.testing import TestEngine

REPO = Path(__file__).resolve().parents[2]
TOKEN_REVIEW = "async-act:v1:review:0:1"
TOKEN_REJECT = "async-act:v1:reject:0:1"
DEADLINE = 60.0  # generous: a child imports duckdb and pydantic before doing anything


# -- the workflows the journals hold --------------------------------------------------------------


@weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": 0.01})
def flaky(x: int, activity: weft_nb.ActivityContext) -> dict[str, int]:
    activity.heartbeat({"epoch": activity.attempt, "loss": 0.5 / activity.attempt})
    activity.checkpoint({"epoch": activity.attempt})
    if activity.attempt == 1:
        raise ValueError("boom on the first try")
    return {"ok": x}


@weft_nb.activity(retry={"max_attempts": 1})
def broken(x: int) -> int:
    raise RuntimeError(f"cannot do {x}")


@weft_nb.activity
def ask(_: object, activity: weft_nb.ActivityContext) -> None:
    assert activity.task_token  # journaled before the step parks
    activity.complete_async()


@weft_nb.workflow
def good(ctx: weft_nb.WorkflowContext, x: int) -> Any:
    pair = ctx.memo("pair", lambda: (x, x))  # a tuple: stored with the pickle codec
    return {"flaky": ctx.run(flaky, x), "pair": list(pair)}


@weft_nb.workflow
def bad(ctx: weft_nb.WorkflowContext, x: int) -> Any:
    return ctx.run(broken, x)


@weft_nb.workflow
def review(ctx: weft_nb.WorkflowContext) -> Any:
    return ctx.run(ask)


@weft_nb.workflow
def reject(ctx: weft_nb.WorkflowContext) -> Any:
    try:
        return ctx.run(ask)
    except ActivityFailedError as exc:
        return {"failed": exc.cause_message}


@weft_nb.workflow
def gate(ctx: weft_nb.WorkflowContext) -> Any:
    return ctx.wait_for_signal("go")


ALL = (flaky, broken, ask, good, bad, review, reject, gate)


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """A closed journal: a completed run, a failed one, two parked on tokens, one on a signal."""
    path = tmp_path / "journal.duckdb"
    with TestEngine(path, heartbeat_interval=0.01) as engine:
        assert engine.run(good, 3, run_id="good-1") == {"flaky": {"ok": 3}, "pair": [3, 3]}
        with pytest.raises(ActivityFailedError):
            engine.run(bad, 7, run_id="bad-1")
        engine.start(review, run_id="review")
        engine.start(reject, run_id="reject")
        engine.start(gate, run_id="gate")
        wait_until(
            lambda: (
                engine.journal.pending_async_tokens("review")
                and engine.journal.pending_async_tokens("reject")
            ),
            timeout=DEADLINE,
            what="the parked tokens",
        )
    return path


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("WEFT_NB_KILL_AT", None)
    env.pop("WEFT_NB_DEBUG", None)
    return env


def cli(
    journal: Path | None, *args: str, timeout: float = DEADLINE
) -> subprocess.CompletedProcess[str]:
    where = ["--journal", str(journal)] if journal is not None else []
    return subprocess.run(
        [sys.executable, "-m", "weft_nb", *where, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=REPO,
        env=child_env(),
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stdout


def refused(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    return done.stderr


def held(journal: Path) -> bool:
    """Whether a process has the DuckDB file open right now (one try)."""
    try:
        duckdb.connect(str(journal), read_only=True).close()
    except duckdb.Error as exc:
        if "lock" not in str(exc).lower():
            raise
        return True
    return False


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- read commands ---------------------------------------------------------------------------------


def test_runs_lists_every_run_and_filters_by_status(journal: Path) -> None:
    out = ok(cli(journal, "runs"))
    lines = out.splitlines()
    assert lines[0].split() == [
        "RUN",
        "WORKFLOW",
        "VERSION",
        "STATUS",
        "STEPS",
        "STARTED",
        "TOOK",
        "PARENT",
    ]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"good-1", "bad-1", "review", "reject", "gate"}
    assert rows["good-1"][1:5] == ["good", "1", "completed", "2"]  # the memo and the flaky step
    assert rows["bad-1"][3] == "failed"
    assert rows["gate"][3] == "running"

    failed = ok(cli(journal, "runs", "--status", "failed")).splitlines()[2:]
    assert [line.split()[0] for line in failed] == ["bad-1"]
    assert "no runs with status cancelled" in ok(cli(journal, "runs", "--status", "cancelled"))
    # --journal after the command works too
    assert "good-1" in ok(cli(None, "runs", "--journal", str(journal)))


def test_show_gives_steps_attempts_durations_errors_and_the_latest_heartbeat(
    journal: Path,
) -> None:
    out = ok(cli(journal, "show", "good-1"))
    assert "run good-1: workflow good (version 1)" in out
    assert "status    completed" in out
    assert '"flaky": {"ok": 3}' in out  # the run's result, decoded
    step = next(line for line in out.splitlines() if line.split()[:2] == ["1", "flaky"])
    assert step.split()[2:4] == ["completed", "2"]
    assert step.split()[-1].endswith("s")  # its duration
    assert "attempt 1 failed after" in out
    assert "ValueError: boom on the first try" in out
    assert "latest heartbeat (attempt 2, beat 1" in out and '{"epoch": 2, "loss": 0.25}' in out
    assert "checkpoint 2 (attempt 2" in out and "2 kept" in out

    failed = ok(cli(journal, "show", "bad-1"))
    assert "status    failed" in failed
    assert "RuntimeError: cannot do 7" in failed
    assert "error     ActivityFailedError:" in failed

    parked = ok(cli(journal, "show", "review"))
    assert "waiting" in parked
    assert f"waiting for completion: token {TOKEN_REVIEW}" in parked

    assert "no run 'missing' in journal" in refused(cli(journal, "show", "missing"))


def test_sql_prints_a_table_csv_or_json_and_runs_only_read_queries(journal: Path) -> None:
    query = "SELECT run_id, status, input FROM runs WHERE run_id LIKE '%-1' ORDER BY run_id"
    table = ok(cli(journal, "sql", query)).splitlines()
    assert table[0].split() == ["run_id", "status", "input"]
    assert table[2].split() == ["bad-1", "failed", "<1", "bytes>"]  # a BLOB is described
    assert table[-1] == "(2 rows)"

    csv_out = ok(
        cli(
            journal,
            "sql",
            "SELECT run_id, NULL AS n FROM runs ORDER BY run_id LIMIT 1",
            "--format",
            "csv",
        )
    )
    assert csv_out == "run_id,n\nbad-1,\n"

    rows = json.loads(
        ok(
            cli(
                journal,
                "sql",
                "WITH r AS (SELECT * FROM runs) "
                "SELECT run_id, decode(result)::JSON AS result FROM r "
                "WHERE run_id = 'good-1'",
                "--format",
                "json",
            )
        )
    )
    assert rows == [{"run_id": "good-1", "result": '{"flaky":{"ok":3},"pair":[3,3]}'}]

    assert "Seq Scan" in ok(cli(journal, "sql", "EXPLAIN SELECT * FROM runs"))

    before = snapshot(journal.parent)
    for statement in ("DELETE FROM runs", "SELECT 1; DROP TABLE runs", "UPDATE runs SET x = 1"):
        message = refused(cli(journal, "sql", statement))
        assert "only read-only queries" in message
    assert "does not parse" in refused(cli(journal, "sql", "SELEC oops"))
    assert "the query failed" in refused(cli(journal, "sql", "SELECT nope FROM runs"))
    assert snapshot(journal.parent) == before


def test_export_writes_the_whole_run_with_payloads_decoded_or_described(
    journal: Path, tmp_path: Path
) -> None:
    target = tmp_path / "good.json"
    out = ok(cli(journal, "export", "good-1", "--to", str(target)))
    assert f"to {target}" in out
    document = json.loads(target.read_text())
    run = document["run"]
    assert run["run_id"] == "good-1" and run["status"] == "completed"
    assert run["input"] == {"codec": "json", "size": 1, "value": 3}
    assert run["result"]["value"] == {"flaky": {"ok": 3}, "pair": [3, 3]}
    steps = {s["position"]: s for s in document["steps"]}
    assert steps[0]["activity"] == "<memo>"
    assert steps[0]["result"]["codec"] == "pickle"  # described, never unpickled
    assert "value" not in steps[0]["result"] and steps[0]["result"]["size"] > 0
    assert steps[1]["result"]["value"] == {"ok": 3}
    assert [a["error_message"] for a in document["attempts"]] == ["boom on the first try"]
    assert [h["details"]["value"]["epoch"] for h in document["heartbeats"]] == [1, 2]
    assert len(document["checkpoints"]) == 2
    assert isinstance(document["events"], list)

    failed = json.loads(ok(cli(journal, "export", "bad-1", "--to", "-")))
    assert failed["run"]["error"]["class"] == "ActivityFailedError"
    assert failed["steps"][0]["error"]["fields"]["cause_message"] == "cannot do 7"

    assert "no run 'nope'" in refused(cli(journal, "export", "nope", "--to", str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()


# -- check -----------------------------------------------------------------------------------------


def checkpoint_files(journal: Path) -> list[Path]:
    return sorted((journal.parent / "journal.duckdb.checkpoints").rglob("*.pkl"))


def test_check_reports_a_clean_journal(journal: Path) -> None:
    out = ok(cli(journal, "check"))
    assert out.splitlines()[-1] == "clean"
    assert "schema version 1" in out
    assert "2 checkpoint file(s) present with their recorded sizes" in out
    assert "FAIL" not in out


@pytest.mark.parametrize("damage", ["deleted", "resized", "tmp-file", "stray-file"])
def test_check_finds_damaged_checkpoint_files(journal: Path, damage: str) -> None:
    files = checkpoint_files(journal)
    assert len(files) == 2
    if damage == "deleted":
        files[0].unlink()
        expected = f"{files[0]} is missing"
    elif damage == "resized":
        files[1].write_bytes(files[1].read_bytes() + b"x")
        expected = "recorded"
    elif damage == "tmp-file":
        (files[0].parent / ".tmp-0123abcd").write_bytes(b"half")
        expected = "a checkpoint write that never finished"
    else:
        (files[0].parent / "00000099-a9.pkl").write_bytes(b"stray")
        expected = "no journal row names it"
    done = cli(journal, "check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert expected in done.stdout
    assert "FAIL" in done.stdout
    assert done.stdout.splitlines()[-1] == "1 problem(s) found"


def test_check_refuses_a_truncated_or_foreign_journal(journal: Path, tmp_path: Path) -> None:
    size = journal.stat().st_size
    with open(journal, "r+b") as handle:
        handle.truncate(size // 2)
    done = cli(journal, "check")
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert f"journal {journal} is truncated" in done.stdout
    assert "weft-nb salvage" in done.stdout

    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(os.urandom(64 * 1024))
    done = cli(garbage, "check")
    assert done.returncode == 1
    assert "cannot be opened as a DuckDB database" in done.stdout
    assert "no journal at" in refused(cli(tmp_path / "missing.duckdb", "check"))


# -- bad arguments and errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["runs", "--status", "sideways"],
        ["show"],
        ["sql"],
        ["sql", "SELECT 1", "--format", "xml"],
        ["export", "good-1"],
        ["complete", TOKEN_REVIEW],
        ["complete", TOKEN_REVIEW, "{not json"],
        ["fail", TOKEN_REVIEW],
        ["signal", "gate"],
        ["signal", "gate", "go", "'single quotes'"],
        ["signal", "gate", "go", "1", "--id"],
        ["check", "--verbose"],
    ],
    ids=lambda a: " ".join(a) or "nothing",
)
def test_bad_arguments_print_usage_exit_2_and_write_nothing(journal: Path, args: list[str]) -> None:
    before = snapshot(journal.parent)
    done = cli(journal, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "usage: weft-nb" in done.stderr
    assert done.stdout == ""
    assert snapshot(journal.parent) == before


@pytest.mark.parametrize(
    "args",
    [
        ["runs"],
        ["show", "x"],
        ["sql", "SELECT 1"],
        ["export", "x", "--to", "-"],
        ["check"],
        ["complete", "t", "1"],
        ["fail", "t", "why"],
        ["signal", "r", "n", "1"],
    ],
    ids=lambda a: a[0],
)
def test_every_command_names_a_missing_journal_and_creates_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    missing = tmp_path / "nowhere" / "journal.duckdb"
    assert f"no journal at {missing}" in refused(cli(missing, *args))
    assert not missing.parent.exists()


def test_a_corrupt_journal_is_a_message_for_every_command(journal: Path) -> None:
    with open(journal, "r+b") as handle:
        handle.truncate(journal.stat().st_size // 2)
    for args in (["runs"], ["show", "good-1"], ["sql", "SELECT 1"], ["complete", "t", "1"]):
        message = refused(cli(journal, *args))
        assert "is truncated" in message, args


# -- write commands without a kernel ---------------------------------------------------------------


def test_write_commands_open_the_journal_when_no_kernel_holds_it(journal: Path) -> None:
    assert f"completed {TOKEN_REVIEW}" in ok(
        cli(journal, "complete", TOKEN_REVIEW, '{"approved": true}')
    )
    out = ok(cli(journal, "fail", TOKEN_REJECT, "not", "this", "time"))
    assert "not this time" in out
    assert "sent signal 'go' to run 'gate'" in ok(
        cli(journal, "signal", "gate", "go", '{"n": 1}', "--id", "s-1")
    )
    assert "already sent" in ok(cli(journal, "signal", "gate", "go", '{"n": 2}', "--id", "s-1"))

    # what cannot be done is a message, and changes nothing (but who last opened the journal)
    before = snapshot(journal.parent)
    assert "already used" in refused(cli(journal, "complete", TOKEN_REVIEW, "1"))
    assert "no run 'nope'" in refused(cli(journal, "signal", "nope", "go"))
    assert "is completed" in refused(cli(journal, "signal", "good-1", "go"))
    after = snapshot(journal.parent)
    assert after.pop("journal.duckdb.lock") and before.pop("journal.duckdb.lock")
    assert after == before
    assert not Path(str(journal) + ".endpoint.json").exists()

    with TestEngine(journal) as engine:
        engine.register(*ALL)
        assert engine.start(review, run_id="review").result(30) == {"approved": True}
        assert engine.start(reject, run_id="reject").result(30) == {"failed": "not this time"}
        assert engine.start(gate, run_id="gate").result(30) == {"n": 1}


# -- a kernel that holds the journal ---------------------------------------------------------------

KERNEL = r'''
"""A stand-in kernel: holds the journal with an Engine and parks runs until told to close."""
import json, os, sys, threading, time
import weft_nb
from weft_nb import Engine
from weft_nb.errors import ActivityFailedError

journal, mode, outdir = sys.argv[1:4]

def write(name, value):
    name = name.replace("/", "%")
    tmp = os.path.join(outdir, name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(value, handle)
    os.replace(tmp, os.path.join(outdir, name + ".json"))

@weft_nb.activity
def ask(_, activity):
    assert activity.task_token
    activity.complete_async()

@weft_nb.activity
def quick(x):
    return x * 2

@weft_nb.workflow
def review(ctx):
    return ctx.run(ask)

@weft_nb.workflow
def reject(ctx):
    try:
        return ctx.run(ask)
    except ActivityFailedError as exc:
        return {"failed": exc.cause_message}

@weft_nb.workflow
def gate(ctx):
    return ctx.wait_for_signal("go")

@weft_nb.workflow
def once(ctx, x):
    return ctx.run(quick, x)

engine = Engine(journal, program="cli-test-kernel")
url = engine.serve(port=0, auth_token="cli-test-secret").url if mode == "serve" else None
if mode == "idle":
    engine.run(once, 21, run_id="once")
else:
    handles = {name: engine.start(wf, run_id=name) for name, wf in (
        ("review", review), ("reject", reject), ("gate", gate), ("odd gate/1 ü", gate))}
    deadline = time.monotonic() + 60
    while not (engine.journal.pending_async_tokens("review")
               and engine.journal.pending_async_tokens("reject")):
        assert time.monotonic() < deadline, "the tokens were never journaled"
        time.sleep(0.01)

    def report(name, handle):
        try:
            write(name, {"result": handle.result()})
        except Exception as exc:
            write(name, {"error": f"{type(exc).__name__}: {exc}"})

    for name, handle in handles.items():
        threading.Thread(target=report, args=(name, handle), daemon=True).start()
write("ready", {"pid": os.getpid(), "url": url})
for line in sys.stdin:
    if line.strip() == "close":
        break
engine.close()
write("closed", {})
'''


class Kernel:
    """A child process holding the journal (see ``KERNEL``); results come back as files."""

    def __init__(self, tmp_path: Path, journal: Path, mode: str) -> None:
        self.out = tmp_path / f"kernel-{mode}"
        self.out.mkdir()
        script = tmp_path / "kernel.py"
        script.write_text(KERNEL)
        self.stderr = open(self.out / "stderr.txt", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(journal), mode, str(self.out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            text=True,
            cwd=REPO,
            env=child_env(),
        )
        self.ready = self.result("ready")
        assert self.ready["pid"] == self.proc.pid

    def result(self, name: str) -> dict[str, Any]:
        path = self.out / f"{name}.json"

        def arrived() -> bool:
            if self.proc.poll() is not None and not path.exists():
                stderr = (self.out / "stderr.txt").read_text()
                raise AssertionError(f"the kernel exited ({self.proc.returncode}): {stderr}")
            return path.exists()

        wait_until(arrived, timeout=DEADLINE, what=f"the kernel's {name}.json")
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()
        self.result("closed")
        self.proc.wait(timeout=DEADLINE)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE)
        self.stderr.close()


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Callable[[Path, str], Kernel]]:
    started: list[Kernel] = []

    def start(journal: Path, mode: str) -> Kernel:
        started.append(Kernel(tmp_path, journal, mode))
        return started[-1]

    yield start
    for child in started:
        child.stop()


def test_write_commands_reach_a_kernel_through_its_rest_endpoint(
    tmp_path: Path, kernel: Callable[[Path, str], Kernel]
) -> None:
    journal = tmp_path / "kernel.duckdb"
    child = kernel(journal, "serve")
    endpoint_file = Path(str(journal) + ".endpoint.json")
    assert endpoint_file.exists()
    assert stat.S_IMODE(endpoint_file.stat().st_mode) == 0o600
    recorded = json.loads(endpoint_file.read_text())
    assert recorded["pid"] == child.proc.pid
    assert recorded["token"] == "cli-test-secret"
    assert recorded["url"] == child.ready["url"]

    # the runs are active, so the file is held: runs and show ask the endpoint instead
    listing = cli(journal, "runs")
    assert {"review", "reject", "gate"} <= {
        line.split()[0] for line in ok(listing).splitlines()[2:]
    }
    assert f"journal in use by PID {child.proc.pid}" in listing.stderr
    shown = ok(cli(journal, "show", "review"))  # the run's text, not the endpoint's JSON
    assert shown.startswith("review run review: running") and f"token {TOKEN_REVIEW}" in shown

    assert f"completed {TOKEN_REVIEW}" in ok(
        cli(journal, "complete", TOKEN_REVIEW, '{"approved": true}')
    )
    ok(cli(journal, "fail", TOKEN_REJECT, "rejected: too risky"))
    assert "sent signal" in ok(cli(journal, "signal", "gate", "go", "[1, 2]", "--id", "g-1"))
    ok(cli(journal, "signal", "odd gate/1 ü", "go", '"quoted"'))  # the URL quotes the run id
    assert child.result("review") == {"result": {"approved": True}}
    assert child.result("reject") == {"result": {"failed": "rejected: too risky"}}
    assert child.result("gate") == {"result": [1, 2]}
    assert child.result("odd gate%1 ü") == {"result": "quoted"}

    # the kernel's refusals come back as messages
    message = refused(cli(journal, "complete", TOKEN_REVIEW, "1"))
    assert "already used" in message and "HTTP 404" in message
    assert "HTTP 409" in refused(cli(journal, "signal", "gate", "go", "1"))

    # its runs are done, so the engine lets go of the file (about 1 s after its last use; asking
    # its endpoint counts as use) and reads open the file directly again
    wait_until(lambda: not held(journal), timeout=DEADLINE, what="the idle engine to let go")
    done = cli(journal, "runs")
    assert "asking its endpoint" not in done.stderr
    rows = ok(done).splitlines()[2:]
    assert len(rows) == 4
    assert all(" completed " in row for row in rows), rows

    child.close()
    assert not endpoint_file.exists()  # removed when the server stopped


def test_a_kernel_without_an_endpoint_is_named_instead_of_a_lock_error(
    tmp_path: Path, kernel: Callable[[Path, str], Kernel]
) -> None:
    fresh = tmp_path / "kernel.duckdb"
    child = kernel(fresh, "hold")
    pid = child.proc.pid
    message = refused(cli(fresh, "complete", TOKEN_REVIEW, "1"))
    assert f"PID {pid}" in message and "cli-test-kernel" in message
    assert "engine.serve(" in message and "serves no REST endpoint" in message

    # its runs keep the file open: a read waits its 5 s, then names the holder
    message = refused(cli(fresh, "sql", "SELECT count(*) FROM runs"))
    assert f"in use by a weft_nb engine: PID {pid}" in message
    assert "cli-test-kernel" in message
    assert "Could not set lock" not in message
    child.result("ready")  # still alive, unharmed


def test_read_commands_work_while_the_holding_kernel_is_idle(
    journal: Path, kernel: Callable[[Path, str], Kernel]
) -> None:
    child = kernel(journal, "idle")
    out = ok(cli(journal, "runs", "--status", "completed"))
    assert {"good-1", "once"} == {line.split()[0] for line in out.splitlines()[2:]}
    assert "status    completed" in ok(cli(journal, "show", "once"))
    report = ok(cli(journal, "check"))
    assert report.splitlines()[-1] == "clean"
    assert f"an engine holds this journal (PID {child.proc.pid}" in report
    # writing still needs the holder (no endpoint here): named, nothing written
    message = refused(cli(journal, "signal", "gate", "go", "1"))
    assert f"PID {child.proc.pid}" in message
    child.close()
    assert "sent signal" in ok(cli(journal, "signal", "gate", "go", "1"))  # free again


def test_a_stale_endpoint_file_of_a_dead_kernel_is_ignored(journal: Path) -> None:
    stale = Path(str(journal) + ".endpoint.json")
    stale.write_text(json.dumps({"url": "http://127.0.0.1:9", "token": "x", "pid": 1}))
    assert "sent signal" in ok(cli(journal, "signal", "gate", "go", "1"))
    assert not stale.exists()  # whoever holds the journal knows no endpoint serves it


def test_the_installed_console_script_runs(journal: Path) -> None:
    script = Path(sys.executable).with_name("weft-nb")
    if not script.exists():
        pytest.skip("weft-nb is not installed in this environment (pip install -e . adds it)")
    done = subprocess.run(
        [str(script), "--journal", str(journal), "runs", "--status", "completed"],
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE,
        env=child_env(),
    )
    assert "good-1" in ok(done)


def test_the_console_script_points_at_the_cli() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["weft-nb"] == "weft_nb.cli.main:main"
    from weft_nb.cli import main as _cli

    assert callable(_cli.main)
    with pytest.raises(SystemExit) as caught:
        _cli.main(["--help"])
    assert caught.value.code == 0
