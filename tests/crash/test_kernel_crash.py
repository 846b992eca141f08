"""A real Jupyter kernel (jupyter_client) is SIGKILLed during an activity, then a fresh kernel runs
the whole notebook again, as Restart & Run All would: completed activities do not run again and
the interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from jupyter_kernels import (
    PREPARE_CELL,
    Kernel,
    evidence_folder,
    kill_then_run_all_again,
    opening_cells,
    read,
)

pytestmark = pytest.mark.crash


def notebook_cells(journal: Path, evidence: Path) -> list[str]:
    """The cells of a small training notebook; its activities leave evidence in files."""
    return [
        *opening_cells(journal, evidence),
        PREPARE_CELL,
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


def test_sigkilled_kernel_resumes_on_restart_and_run_all(
    tmp_path: Path, kernels: list[Kernel]
) -> None:
    evidence = evidence_folder(tmp_path)
    cells = notebook_cells(tmp_path / "nb.duckdb", evidence)

    first, second = kill_then_run_all_again(tmp_path, kernels, cells, evidence)

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
