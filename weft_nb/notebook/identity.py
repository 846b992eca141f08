"""Which notebook a kernel runs: what its journal (``.weft/<name>.duckdb``) and run ids key on.

The first source that names a notebook wins:

1. papermill's parameters ``PAPERMILL_OUTPUT_PATH`` / ``PAPERMILL_INPUT_PATH`` (``--inject-paths``,
   ``--inject-output-path``, ``--inject-input-path``), relative to papermill's working folder;
2. the front end: VS Code's ``__vsc_ipynb_file__``, Jupyter Server's ``JPY_SESSION_NAME``. The
   environment variable is passed on to every process the kernel starts, so a notebook that runs
   other notebooks (papermill or nbconvert in a cell) hands its own name to their kernels. It is
   ignored when the process that started this kernel (``JPY_PARENT_PID``, or the parent process)
   carries the same value: then it was inherited, not set for this kernel (read from ``/proc``);
3. the notebook file found by its cells, for headless runners that name none (``jupyter
   nbconvert --execute``, ``jupyter execute``, nbclient, papermill without ``--inject-paths``;
   not nbval, which keeps no input history): among the notebooks in the kernel's working folder
   and those named on the command line of the process that started the kernel
   (``JPY_PARENT_PID``, read from ``/proc`` where there is one), the ones whose code cells
   include the cells this kernel has run so far, in order. One such notebook is the answer.
   When several are, the command line decides if it names exactly one of them, or if those it
   names are copies of one notebook (the same code cells: papermill's input and output, which
   comes last, wins). Otherwise the cells run so far fit several notebooks, and the answer is
   `Undecided`: no guess by name, which would change when the folder does.

A source that names a notebook names the same one on every run of the same command, which is
what resuming a run needs (a name that changed from run to run would start over in a new journal).
An undecided answer becomes a decision as more cells run (the candidates only shrink), so a
session keeps an answer only once it is one (`weft_nb.notebook.session`). When nothing fits,
the session falls back to the folder's shared journal and says so if another kernel holds it
(`NotebookJournalLockedError`).
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
class Undecided:
    """The cells run so far fit several notebooks, and nothing tells which of them this is.

    Attributes:
        candidates: The notebooks that fit (absolute paths, sorted).
    """

    candidates: tuple[str, ...]


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
    """The notebook's path when the front end tells the kernel (VS Code, Jupyter Server).

    ``JPY_SESSION_NAME`` counts only when it was set for this kernel, not inherited
    (`inherited`).
    """
    vscode = user_ns.get("__vsc_ipynb_file__")  # a variable of this kernel's own namespace
    if isinstance(vscode, str) and vscode.endswith(".ipynb"):
        return vscode
    session = os.environ.get("JPY_SESSION_NAME")
    if session and session.endswith(".ipynb") and not inherited("JPY_SESSION_NAME", session):
        return session
    return None


def inherited(name: str, value: str) -> bool:
    """Whether the process that started this kernel has ``name`` set to ``value`` too.

    Jupyter Server sets ``JPY_SESSION_NAME`` in the environment of each kernel it starts, not in
    its own; a kernel started by a process that carries the same value (nbclient inside another
    kernel, or papermill run from a cell) got it by inheritance. Both the runner
    (``JPY_PARENT_PID``) and the parent process are asked; where ``/proc`` cannot tell
    (not Linux, or the process is gone), the value counts as set for this kernel.
    """
    wanted = f"{name}={value}".encode()
    for pid in dict.fromkeys((os.environ.get("JPY_PARENT_PID", ""), str(os.getppid()))):
        if not pid.isdigit() or int(pid) <= 1:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if wanted in handle.read().split(b"\0"):
                    return True
        except OSError:
            continue
    return False


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
) -> NotebookIdentity | Undecided | None:
    """The notebook this kernel runs (see the module docstring), or None when nothing names it.

    `Undecided` when the cells run so far fit several notebooks and nothing else tells.

    Args:
        user_ns: The notebook's namespace (VS Code's and papermill's variables).
        executed: The cells this kernel has run, oldest first (IPython's raw input history).
        cwd: The kernel's working folder.
        started_by: The process that started the kernel, when known (`runner`).
    """
    base = started_by.cwd if started_by is not None else cwd
    for name in PAPERMILL_PATHS:  # set in this kernel by papermill: they win over the environment
        value = user_ns.get(name)
        if isinstance(value, str) and value.endswith(".ipynb") and "://" not in value:
            path = os.path.normpath(os.path.join(base, value))
            return NotebookIdentity(path=path, found_by="papermill's parameters")
    front_end = notebook_path(user_ns)
    if front_end is not None:
        return NotebookIdentity(path=front_end, found_by="the front end")
    found = notebook_by_cells(executed, cwd, started_by)
    if isinstance(found, str):
        return NotebookIdentity(path=found, found_by="its cells")
    return found


def notebook_by_cells(
    executed: Sequence[str], cwd: str, started_by: Runner | None
) -> str | Undecided | None:
    """The notebook whose code cells include ``executed`` in order; see the module docstring."""
    ran = [cell.rstrip() for cell in executed if cell.strip()]
    if not ran:
        return None
    named = started_by.notebooks() if started_by is not None else []
    cells = {path: _code_cells(path) for path in _candidates(cwd, named)}
    matches = [path for path, code in cells.items() if _includes(code, ran)]
    if len(matches) <= 1:
        return matches[0] if matches else None
    named_matches = [path for path in dict.fromkeys(named) if path in matches]
    if len(named_matches) == 1:  # the runner's own notebook among bystanders of its folder
        return named_matches[0]
    if named_matches and all(cells[path] == cells[named_matches[0]] for path in named_matches):
        return named_matches[-1]  # copies of one notebook: papermill's output follows its input
    return Undecided(candidates=tuple(sorted(matches)))


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
