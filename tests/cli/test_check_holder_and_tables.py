"""``weft-nb check`` asks the journal's lock who holds it, and CLI tables align by display width.

The holder is a real second process (``tests/lock_holder.py hold``): it opens an engine, then
closes it and lives on, as a kernel whose engine was closed does. Its PID stays in the lock
file's record, so only the lock itself can say that nobody holds the journal any more.

The tables hold CJK run ids: each such character takes two terminal columns, so padding by
``len`` would push every later column out of line.
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest

import weft_nb
from weft_nb.cli.text import cut, print_table
from weft_nb.testing import TestEngine

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "tests" / "lock_holder.py"
DEADLINE = 60.0  # generous: a child imports duckdb and pydantic before doing anything
CJK_IDS = ["訓練-1", "データ処理", "plain-run", "모델"]


def columns(text: str) -> int:
    """Terminal columns, counted here independently of weft_nb's own helper."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("WEFT_NB_KILL_AT", None)
    env.pop("WEFT_NB_DEBUG", None)
    return env


def cli(journal: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weft_nb", "--journal", str(journal), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE,
        cwd=REPO,
        env=child_env(),
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


class Holder:
    """``lock_holder.py hold PATH``: one JSON object per line on its stdout."""

    def __init__(self, journal: Path, stderr: Path) -> None:
        self._stderr_path = stderr
        self._stderr = stderr.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPER), "hold", str(journal)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=REPO,
            env=child_env(),
        )

    def read_json(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + DEADLINE
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                line = self.proc.stdout.readline()
                assert line, f"the holder exited: {self._stderr_path.read_text()}"
                loaded: dict[str, Any] = json.loads(line)
                return loaded
        raise AssertionError(f"no answer from the holder: {self._stderr_path.read_text()}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()


# -- weft-nb check: the lock, not the PID ---------------------------------------------------------


def test_check_names_a_holder_only_while_the_lock_is_held(tmp_path: Path) -> None:
    journal = tmp_path / "journal.duckdb"
    holder = Holder(journal, tmp_path / "holder.stderr")
    try:
        pid = holder.read_json()["pid"]
        report = ok(cli(journal, "check"))
        assert f"an engine holds this journal (PID {pid}" in report, report
        assert report.splitlines()[-1] == "clean"

        holder.send("close")
        assert holder.read_json() == {"closed": True}
        assert holder.proc.poll() is None  # the process lives on without its engine
        record = json.loads(Path(str(journal) + ".lock").read_text())
        assert record["pid"] == pid  # the record still names it: only the lock can tell

        report = ok(cli(journal, "check"))
        assert "an engine holds this journal" not in report, report
        assert report.splitlines()[-1] == "clean"
        assert holder.proc.poll() is None
    finally:
        holder.stop()


def test_check_of_a_journal_no_engine_ever_wrote_names_no_holder(tmp_path: Path) -> None:
    journal = tmp_path / "journal.duckdb"
    with TestEngine(journal):
        pass
    Path(str(journal) + ".lock").unlink()  # as a journal copied from elsewhere comes
    report = ok(cli(journal, "check"))
    assert "an engine holds" not in report and report.splitlines()[-1] == "clean"
    assert not Path(str(journal) + ".lock").exists()  # checking created no lock file


# -- tables: display width ------------------------------------------------------------------------


def start_columns(line: str, cells: list[str]) -> list[int]:
    """The terminal column at which each of ``cells`` starts in ``line``, left to right."""
    found, at = [], 0
    for cell in cells:
        index = line.index(cell, at)
        found.append(columns(line[:index]))
        at = index + len(cell)
    return found


def test_print_table_aligns_wide_characters_by_display_width() -> None:
    rows = [[run_id, "wf", "completed"] for run_id in CJK_IDS]
    out = io.StringIO()
    print_table(["RUN", "WORKFLOW", "STATUS"], rows, out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 + len(rows)
    expected = start_columns(lines[0], ["RUN", "WORKFLOW", "STATUS"])
    widest = max(map(columns, CJK_IDS))  # 10: データ処理
    assert expected == [0, widest + 2, widest + 2 + len("WORKFLOW") + 2]
    for line, row in zip(lines[2:], rows, strict=True):
        assert start_columns(line, row) == expected, lines
    assert columns(lines[1]) == max(map(columns, lines))  # the rule spans the widest row


def test_cut_counts_columns_not_characters() -> None:
    assert cut("データ処理データ処理", 9) == "データ..."  # 6 columns + "..."
    assert columns(cut("訓練" * 40, 60)) <= 60
    assert cut("plain text that is long", 10) == "plain t..."
    assert cut("短い", 10) == "短い"


@weft_nb.workflow
def greet(ctx: weft_nb.WorkflowContext, name: str) -> str:
    return f"hello {name}"


def test_runs_and_sql_tables_line_up_with_cjk_run_ids(tmp_path: Path) -> None:
    journal = tmp_path / "journal.duckdb"
    with TestEngine(journal) as engine:
        for run_id in CJK_IDS:
            engine.run(greet, run_id, run_id=run_id)

    lines = ok(cli(journal, "runs")).splitlines()
    header, rows = lines[0].split(), lines[2:]
    expected = start_columns(lines[0], header)
    assert sorted(row.split()[0] for row in rows) == sorted(CJK_IDS)
    for row in rows:
        # RUN, WORKFLOW, VERSION, STATUS: single words, so each starts where its header does
        assert start_columns(row, row.split()[:4]) == expected[:4], "\n".join(lines)

    lines = ok(cli(journal, "sql", "SELECT run_id, status, workflow FROM runs")).splitlines()
    expected = start_columns(lines[0], ["run_id", "status", "workflow"])
    for row in lines[2:-1]:
        assert start_columns(row, row.split()) == expected, "\n".join(lines)

    # a cell cut by --max-width is cut to that many columns, and the table still lines up
    query = "SELECT repeat(run_id, 10) AS long_id, status FROM runs"
    lines = ok(cli(journal, "sql", query, "--max-width", "12")).splitlines()
    expected = start_columns(lines[0], ["long_id", "status"])
    for row in lines[2:-1]:
        assert columns(row.split()[0]) <= 12
        assert start_columns(row, row.split()) == expected, "\n".join(lines)


def test_every_cli_table_goes_through_print_table() -> None:
    """Padding by ``ljust`` or a format width counts characters: CJK would misalign again."""
    padding = re.compile(r"\.(ljust|rjust|center)\(|:[<>^]\d+\}|\{[^}]*:[<>^]?\d+[sd]?\}")
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted((REPO / "weft_nb" / "cli").glob("*.py"))
        if path.name != "text.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if padding.search(line)
    ]
    assert not offenders, f"pad with weft_nb.cli.text (print_table, pad): {offenders}"


@pytest.mark.parametrize("text", ["abc", "訓練", "e\u0301", "👍", ""])
def test_pad_reaches_the_width_in_columns(text: str) -> None:
    from weft_nb.cli.text import pad

    assert columns(pad(text, 8)) == 8
