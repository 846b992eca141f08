"""Shared fixtures: engines on real journal files in a temporary folder, an IPython shell."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from IPython.core.interactiveshell import InteractiveShell
from workflow_kinds import workflow_decorator

import weft_nb
from weft_nb.testing import TestEngine

if TYPE_CHECKING:  # a real kernel's client is imported only by the tests that start one
    from jupyter_kernels import Kernel


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.duckdb"


@pytest.fixture
def engine(journal_path: Path) -> Iterator[TestEngine]:
    """A TestEngine (virtual, auto-advancing clock) on a real DuckDB file."""
    with TestEngine(journal_path, heartbeat_interval=0.01) as eng:
        yield eng


@pytest.fixture
def ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """The in-process IPython shell with weft_nb loaded on a journal in ``tmp_path``.

    The shell is a process-wide singleton, so at the end the extension is unloaded and every
    public name the test defined in ``user_ns`` (cells, activities, workflows) is removed.
    """
    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "weft_nb")
    shell.run_line_magic("weft", f"journal {tmp_path / 'notebook.duckdb'}")
    shell.run_line_magic("weft", "checkpoints default")  # kernel-wide like the journal (fuzz)
    before = set(shell.user_ns)
    yield shell
    shell.run_line_magic("unload_ext", "weft_nb")
    for name in set(shell.user_ns) - before:
        if not name.startswith("_"):
            del shell.user_ns[name]


@pytest.fixture
def kernels() -> Iterator[list[Kernel]]:
    """The Jupyter kernels a test starts (``jupyter_kernels.start_kernel``); closed at the end."""
    started: list[Kernel] = []
    yield started
    for kernel in started:
        kernel.close()


@pytest.fixture(params=["sync", "async"])
def workflow_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test twice: its workflows as written, then as ``async def`` (tests/workflow_kinds.py).

    A module opts in with ``pytestmark = pytest.mark.usefixtures("workflow_kind")``; a test that
    only makes sense for one kind is marked ``@pytest.mark.sync_only``.
    """
    kind: str = request.param
    marker = request.node.get_closest_marker("sync_only")
    if kind == "async" and marker is not None:
        assert marker.args, "@pytest.mark.sync_only needs its reason"
        pytest.skip(f"sync only: {marker.args[0]}")
    monkeypatch.setattr(weft_nb, "workflow", workflow_decorator(kind, weft_nb.workflow))
    return kind
