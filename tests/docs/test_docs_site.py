"""The documentation site builds with ``mkdocs build --strict``, and its code examples run.

Code blocks in ``docs/**/*.md`` follow one convention, so that no example can rot unnoticed:

- A fenced block of ``python`` runs. The blocks of one page run in order in one fresh module
  namespace, so a page can build an example up step by step, in a temporary working directory (so
  ``.weft/`` lands there).
- A fenced block of ``ipython`` is a notebook cell (magics). The blocks of one page run in order in
  a fresh IPython shell in a child process, in a temporary working directory, as a notebook would
  run them top to bottom. ``time.sleep`` is sped up there, so the examples can show realistic
  pauses. ``test_quickstart_survives_a_kernel_crash`` also kills the quickstart's shell in the
  middle of training and checks that running the cells again resumes it.
- ``<!-- notest: REASON -->`` on the line right before a fence skips that block. REASON must start
  with ``kernel`` (it needs a real Jupyter kernel and front end: a widget click, a kernel restart)
  or ``external`` (it needs a service that is not on this machine).
- ``<!-- test-code python`` (or ``ipython``) up to ``-->`` is code the reader does not see: stubs
  that an example leans on (a data loader, a model) before it, or checks after it. It runs at its
  place in the page's sequence.
- A fenced block of ``sql`` runs too: each statement, as a read-only query over a journal that a
  few small runs filled (with retries, heartbeats and a changed step).
- Fences must start at the beginning of a line (not inside a list or an admonition), and a
  ``python`` block must not hold magics. Other languages (``bash``, ``text``, ...) do not run.
"""

from __future__ import annotations

import dataclasses
import json
import linecache
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import weft_nb
from weft_nb import errors
from weft_nb.testing import TestEngine, VirtualClock

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RUNNABLE = ("python", "ipython", "sql")
NOTEST_REASONS = ("kernel", "external")
TIME_SCALE = 0.05  # time.sleep(1) in a notebook example takes 50 ms under test

# A Sphinx role (``:class:`Engine```) that mkdocstrings leaves as text: in a docstring, before and
# after it is rendered (``:class:<code>Engine</code>``). Docstrings use Markdown: plain backticks,
# or a cross-reference ``[`Engine`][weft_nb.Engine]``.
SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|attr|exc|mod|obj|const):(?:`|<code>)")
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<info>[^`]*)$")
_NOTEST = re.compile(r"^<!--\s*notest:\s*(?P<reason>.*?)\s*-->\s*$")
_HIDDEN = re.compile(r"^<!--\s*test-code\s+(?P<lang>\w+)\s*$")


@dataclasses.dataclass(frozen=True)
class Block:
    page: str  # relative to docs/
    line: int  # 1-based line of the first line of code
    lang: str
    code: str
    hidden: bool = False
    skip_reason: str | None = None

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def parse(path: Path) -> list[Block]:
    """Every fenced block and hidden ``test-code`` block of a page, in order."""
    page = path.relative_to(DOCS).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    previous = ""  # the last non-blank line before the current one
    while i < len(lines):
        line = lines[i]
        hidden = _HIDDEN.match(line)
        fence = _FENCE.match(line)
        if hidden:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "-->")
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(page, i + 2, hidden["lang"], code, hidden=True))
            i, previous = end + 1, "-->"
            continue
        if fence:
            info = fence["info"].strip()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            notest = _NOTEST.match(previous)
            code = textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"
            lang = info.split()[0] if info else ""
            if fence["indent"] and lang in RUNNABLE:
                raise AssertionError(
                    f"docs/{page}:{i + 1}: a {lang} block inside a list or admonition; start "
                    "runnable fences at the beginning of a line"
                )
            blocks.append(
                Block(page, i + 2, lang, code, skip_reason=notest["reason"] if notest else None)
            )
            i, previous = end + 1, "```"
            continue
        if line.strip():
            previous = line.strip()
        i += 1
    return blocks


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def runnable(lang: str) -> list[str]:
    """Pages with at least one block of ``lang`` that runs."""
    return [
        p.relative_to(DOCS).as_posix()
        for p in pages()
        if any(b.lang == lang and not b.skip_reason and not b.hidden for b in parse(p))
    ]


# -- the site ------------------------------------------------------------------------------


def test_site_builds_with_strict(tmp_path: Path) -> None:
    """A broken link or anchor, a page missing from the nav, a bad API reference: all fail."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        check=False,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    documented = [
        "Engine",
        "Engine.start",
        "Engine.signal",
        "RunHandle",
        "activity",
        "workflow",
        "RetryPolicy",
        "ActivityContext",
        "ActivityContext.checkpoint",
        "WorkflowContext",
        "WorkflowContext.submit",
        "durable_activity",
        "current_activity",
        "errors",
        "errors.JournalLockedError",
        "testing.TestEngine",
        "testing.VirtualClock",
    ]
    missing = [name for name in documented if f'id="weft_nb.{name}"' not in api]
    assert not missing, f"the API reference lacks {missing}"
    # --strict passes a Sphinx role through as text; the reader would see ":class:Engine".
    raw_roles = [
        f"{page.relative_to(tmp_path / 'site')}: {match.group(0)}"
        for page in sorted((tmp_path / "site").rglob("*.html"))
        for match in SPHINX_ROLE.finditer(page.read_text(encoding="utf-8"))
    ]
    assert not raw_roles, f"Sphinx roles rendered as text in the site: {raw_roles}"


def test_docstrings_use_markdown_not_sphinx_roles() -> None:
    """mkdocstrings renders Markdown: a ``:class:`X``` role in any docstring shows up raw.

    Every module counts, not only those the API reference renders today, so a module that joins
    the reference later brings no roles with it.
    """
    roles = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "weft_nb").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SPHINX_ROLE.search(line)
    ]
    assert not roles, (
        "write [`Name`][weft_nb.Name] (a cross-reference the site resolves) or `Name` "
        f"instead of Sphinx roles: {roles}"
    )


def test_the_errors_page_covers_every_error_class() -> None:
    text = (DOCS / "reference" / "errors.md").read_text(encoding="utf-8")
    from weft_nb.errors import BranchTopologyChangedError

    names = [*errors.__all__, BranchTopologyChangedError.__name__, "StepChangedWarning"]
    missing = [name for name in names if f"## `{name}`" not in text]
    assert not missing, f"docs/reference/errors.md has no section for {missing}"


# -- the convention ------------------------------------------------------------------------


def test_code_blocks_follow_the_convention() -> None:
    counts = {"python": 0, "ipython": 0, "sql": 0}
    for path in pages():
        for block in parse(path):
            if block.skip_reason is not None:
                assert block.skip_reason.startswith(NOTEST_REASONS), (
                    f"{block.where}: a skipped block must say why: <!-- notest: kernel ... --> "
                    f"or <!-- notest: external ... -->, not {block.skip_reason!r}"
                )
            if block.lang == "python":
                magic = [ln for ln in block.code.splitlines() if ln.lstrip().startswith("%")]
                assert not magic, f"{block.where}: magics belong in an ipython block: {magic[0]}"
            if block.lang in counts and not block.hidden and not block.skip_reason:
                counts[block.lang] += 1
    # A parser that silently found nothing would make the example tests pass vacuously.
    assert counts["python"] >= 20, counts
    assert counts["ipython"] >= 10, counts
    assert counts["sql"] >= 2, counts


def test_lists_follow_a_blank_line() -> None:
    """GitHub renders a list right under a paragraph line; MkDocs runs it into the paragraph."""
    item = re.compile(r"^(- |\* |\d+\. )")
    offenders = []
    for path in pages():
        fence, previous = False, ""
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                fence = not fence
            starts_list = item.match(line) and not item.match(previous)
            if not fence and starts_list and previous.strip() and previous[0] not in " #<|>`":
                offenders.append(f"docs/{path.relative_to(DOCS).as_posix()}:{number}")
            previous = line
    assert not offenders, f"add a blank line before the list at {offenders}"


# -- python examples -----------------------------------------------------------------------


@pytest.mark.parametrize("page", runnable("python"))
def test_python_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    name = "docs_" + re.sub(r"\W", "_", page.removesuffix(".md"))
    module = types.ModuleType(name)  # a real module, so classes defined in examples pickle
    monkeypatch.setitem(sys.modules, name, module)
    try:
        for block in parse(DOCS / page):
            if block.lang != "python" or block.skip_reason:
                continue
            filename = f"<{block.where}>"
            # Registered with linecache: tracebacks show the doc's lines, and inspect.getsource
            # (weft_nb's source hash) sees the example's code as it would in a file.
            linecache.cache[filename] = (
                len(block.code),
                None,
                block.code.splitlines(True),
                filename,
            )
            try:
                exec(compile(block.code, filename, "exec"), module.__dict__)
            except Exception as exc:
                pytest.fail(f"the example at {block.where} failed: {type(exc).__name__}: {exc}")
    finally:  # an example may leave an engine open; close it, as interpreter exit would
        for value in list(module.__dict__.values()):
            if isinstance(value, weft_nb.Engine):
                value.close()
        for key in [k for k in linecache.cache if k.startswith(f"<docs/{page}:")]:
            del linecache.cache[key]


# -- sql examples ----------------------------------------------------------------------------


def _statements(code: str) -> list[str]:
    lines = [line for line in code.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


@pytest.fixture(scope="module")
def filled_journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestEngine]:
    """A journal with finished runs, heartbeats, a retried attempt and a changed step."""
    journal = tmp_path_factory.mktemp("sql") / "journal.duckdb"
    engine = TestEngine(journal, clock=VirtualClock(auto_advance=False))

    @weft_nb.activity
    def prepare(n: int) -> list[int]:
        return list(range(n))

    @weft_nb.activity
    def train(rows: list[int], activity: weft_nb.ActivityContext) -> dict[str, float]:
        if activity.attempt == 1:
            raise ConnectionError("flaky")
        for epoch in range(3):
            activity.heartbeat({"epoch": epoch + 1, "loss": 1 / (epoch + 1)})
        return {"loss": 1 / 3, "rows": len(rows)}

    @weft_nb.workflow
    def pipeline(ctx: weft_nb.WorkflowContext, n: int) -> dict[str, float]:
        rows = ctx.run(prepare, n)
        ctx.sleep("1h")
        return ctx.run(train, rows)

    engine.start(pipeline, 3, run_id="sql-1")
    engine.clock.wait_for_sleepers(1)
    engine = engine.simulate_restart()  # a crash during the sleep

    @weft_nb.activity
    def prepare(n: int) -> list[int]:  # noqa: F811 - the edited cell
        return list(range(1, n + 1))

    engine.register(prepare)
    engine.clock.auto_advance = True
    with pytest.warns(weft_nb.StepChangedWarning):
        engine.resume("sql-1").result(timeout=60)
    engine.run(pipeline, 4, run_id="sql-2")
    yield engine
    engine.close()


@pytest.mark.parametrize("page", runnable("sql"))
def test_sql_examples_run(page: str, filled_journal: TestEngine) -> None:
    for block in parse(DOCS / page):
        if block.lang != "sql" or block.skip_reason:
            continue
        for statement in _statements(block.code):
            try:
                frame = filled_journal.journal.select_frame(statement)
            except errors.JournalError as exc:
                pytest.fail(f"the query at {block.where} failed: {exc}\n{statement}")
            assert len(frame) > 0, f"the query at {block.where} found nothing:\n{statement}"


# -- notebook (ipython) examples -----------------------------------------------------------

_DRIVER = r"""
import json, sys, time

scale = float(sys.argv[2])
_sleep = time.sleep
time.sleep = lambda seconds: _sleep(seconds * scale)

from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
for cell in json.load(open(sys.argv[1])):
    print(f"--- cell {cell['where']}", flush=True)
    result = shell.run_cell(cell["code"], store_history=True)
    sys.stdout.flush()
    if not result.success:
        print(f"--- FAILED: {cell['where']}", flush=True)
        sys.exit(1)
print("--- all cells ran", flush=True)
"""


def _notebook(page: str, folder: Path) -> list[str]:
    """Write the driver and the page's cells into ``folder``; the command that runs them."""
    cells = [
        {"where": b.where, "code": b.code}
        for b in parse(DOCS / page)
        if b.lang == "ipython" and not b.skip_reason
    ]
    (folder / "cells.json").write_text(json.dumps(cells), encoding="utf-8")
    (folder / "driver.py").write_text(_DRIVER, encoding="utf-8")
    return [sys.executable, str(folder / "driver.py"), str(folder / "cells.json"), str(TIME_SCALE)]


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JPY_SESSION_NAME", "WEFT_NB_KILL_AT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _run_notebook(page: str, folder: Path) -> str:
    proc = subprocess.run(
        _notebook(page, folder),
        check=False,
        cwd=folder,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "--- all cells ran" in output, output
    return output


@pytest.mark.parametrize("page", runnable("ipython"))
def test_notebook_examples_run(page: str, tmp_path: Path) -> None:
    _run_notebook(page, tmp_path)


def test_quickstart_survives_a_kernel_crash(tmp_path: Path) -> None:
    """What the quickstart promises: kill the kernel mid-training, Run All again, and it resumes."""
    log = tmp_path / "crashed.log"  # a file, not a pipe: nobody reads while we wait
    with log.open("w") as out:
        crashed = subprocess.Popen(
            _notebook("quickstart.md", tmp_path),
            cwd=tmp_path,
            env=_child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    # The crash-test run's second checkpoint on disk: the first one is journaled by then.
    step = tmp_path / ".weft" / "journal.duckdb.checkpoints" / "crash-test" / "1"
    deadline = time.monotonic() + 120
    while not list(step.glob("00000002-*.pkl")):
        if crashed.poll() is not None or time.monotonic() > deadline:
            crashed.kill()
            pytest.fail("the crash-test run never checkpointed:\n" + log.read_text())
        time.sleep(0.005)
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    first = log.read_text()
    assert "--- all cells ran" not in first, "the run finished before the kill; slow it down"

    output = _run_notebook("quickstart.md", tmp_path)  # Restart & Run All
    resumed = [int(n) for n in re.findall(r"train: starting at epoch (\d+)", output)]
    assert len(resumed) == 1, output  # only the crashed run trains; the others replay
    assert resumed[0] >= 2, output  # from its checkpoint, not from epoch 1
    assert "run 'crash-test' completed: replayed from journal: 1 steps, 1 executed" in output
    assert "finished earlier (completed); replayed from journal" in output
