"""The executors, pydantic and ipywidgets load on first use, not with ``import weft_nb``.

``import weft_nb``, ``%load_ext weft_nb`` and opening a journal are what every notebook pays
for; an executor most notebooks never use, pydantic when no model is used, and ipywidgets until
a run panel is shown stay out of it (issue 17). Checked in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_PROBE = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "weft_nb")
shell.run_line_magic("weft", "journal " + sys.argv[1])
shell.run_line_magic("weft", "runs")
before = sorted(m for m in sys.modules if m.startswith("weft_nb.executors."))
pydantic_loaded = "pydantic" in sys.modules
widgets_loaded = "ipywidgets" in sys.modules
import weft_nb
names = [weft_nb.ProcessExecutor.__name__, weft_nb.DaskExecutor.__name__]
from weft_nb import ProcessExecutor
same = ProcessExecutor is weft_nb.ProcessExecutor
print(json.dumps({"before": before, "names": names, "same": same, "pydantic": pydantic_loaded,
                  "widgets": widgets_loaded}))
"""


def test_load_ext_and_a_journal_leave_the_executors_pydantic_and_widgets_unimported(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / "journal.duckdb")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "weft_nb.executors.process" not in seen["before"]
    assert "weft_nb.executors.dask" not in seen["before"]
    assert seen["names"] == ["ProcessExecutor", "DaskExecutor"]  # still there on first use
    assert seen["same"]
    assert not seen["pydantic"]  # a model exists only once the user imported pydantic
    assert not seen["widgets"]  # ipywidgets: only for a run panel (%weft run / show)
