"""A real Jupyter kernel (jupyter_client) is SIGKILLed during an activity, then a fresh kernel runs
the whole notebook again, as Restart & Run All would: completed activities do not run again and
the interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from jupyter_client.manager import KernelManager

pytestmark = pytest.mark.crash

DEADLINE = 120.0


def notebook_cells(journal: Path, evidence: Path) -> list[str]:
    """The cells of a small training notebook; its activities leave evidence in files."""
    return [
        "%load_ext weft_nb",
        f"%weft journal {journal}",
        f"import json, os, time\nEVIDENCE = {str(evidence)!r}\n"
        "def note(kind, **fields):\n"
        "    with open(os.path.join(EVIDENCE, kind + '.jsonl'), 'a') as f:\n"
        "        f.write(json.dumps(fields) + '\\n'); f.flush(); os.fsync(f.fileno())",
        "%%weft_activity prepare(n)\nnote('prepare', pid=os.getpid())\nlist(range(n))",
        "%%weft_activity train(data, epochs)\n"
        "state = activity.last_checkpoint or {'epoch': 0, 'total': 0}\n"
        "note('train_start', pid=os.getpid(), checkpoint=activity.last_checkpoint)\n"
        "for epoch in range(state['epoch'], epochs):\n"
        "    state = {'epoch': epoch + 1, 'total': state['total'] + sum(data) * (epoch + 1)}\n"
        "    activity.heartbeat({'epoch': epoch + 1})\n"
        "    activity.checkpoint(state)\n"
        "    note('epoch', pid=os.getpid(), epoch=epoch + 1)\n"
        "    if epoch + 1 == 2 and not os.path.exists(os.path.join(EVIDENCE, 'killed-once')):\n"
        "        note('ready_to_die', pid=os.getpid())\n"
        "        while True:\n"
        "            activity.heartbeat({'epoch': epoch + 1})\n"
        "            time.sleep(0.05)\n"
        "state['total']",
        "%%weft_workflow pipeline(n, epochs)\n"
        "data = ctx.run(prepare, n)\nctx.run(train, {'data': data, 'epochs': epochs})",
        "result = %weft run pipeline n=4 epochs=4\nnote('result', pid=os.getpid(), value=result)",
    ]


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


@pytest.fixture
def kernels(tmp_path: Path) -> Iterator[list[Kernel]]:
    started: list[Kernel] = []
    yield started
    for kernel in started:
        kernel.close()


def test_sigkilled_kernel_resumes_on_restart_and_run_all(
    tmp_path: Path, kernels: list[Kernel]
) -> None:
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    cells = notebook_cells(tmp_path / "nb.duckdb", evidence)

    first = Kernel(tmp_path)
    kernels.append(first)
    for code in cells[:-1]:
        first.run(code)
    first.send(cells[-1])  # the blocking %weft run; the kernel dies inside it
    dying = wait_for(evidence, "ready_to_die")
    assert dying["pid"] == first.pid
    (evidence / "killed-once").touch()
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: not first.manager.is_alive(), timeout=DEADLINE, what="the kernel's death")

    second = Kernel(tmp_path)  # Restart & Run All
    kernels.append(second)
    for code in cells:
        second.run(code)

    assert [r["pid"] for r in read(evidence, "prepare")] == [first.pid]  # not run again
    starts = read(evidence, "train_start")
    assert [s["pid"] for s in starts] == [first.pid, second.pid]
    assert starts[0]["checkpoint"] is None
    assert starts[1]["checkpoint"] == {"epoch": 2, "total": 6 * 3}  # resumed, not from zero
    epochs = [(e["pid"], e["epoch"]) for e in read(evidence, "epoch")]
    assert epochs == [(first.pid, 1), (first.pid, 2), (second.pid, 3), (second.pid, 4)]
    (result,) = read(evidence, "result")
    assert result == {"pid": second.pid, "value": 6 * (1 + 2 + 3 + 4)}  # as if never killed
    assert any("1 steps, 1 executed" in text for text in second.outputs), second.outputs
