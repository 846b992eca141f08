"""The wheel, built and installed in a fresh venv as a user would: the core, then an extra.

`pip install weft-nb` must give the engine and the notebook experience (the magics, the run panel,
`%weft sql`); a feature whose extra is missing must say which extra to install; `[chaos]` must be
enough for `python -m weft_nb.chaos`. The wheel is built from this checkout by pip (hatchling);
its dependencies come from PyPI as binary wheels through pip's cache, so once `make test` has
installed the dev extra (the same packages) this takes about a minute. It runs under `make test`
(marker `install`). tests/test_packaging.py checks the wheel's declared dependencies and extras.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.install, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``command``; its output, or a failure that shows it."""
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def clean_env(home: Path) -> dict[str, str]:
    """The environment of the installed copy: no PYTHONPATH (it would import this checkout), and
    Jupyter and IPython folders of its own (a user-level `python3` kernelspec would start
    another Python)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER", "WEFT"))}
    env.update(
        JUPYTER_DATA_DIR=str(home / "jupyter-data"),
        JUPYTER_CONFIG_DIR=str(home / "jupyter-config"),
        IPYTHONDIR=str(home / "ipython"),
        MPLBACKEND="Agg",
    )
    return env


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    """The wheel, built by pip as `pip install .` builds it (hatchling; from PyPI if absent)."""
    out = tmp_path / "wheel"
    # With hatchling here (the dev extra), no isolated build environment to fetch it into.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    run(
        [*PIP, "wheel", "--no-deps", "--quiet", *isolation, "--wheel-dir", str(out), str(ROOT)],
        cwd=tmp_path,
    )
    (built,) = out.glob("weft_nb-*.whl")
    return built


# Run by the installed copy: the engine, then the notebook through a real IPython shell.
CHECKS = textwrap.dedent(
    """
    import json, sys
    import weft_nb
    from weft_nb.errors import MissingExtraError

    found = {"location": weft_nb.__file__}

    @weft_nb.activity
    def double(x: int) -> int:
        return 2 * x

    @weft_nb.workflow
    def pipeline(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(double, x) + 1

    with weft_nb.Engine(".weft/engine.duckdb") as engine:
        found["engine"] = engine.run(pipeline, 20, run_id="r1")
    notebook_side = ("IPython", "ipywidgets", "traitlets", "pandas", "jupyter_client", "nbformat")
    found["engine_imported"] = sorted(m for m in notebook_side if m in sys.modules)

    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "weft_nb")
    ip.run_line_magic("weft", "journal .weft/notebook.duckdb")
    ip.run_cell_magic("weft_activity", "triple(x)", "3 * x")
    ip.run_cell_magic("weft_workflow", "flow(x)", "ctx.run(triple, x)")
    found["magic"] = ip.run_line_magic("weft", "run flow x=5 --id n1")
    frame = ip.run_line_magic("weft", 'sql "SELECT run_id, status FROM runs"')
    found["sql"] = frame.to_dict("records")
    try:
        ip.run_line_magic("weft", "timeline n1")
    except UsageError as exc:
        found["timeline"] = str(exc)
    try:
        weft_nb.DaskExecutor("tcp://127.0.0.1:8786")
    except MissingExtraError as exc:
        found["dask"] = str(exc)
    ip.run_line_magic("unload_ext", "weft_nb")
    print(json.dumps(found))
    """
)


def test_a_fresh_install_works_and_each_extra_is_named_until_installed(
    wheel: Path, tmp_path: Path
) -> None:
    venv, work, env = tmp_path / "venv", tmp_path / "work", clean_env(tmp_path)
    work.mkdir()
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    python = str(venv / "bin" / "python")

    def install(requirement: str) -> None:
        # pip of this environment installs into the new one (`--python`): no pip bootstrap there.
        run(
            [*PIP, "--python", python, "install", "--quiet", "--only-binary=:all:", requirement],
            cwd=work,
        )

    install(f"weft-nb @ {wheel.as_uri()}")
    output = run([python, "-c", CHECKS], cwd=work, env=env).splitlines()
    # The panel's last refresh may print after the report (a terminal shell has no display ids).
    found = json.loads(next(line for line in reversed(output) if line.startswith("{")))
    assert Path(found["location"]).is_relative_to(venv), "this checkout was imported, not the wheel"
    assert found["engine"] == 41
    assert found["engine_imported"] == [], "the engine imported notebook-side packages"
    assert found["magic"] == 15
    assert found["sql"] == [{"run_id": "n1", "status": "completed"}]
    assert "pip install 'weft-nb[timeline]'" in found["timeline"]
    assert "pip install 'weft-nb[dask]'" in found["dask"]
    runs = run(
        [str(venv / "bin" / "weft-nb"), "--journal", ".weft/notebook.duckdb", "runs"],
        cwd=work,
        env=env,
    )
    assert "n1" in runs

    notebook = work / "training.ipynb"
    shutil.copy(ROOT / "tests" / "chaos" / "training.ipynb", notebook)
    chaos = [python, "-m", "weft_nb.chaos", str(notebook), "--trials", "1", "--seed", "3"]
    refused = subprocess.run(chaos, cwd=work, env=env, capture_output=True, text=True, check=False)
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused.stderr.startswith("python -m weft_nb.chaos: error: ")
    assert "pip install 'weft-nb[chaos]'" in refused.stderr

    install(f"weft-nb[chaos] @ {wheel.as_uri()}")
    figures_path = work / "figures.json"
    run([*chaos, "--json", str(figures_path)], cwd=work, env=env)
    figures = json.loads(figures_path.read_text())
    assert figures["trials"] == 1
    assert figures["failed_trials"] == []
