"""Optional dependencies: a feature whose extra is missing says which extra to install.

Each feature is used with its package made unimportable (``sys.modules[name] = None``), in this
process; tests/test_install.py checks the same from a real install of the wheel.
"""

from __future__ import annotations

import sys

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import weft_nb
from weft_nb import chaos
from weft_nb.base.extras import import_extra
from weft_nb.errors import MissingExtraError


def test_a_missing_module_names_its_extra_and_keeps_the_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nbformat", None)  # `import nbformat` now fails
    with pytest.raises(MissingExtraError) as info:
        import_extra("nbformat", extra="chaos", feature="the harness")
    error = info.value
    assert str(error).startswith("the harness needs the `nbformat` package, which is not installed")
    assert str(error).endswith("install the extra with `pip install 'weft-nb[chaos]'`")
    assert (error.feature, error.module, error.extra) == ("the harness", "nbformat", "chaos")
    assert isinstance(error, ImportError)
    assert isinstance(error.__cause__, ImportError)
    assert "nbformat" in error.reason


def test_a_submodule_is_named_by_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jupyter_client.manager", None)
    with pytest.raises(MissingExtraError) as info:
        import_extra("jupyter_client.manager", extra="chaos", feature="kernels")
    assert info.value.module == "jupyter_client"


def test_an_installed_module_is_returned() -> None:
    assert import_extra("json", extra="none", feature="nothing") is sys.modules["json"]


@pytest.mark.parametrize("package", ["nbformat", "jupyter_client.manager", "ipykernel"])
def test_the_chaos_harness_without_its_extra_exits_with_the_install_line(
    package: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(SystemExit) as info:
        chaos.main(["any.ipynb", "--trials", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m weft_nb.chaos: error: running notebooks in Jupyter kernels")
    assert f"needs the `{package.partition('.')[0]}` package" in err
    assert "pip install 'weft-nb[chaos]'" in err


def test_the_dask_executor_without_its_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'weft-nb\[dask\]'"):
        weft_nb.DaskExecutor("tcp://127.0.0.1:8786")


def test_weft_timeline_without_its_extra_is_a_usage_error_naming_it(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    ip.run_cell_magic("weft_workflow", "noop()", "1")
    ip.run_line_magic("weft", "run noop --id t1")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(
        UsageError,
        match=r"%weft timeline needs the `matplotlib` package.*"
        r"pip install 'weft-nb\[timeline\]'",
    ):
        ip.run_line_magic("weft", "timeline t1")
