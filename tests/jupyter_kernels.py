"""A real Jupyter kernel (jupyter_client) driven from a test, as a notebook user drives one.

Shared by the kernel crash tests: the notebooks' activities leave evidence as JSON lines in a
folder (the cell from ``evidence_cell``), which the test reads with ``read`` and ``wait_for``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from helpers import wait_until
from jupyter_client.manager import KernelManager

DEADLINE = 120.0


def evidence_folder(tmp_path: Path) -> Path:
    """A new, empty folder for a notebook's evidence files."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    return evidence


def evidence_cell(evidence: Path) -> str:
    """The cell that defines ``note(kind, **fields)``: one fsynced JSON line in ``kind``.jsonl."""
    return (
        f"import json, os, time\nEVIDENCE = {str(evidence)!r}\n"
        "def note(kind, **fields):\n"
        "    with open(os.path.join(EVIDENCE, kind + '.jsonl'), 'a') as f:\n"
        "        f.write(json.dumps(fields) + '\\n'); f.flush(); os.fsync(f.fileno())"
    )


PREPARE_CELL = "%%weft_activity prepare(n)\nnote('prepare', pid=os.getpid())\nlist(range(n))"
"""An activity cell: ``prepare(n)`` notes its kernel's PID and returns ``list(range(n))``."""


def opening_cells(journal: Path, evidence: Path) -> list[str]:
    """A notebook's first cells: load weft_nb on ``journal``, define ``note`` on ``evidence``."""
    return ["%load_ext weft_nb", f"%weft journal {journal}", evidence_cell(evidence)]


class Kernel:
    """One kernel process and a blocking client."""

    def __init__(self, cwd: Path) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.client = self.manager.blocking_client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=DEADLINE)
        self.outputs: list[str] = []

    @property
    def pid(self) -> int:
        pid: int = self.manager.provisioner.process.pid  # type: ignore[union-attr]
        return pid

    def _hook(self, message: dict[str, Any]) -> None:
        content = message.get("content", {})
        if message.get("msg_type") == "error":
            self.outputs.append("ERROR " + "\n".join(content.get("traceback", [])))
        elif "text" in content:
            self.outputs.append(content["text"])

    def run(self, code: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.client.execute_interactive(
            code, timeout=DEADLINE, output_hook=self._hook
        )
        assert reply["content"]["status"] == "ok", (code, self.outputs)
        return reply

    def send(self, code: str) -> None:
        self.client.execute(code)

    def kill(self) -> None:
        """SIGKILL the kernel process and wait until its manager sees it dead."""
        os.kill(self.pid, signal.SIGKILL)
        wait_until(lambda: not self.manager.is_alive(), timeout=DEADLINE, what="the kernel's death")

    def close(self) -> None:
        self.client.stop_channels()
        if self.manager.is_alive():
            self.manager.shutdown_kernel(now=True)


def read(evidence: Path, kind: str) -> list[dict[str, Any]]:
    path = evidence / f"{kind}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(evidence: Path, kind: str) -> dict[str, Any]:
    """The newest evidence row of ``kind``, once there is one."""
    rows = wait_until(lambda: read(evidence, kind), timeout=DEADLINE, what=f"{kind!r} evidence")
    return rows[-1]


def start_kernel(cwd: Path, kernels: list[Kernel]) -> Kernel:
    """A fresh kernel, added to ``kernels`` (the fixture's list) so the test closes it."""
    kernel = Kernel(cwd)
    kernels.append(kernel)
    return kernel


def start_notebook(cwd: Path, kernels: list[Kernel], cells: list[str]) -> Kernel:
    """A fresh kernel that runs every cell but the last, then sends the last without waiting.

    For a notebook whose last cell is the blocking ``%weft run`` the kernel dies (or is
    restarted) inside.
    """
    kernel = start_kernel(cwd, kernels)
    for code in cells[:-1]:
        kernel.run(code)
    kernel.send(cells[-1])
    return kernel


def kill_then_run_all_again(
    cwd: Path, kernels: list[Kernel], cells: list[str], evidence: Path
) -> tuple[Kernel, Kernel]:
    """Run the notebook until a cell notes ``ready_to_die``, SIGKILL that kernel, then Restart &
    Run All in a fresh kernel. Returns the killed kernel and the new one.

    The dying cell loops until the ``killed-once`` evidence file exists, which is created just
    before the kill so the second kernel's run goes through.
    """
    first = start_notebook(cwd, kernels, cells)  # the kernel dies in the last cell
    dying = wait_for(evidence, "ready_to_die")
    assert dying["pid"] == first.pid
    (evidence / "killed-once").touch()
    first.kill()

    second = start_kernel(cwd, kernels)  # Restart & Run All
    for code in cells:
        second.run(code)
    return first, second
