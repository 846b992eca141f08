"""``%weft timeline`` leaves matplotlib alone (issue 18.7); ``%weft runs`` is a table (18.11)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import pytest
from helpers import weft_magics
from IPython.core.interactiveshell import InteractiveShell
from matplotlib import pyplot as plt

import weft_nb
from weft_nb.notebook.run_table import RunTable

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def on_screen(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def define_and_run(shell: InteractiveShell, run_id: str) -> None:
    shell.run_cell_magic("weft_activity", "prepare(n)", "list(range(n))")
    shell.run_cell_magic("weft_workflow", "pipeline(n)", "sum(ctx.run(prepare, n))")
    assert shell.run_line_magic("weft", f"run pipeline n=3 --id {run_id}") == 3


@pytest.fixture
def user_backend() -> Iterator[str]:
    """pyplot on a backend that is not Agg (as a notebook's inline backend is), restored after."""
    before = plt.get_backend()
    plt.switch_backend("svg")
    yield "svg"
    plt.switch_backend(before)


def test_weft_timeline_leaves_the_backend_and_pyplot_alone(
    ip: InteractiveShell, user_backend: str
) -> None:
    define_and_run(ip, "t1")
    mine = plt.figure()
    plt.plot([1, 2, 3])
    before = (matplotlib.get_backend(), plt.get_fignums(), plt.gcf(), plt.gca())
    figure = ip.run_line_magic("weft", "timeline t1")
    try:
        after = (matplotlib.get_backend(), plt.get_fignums(), plt.gcf(), plt.gca())
        assert after == before
        assert matplotlib.get_backend() == user_backend
        assert figure not in [plt.figure(n) for n in plt.get_fignums()]  # not pyplot's
        # it shows itself as a PNG, whatever the backend, through IPython's own formatter
        shown, _ = ip.display_formatter.format(figure)
        assert shown["image/png"].startswith(PNG)
        assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["0. prepare"]
    finally:
        plt.close(mine)


def test_weft_timeline_before_pyplot_is_imported_keeps_the_users_backend(tmp_path: Path) -> None:
    """The issue's notebook: the timeline first, then pyplot with the backend the user chose."""
    script = textwrap.dedent(
        """
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "weft_nb")
        shell.run_line_magic("weft", "journal j.duckdb")
        shell.run_cell_magic("weft_activity", "one(n)", "n")
        shell.run_cell_magic("weft_workflow", "flow(n)", "ctx.run(one, n)")
        shell.run_line_magic("weft", "run flow n=1 --id r")
        figure = shell.run_line_magic("weft", "timeline r")
        assert figure._repr_png_().startswith(b"\\x89PNG")
        print("pyplot imported:", "matplotlib.pyplot" in sys.modules)
        import matplotlib.pyplot as plt
        print("backend:", plt.get_backend())
        shell.run_line_magic("unload_ext", "weft_nb")
        """
    )
    env = {"PYTHONPATH": str(REPO), "MPLBACKEND": "svg", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "pyplot imported: False" in done.stdout
    assert "backend: svg" in done.stdout


@weft_nb.workflow(name="<script>alert('wf')</script>")
def scripted(ctx: weft_nb.WorkflowContext) -> int:
    return 1


def test_weft_runs_is_an_escaped_html_table_with_a_text_fallback(ip: InteractiveShell) -> None:
    empty = ip.run_line_magic("weft", "runs")
    assert isinstance(empty, RunTable)
    assert empty == []
    assert ip.display_formatter.format(empty)[0]["text/plain"] == "no runs in this journal"

    define_and_run(ip, "<script>alert('run')</script>")
    engine = weft_magics(ip).session.engine
    engine.register(scripted)
    engine.run(scripted, run_id="日本-run")
    runs = ip.run_line_magic("weft", "runs")
    assert [r.run_id for r in runs] == ["<script>alert('run')</script>", "日本-run"]
    assert runs[-1].status == "completed"  # still the list of RunInfo code used before

    shown, _ = ip.display_formatter.format(runs)
    page = shown["text/html"]
    assert page.startswith("<table class='weft-runs'>")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;run&#x27;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(&#x27;wf&#x27;)&lt;/script&gt;" in page
    assert page.count("<tr>") == 3  # the header and two runs

    text = shown["text/plain"].splitlines()
    assert text[0].split() == ["run", "workflow", "status", "started", "updated", "here", "parent"]
    assert text[1].startswith("<script>alert('run')</script>  pipeline")
    assert text[2].startswith("日本-run")
    # columns line up on screen, a wide character taking two columns
    column = text[1].index("pipeline")
    assert column == len("<script>alert('run')</script>  ")
    assert on_screen(text[2][: text[2].index("<script>alert('wf')")]) == column
    assert "completed" in text[2]

    failed = ip.run_line_magic("weft", "runs failed")
    assert failed == []
