"""Executing a notebook's cells in a real Jupyter kernel, and killing that kernel.

Used by the fault-injection harness (``python -m weft_nb.chaos``) and by ``make demo``: both
drive real kernels through ``jupyter_client``, the way JupyterLab does, and kill them with real
signals. The executed outputs are collected in nbformat's shape so a run can be saved as a notebook.
Those packages, and ipykernel for the kernels themselves, come with the ``chaos`` extra
(``pip install 'weft-nb[chaos]'``); without it, `require_kernel_packages()` says so.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weft_nb.base.extras import import_extra
from weft_nb.errors import CellExecutionError

if TYPE_CHECKING:
    from jupyter_client.manager import KernelManager

DEFAULT_TIMEOUT = 600.0
_FEATURE = "running notebooks in Jupyter kernels (python -m weft_nb.chaos)"


def require_kernel_packages() -> tuple[Any, Any]:
    """``nbformat`` and ``jupyter_client.manager``, checking ``ipykernel`` is there to run kernels.

    Raises:
        MissingExtraError: One of them is missing: install ``weft-nb[chaos]``.
    """
    import_extra("ipykernel", extra="chaos", feature=_FEATURE)  # the kernels' own package
    return (
        import_extra("nbformat", extra="chaos", feature=_FEATURE),
        import_extra("jupyter_client.manager", extra="chaos", feature=_FEATURE),
    )


def code_cells(path: str | os.PathLike[str]) -> list[str]:
    """The sources of a notebook's code cells, in order."""
    nbformat, _ = require_kernel_packages()
    notebook = nbformat.read(os.fspath(path), as_version=4)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


class NotebookKernel:
    """One kernel process with a blocking client.

    Args:
        cwd: The kernel's working directory (where the notebook lives).
        env: Extra environment variables for the kernel process.
        kernel_name: The kernelspec to start.
        stderr: Where the kernel process's stderr goes (a file object or
            ``subprocess.DEVNULL``); the terminal when None.
    """

    def __init__(
        self,
        cwd: str | os.PathLike[str],
        env: dict[str, str] | None = None,
        kernel_name: str = "python3",
        stderr: Any = None,
    ) -> None:
        self._nbformat, manager = require_kernel_packages()
        self.started_at = time.monotonic()
        self.manager: KernelManager = manager.KernelManager(kernel_name=kernel_name)
        extra = {} if stderr is None else {"stderr": stderr}  # e.g. a log file, or DEVNULL
        self.manager.start_kernel(
            cwd=os.fspath(cwd), env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, **extra
        )
        self.client = self.manager.blocking_client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=DEFAULT_TIMEOUT)

    @property
    def pid(self) -> int:
        """The kernel's process id."""
        process = self.manager.provisioner.process  # type: ignore[union-attr]
        return int(process.pid)

    def execute(self, source: str, timeout: float = DEFAULT_TIMEOUT) -> list[Any]:
        """Run one cell; its outputs (nbformat output nodes), or a ``CellExecutionError``."""
        outputs: list[Any] = []
        displays: dict[str, list[int]] = {}  # display_id -> indices into outputs

        def hook(message: dict[str, Any]) -> None:
            kind, content = message["msg_type"], message["content"]
            display_id = content.get("transient", {}).get("display_id")
            if kind in ("stream", "display_data", "execute_result", "error"):
                if display_id:
                    displays.setdefault(display_id, []).append(len(outputs))
                outputs.append(self._nbformat.v4.output_from_msg(message))
            elif kind == "update_display_data" and display_id in displays:
                updated = self._nbformat.v4.new_output(
                    "display_data", data=content["data"], metadata=content.get("metadata", {})
                )
                for index in displays[display_id]:
                    outputs[index] = updated
            elif kind == "clear_output":
                outputs.clear()
                displays.clear()

        reply = self.client.execute_interactive(source, timeout=timeout, output_hook=hook)
        if reply["content"]["status"] != "ok":
            raise CellExecutionError(source, reply["content"])
        return outputs

    def start(self, source: str) -> str:
        """Send a cell without waiting for it (it may be killed while it runs)."""
        msg_id: str = self.client.execute(source)
        return msg_id

    def alive(self) -> bool:
        """True while the kernel process exists."""
        return bool(self.manager.is_alive())

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
        """Send ``sig`` to the kernel process; for SIGKILL, wait until it is gone."""
        os.kill(self.pid, sig)
        if sig != signal.SIGKILL:
            return
        end = time.monotonic() + timeout
        while self.alive() and time.monotonic() < end:
            time.sleep(0.02)

    def close(self) -> None:
        """Stop the client and shut the kernel down if it still runs."""
        self.client.stop_channels()
        if self.alive():
            self.manager.shutdown_kernel(now=True)


def run_notebook(
    path: str | os.PathLike[str],
    *,
    env: dict[str, str] | None = None,
    output: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[list[Any]]:
    """Execute every code cell of a notebook in a fresh kernel (Restart & Run All).

    Returns each code cell's outputs; with ``output``, also writes the executed notebook there.
    """
    nbformat, _ = require_kernel_packages()
    notebook = nbformat.read(os.fspath(path), as_version=4)
    kernel = NotebookKernel(Path(path).resolve().parent, env)
    results: list[list[Any]] = []
    try:
        for count, cell in enumerate((c for c in notebook.cells if c.cell_type == "code"), 1):
            try:
                cell.outputs = kernel.execute(cell.source, timeout)
            except CellExecutionError as exc:
                cell.outputs = [
                    nbformat.v4.new_output(
                        "error", ename=exc.ename, evalue=exc.evalue, traceback=[exc.traceback]
                    )
                ]
                raise
            finally:
                cell.execution_count = count
                results.append(cell.outputs)
                if output is not None:
                    nbformat.write(notebook, os.fspath(output))
    finally:
        kernel.close()
    return results
