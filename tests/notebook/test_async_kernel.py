"""Awaiting runs in a real Jupyter kernel (issue 15): what the kernel does while a cell awaits.

Found with ipykernel 7: while a cell awaits a run (top-level ``await``), the kernel keeps
handling comm messages, so widget buttons (the panel's Cancel, an Approve) work; a second
*cell* still waits for the first to finish, as with a blocking cell. While a cell blocks
(``%weft run``, ``engine.run``), comm messages wait too. docs/guides/async.md says the same.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from jupyter_kernels import DEADLINE, Kernel, start_kernel

pytestmark = pytest.mark.crash  # slow: real kernels

SETUP = """
import asyncio, weft_nb
engine = weft_nb.Engine({journal!r})

@weft_nb.activity
async def fetch(x):
    await asyncio.sleep(0)
    return x * 10

@weft_nb.workflow
async def approval(ctx, x):
    value = await ctx.run(fetch, x)
    decision = await ctx.wait_for_signal("approve")
    return {{"value": value, "decision": decision}}

awaiting = {{"now": False}}

def button(comm, _open):  # a stand-in for an Approve button: a comm whose message signals
    @comm.on_msg
    def clicked(message):
        engine.signal(message["content"]["data"]["run_id"], "approve", awaiting["now"])

get_ipython().kernel.comm_manager.register_target("approve-button", button)
"""

AWAIT_CELL = """
awaiting["now"] = True
result = await engine.run_async(approval, 4, run_id="a1")
awaiting["now"] = False
print("first cell done", result)
"""


def shell_message(kernel: Kernel, msg_type: str, content: dict[str, Any]) -> None:
    kernel.client.shell_channel.send(kernel.client.session.msg(msg_type, content))


def replies_in_order(kernel: Kernel, msg_ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The execute replies of ``msg_ids``, in the order the kernel sent them."""
    got: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + DEADLINE
    while len(got) < len(msg_ids):
        assert time.monotonic() < deadline, f"no reply within {DEADLINE}s: {got}"
        reply = kernel.client.get_shell_msg(timeout=DEADLINE)
        parent = reply["parent_header"].get("msg_id")
        if parent in msg_ids:
            got.append((parent, reply["content"]))
    return got


def test_a_cell_awaiting_a_run_lets_comm_messages_through(
    tmp_path: Path, kernels: list[Kernel]
) -> None:
    kernel = start_kernel(tmp_path, kernels)
    kernel.run(SETUP.format(journal=str(tmp_path / "nb.duckdb")))
    first = kernel.client.execute(AWAIT_CELL)
    # Approve while the first cell awaits: the run can only finish if the kernel handles it.
    comm_id = uuid.uuid4().hex
    opening = {"comm_id": comm_id, "target_name": "approve-button", "data": {}}
    shell_message(kernel, "comm_open", opening)
    shell_message(kernel, "comm_msg", {"comm_id": comm_id, "data": {"run_id": "a1"}})
    second = kernel.client.execute('print("second cell ran, awaiting:", awaiting["now"])')
    replies = replies_in_order(kernel, [first, second])
    assert [parent for parent, _ in replies] == [first, second]  # cells run one at a time
    assert all(content["status"] == "ok" for _, content in replies), replies
    # The signal's payload says the first cell was still awaiting when the click came.
    kernel.run('assert result == {"value": 40, "decision": True}, result')
    kernel.run('assert awaiting["now"] is False')


def test_the_panels_cancel_button_cancels_a_run_a_cell_awaits(
    tmp_path: Path, kernels: list[Kernel]
) -> None:
    kernel = start_kernel(tmp_path, kernels)
    kernel.run("%load_ext weft_nb")
    kernel.run(f"%weft journal {tmp_path / 'nb.duckdb'}")
    kernel.run("%%weft_workflow waits(x)\nawait ctx.wait_for_signal('never')")
    kernel.run("handle = %weft run waits x=1 --id c1 --background")
    # The Cancel button of the run's panel, as the browser addresses it: its widget model id.
    kernel.run(
        "import ipywidgets\n"
        "cancel_id, = [w.model_id for w in list(ipywidgets.Widget.widgets.values())\n"
        "              if getattr(w, 'description', None) == 'Cancel']"
    )
    kernel.client.execute("cancel_id", user_expressions={"id": "cancel_id"})
    reply = kernel.client.get_shell_msg(timeout=DEADLINE)
    model_id = reply["content"]["user_expressions"]["id"]["data"]["text/plain"].strip("'")
    awaiting = kernel.client.execute("await handle")
    click = {"method": "custom", "content": {"event": "click"}}
    shell_message(kernel, "comm_msg", {"comm_id": model_id, "data": click})
    ((_, content),) = replies_in_order(kernel, [awaiting])
    assert content["status"] == "error"
    assert content["ename"] == "WorkflowCancelledError", content
