"""The executors, pydantic and ipywidgets load on first use, not with ``import weft_nb``.

``import weft_nb``, ``%load_ext weft_nb`` and opening a journal are what every notebook pays
for; an executor most notebooks never use, pydantic when no model is used, ipywidgets until
a run panel is shown, OpenTelemetry until the application imports it, the REST endpoint until
``engine.serve()``, and the ``duckdb`` package's Python layer (weft_nb uses its compiled
``_duckdb`` alone) stay out of it (issue 17). Checked in a fresh process.
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
otel_loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry."))
duckdb_loaded = "duckdb" in sys.modules, "_duckdb" in sys.modules
endpoint_loaded = "weft_nb.endpoint.server" in sys.modules
import weft_nb
names = [weft_nb.ProcessExecutor.__name__, weft_nb.DaskExecutor.__name__]
from weft_nb import ProcessExecutor
same = ProcessExecutor is weft_nb.ProcessExecutor
print(json.dumps({"before": before, "names": names, "same": same, "pydantic": pydantic_loaded,
                  "widgets": widgets_loaded, "otel": otel_loaded, "duckdb": duckdb_loaded,
                  "endpoint": endpoint_loaded}))
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
    assert seen["otel"] == []  # no provider can be configured without importing it
    assert seen["duckdb"] == [False, True]  # the engine module, not the package around it
    assert not seen["endpoint"]  # the REST endpoint (http.server): on the first engine.serve()


_LATE_OTEL = """
import sys
import weft_nb
from weft_nb.testing import MemoryJournal, TestEngine

@weft_nb.activity
def one(x):
    return x

@weft_nb.workflow
def wf(ctx, x):
    return ctx.run(one, x)

with TestEngine(MemoryJournal()) as engine:
    assert engine.run(wf, 1) == 1
    assert not [m for m in sys.modules if m.startswith("opentelemetry.")]
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    import time
    time.sleep(1.1)  # the global providers are looked up at most once a second (documented)
    assert engine.run(wf, 2) == 2
names = sorted({span.name for span in exporter.get_finished_spans()})
assert names == ["weft.attempt", "weft.run", "weft.step"], names
"""


def test_a_provider_configured_after_the_engine_opened_is_traced() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LATE_OTEL], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr


_NO_EXTENSION = """
import sys
import duckdb
sys.modules["_duckdb"] = None  # as a DuckDB packaged without the top-level extension module
import weft_nb
from weft_nb.base.duckdb_engine import duckdb as used
assert used is duckdb
engine = weft_nb.Engine(sys.argv[1])
assert engine.run(weft_nb.workflow(name="w")(lambda ctx: 3)) == 3
engine.close()
"""


def test_without_the_top_level_extension_the_duckdb_package_is_used(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _NO_EXTENSION, str(tmp_path / "j.duckdb")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


_SAME_CLASSES = """
import sys
if sys.argv[1] == "duckdb-first":
    import duckdb
from weft_nb.base.duckdb_engine import duckdb as used
import duckdb
errors = [n for n in dir(duckdb) if isinstance(getattr(duckdb, n), type)
          and issubclass(getattr(duckdb, n), BaseException)]
assert len(errors) > 10, errors
differ = [n for n in errors + ["connect", "DuckDBPyConnection", "tokenize", "token_type"]
          if getattr(used, n) is not getattr(duckdb, n)]
assert not differ, differ
try:  # a user's own connection: weft_nb's except clauses catch what it raises
    duckdb.connect().execute("SELECT * FROM no_such_table")
except used.CatalogException:
    pass
"""


def test_the_user_s_duckdb_raises_the_classes_weft_nb_catches() -> None:
    # weft_nb imports the compiled extension, the user the package around it: one set of
    # classes, whichever comes first.
    for order in ("weft-first", "duckdb-first"):
        done = subprocess.run(
            [sys.executable, "-c", _SAME_CLASSES, order],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, (order, done.stderr)
