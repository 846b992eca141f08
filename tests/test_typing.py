"""The typed API, checked with mypy: an activity's types reach ctx.run's result and run handles.

`tests/typing_cases/example.py` must pass `mypy --strict` with no error (its `assert_type` lines
state what is inferred), and every line of `tests/typing_cases/mistakes.py` marked `# E` must be
reported, and no other. The cases are checked against this checkout's `weft_nb` (MYPYPATH), so
they follow the code under test, not an installed copy.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from mypy import api as mypy_api

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "typing_cases"
# `# E` or `# E: code` at the end of a line: mypy must report that line (with that code).
EXPECTED = re.compile(r"#\s*E(?::\s*(?P<code>[\w-]+))?\s*$")
REPORTED = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*?)(?:  \[(?P<code>[\w-]+)\])?$"
)


def run_mypy(case: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, str]]:
    """``(line, code, message)`` of every error mypy reports in the case file ``case``."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MYPYPATH", os.pathsep.join([str(ROOT), str(CASES)]))
    stdout, stderr, status = mypy_api.run(
        [
            str(CASES / case),
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            # The cache `make typecheck` just wrote: weft_nb is not analysed again.
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--no-error-summary",
            "--show-error-codes",
            "--hide-error-context",
        ]
    )
    assert status in (0, 1), f"mypy did not run: {stderr}{stdout}"
    found = []
    for text in stdout.splitlines():
        match = REPORTED.match(text)
        if match and Path(match["file"]).name == case:
            found.append((int(match["line"]), match["code"] or "", match["message"]))
    return found


def test_the_typed_example_passes_strict_mypy(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_mypy("example.py", monkeypatch) == []


def test_every_wrong_use_is_reported_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = (CASES / "mistakes.py").read_text().splitlines()
    expected = {
        number: match["code"]
        for number, line in enumerate(lines, 1)
        if (match := EXPECTED.search(line))
    }
    assert len(expected) >= 15, "the mistakes file lost its markers"
    reported: dict[int, set[str]] = {}
    for line, code, _ in run_mypy("mistakes.py", monkeypatch):
        reported.setdefault(line, set()).add(code)
    missed = {n: lines[n - 1].strip() for n in expected if n not in reported}
    assert not missed, f"mypy accepted these wrong uses: {missed}"
    unexpected = {n: lines[n - 1].strip() for n in reported if n not in expected}
    assert not unexpected, f"mypy reported lines not marked `# E`: {unexpected}"
    wrong_code = {
        n: (code, sorted(reported[n]))
        for n, code in expected.items()
        if code and code not in reported[n]
    }
    assert not wrong_code, f"reported with another error code (expected, reported): {wrong_code}"


def test_the_typed_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example is real code: the typed workflows run and return what their types say."""
    monkeypatch.syspath_prepend(str(CASES))
    try:
        import example  # type: ignore[import-not-found]

        summary, rows, everything = example.main()
    finally:  # plain names: leave no module called `example` behind for other tests
        for name in ("example", "activities"):
            sys.modules.pop(name, None)
    assert summary == {"loss": 1.0, "rows": 2.0}
    assert rows == 2
    assert everything[:4] == [[1.0, 2.0], 0.2, 0.4, b"https://example.org"]
    assert everything[4] == [1.0, 2.0]
    assert everything[7:] == [4.0, 5]
