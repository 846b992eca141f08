"""Which notebook a kernel runs: what its journal (``.weft/<name>.duckdb``) and run ids key on.

The first source that names a notebook wins:

1. the front end: VS Code's ``__vsc_ipynb_file__``, Jupyter Server's ``JPY_SESSION_NAME``;
2. papermill's parameters ``PAPERMILL_OUTPUT_PATH`` / ``PAPERMILL_INPUT_PATH`` (``--inject-paths``,
   ``--inject-output-path``, ``--inject-input-path``), relative to papermill's working folder;
3. the notebook file found by its cells, for headless runners that name none (``jupyter
   nbconvert --execute``, ``jupyter execute``, nbclient, papermill without ``--inject-paths``;
   not nbval, which keeps no input history): among the notebooks in the kernel's working folder
   and those named on the command line of the process that started the kernel
   (``JPY_PARENT_PID``, read from ``/proc`` where there is one), the ones whose code cells
   include the cells this kernel has run so far, in order. When several do (``a.ipynb`` and
   nbconvert's ``a.nbconvert.ipynb``), the one named last on that command line wins (papermill's
   output, which follows its input), then the shortest name.

Each source names the same notebook on every run of the same command, which is what resuming a
run needs (a name that changed from run to run would start over in a new journal). When none
names one, the session falls back to the folder's shared journal and says so if another kernel
holds it (`NotebookJournalLockedError`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

PAPERMILL_PATHS = ("PAPERMILL_OUTPUT_PATH", "PAPERMILL_INPUT_PATH")
MAX_CANDIDATES = 200  # notebooks read while looking for this kernel's own
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024  # a bigger file is an executed output, never read whole


@dataclasses.dataclass(frozen=True)
class NotebookIdentity:
    """A notebook this kernel runs, and how it was found.

    Attributes:
        path: The notebook file (absolute, except as a front end gave it).
        found_by: How, in words for messages: ``"the front end"``, ``"papermill's parameters"``
            or ``"its cells"``.
    """

    path: str
    found_by: str


@dataclasses.dataclass(frozen=True)
class Runner:
    """The process that started this kernel: its working folder and its command line."""

    cwd: str
    argv: tuple[str, ...]

    def notebooks(self) -> list[str]:
        """The notebook paths on its command line, absolute, in order."""
        return [
            os.path.normpath(os.path.join(self.cwd, arg))
            for arg in self.argv[1:]
            if arg.endswith(".ipynb") and "://" not in arg
        ]


def notebook_path(user_ns: dict[str, Any]) -> str | None:
    """The notebook's path when the front end tells the kernel (VS Code, Jupyter Server)."""
    for candidate in (user_ns.get("__vsc_ipynb_file__"), os.environ.get("JPY_SESSION_NAME")):
        if isinstance(candidate, str) and candidate.endswith(".ipynb"):
            return candidate
    return None


def runner() -> Runner | None:
    """The process that started this kernel (``JPY_PARENT_PID``), where ``/proc`` shows it."""
    pid = os.environ.get("JPY_PARENT_PID", "")
    if not pid.isdigit():
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = tuple(os.fsdecode(arg) for arg in handle.read().split(b"\0") if arg)
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:  # not Linux, or the runner is gone
        return None
    return Runner(cwd=cwd, argv=argv)


def find_notebook(
    user_ns: dict[str, Any], executed: Sequence[str], cwd: str, started_by: Runner | None
) -> NotebookIdentity | None:
    """The notebook this kernel runs (see the module docstring), or None when nothing names it.

    Args:
        user_ns: The notebook's namespace (VS Code's and papermill's variables).
        executed: The cells this kernel has run, oldest first (IPython's raw input history).
        cwd: The kernel's working folder.
        started_by: The process that started the kernel, when known (`runner`).
    """
    front_end = notebook_path(user_ns)
    if front_end is not None:
        return NotebookIdentity(path=front_end, found_by="the front end")
    base = started_by.cwd if started_by is not None else cwd
    for name in PAPERMILL_PATHS:
        value = user_ns.get(name)
        if isinstance(value, str) and value.endswith(".ipynb") and "://" not in value:
            path = os.path.normpath(os.path.join(base, value))
            return NotebookIdentity(path=path, found_by="papermill's parameters")
    found = notebook_by_cells(executed, cwd, started_by)
    return None if found is None else NotebookIdentity(path=found, found_by="its cells")


def notebook_by_cells(executed: Sequence[str], cwd: str, started_by: Runner | None) -> str | None:
    """The notebook whose code cells include ``executed`` in order; see the module docstring."""
    ran = [cell.rstrip() for cell in executed if cell.strip()]
    if not ran:
        return None
    named = started_by.notebooks() if started_by is not None else []
    matches = [path for path in _candidates(cwd, named) if _includes(_code_cells(path), ran)]
    if not matches:
        return None
    order = {path: index for index, path in enumerate(named)}  # the last named wins

    def preference(path: str) -> tuple[int, int, str]:
        return (-order.get(path, -1), len(os.path.basename(path)), path)

    return min(matches, key=preference)


def _candidates(cwd: str, named: list[str]) -> list[str]:
    """The notebooks named on the runner's command line, then those in ``cwd``; no repeats."""
    try:
        here = sorted(
            os.path.join(cwd, name) for name in os.listdir(cwd) if name.endswith(".ipynb")
        )
    except OSError:
        here = []
    unique = dict.fromkeys(os.path.normpath(os.path.abspath(p)) for p in [*named, *here])
    return list(unique)[:MAX_CANDIDATES]


def _code_cells(path: str) -> list[str] | None:
    """The non-empty code cells of a notebook file, as the kernel records them; None if unread."""
    try:
        if os.path.getsize(path) > MAX_NOTEBOOK_BYTES:
            return None
        with open(path, encoding="utf-8") as handle:
            notebook = json.load(handle)
        cells = notebook["cells"]
        sources = [
            cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            for cell in cells
            if cell.get("cell_type") == "code"
        ]
    except (OSError, ValueError, KeyError, TypeError):  # not a notebook, or being rewritten
        return None
    return [source.rstrip() for source in sources if source.strip()]


def _includes(cells: list[str] | None, ran: list[str]) -> bool:
    """Whether ``ran`` appears among ``cells`` in order (cells may have been skipped)."""
    if cells is None:
        return False
    remaining = iter(cells)
    return all(any(cell == done for cell in remaining) for done in ran)
