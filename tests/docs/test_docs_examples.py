"""The SQL examples in docs/journal-schema.md run against a real journal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import weft_nb
from weft_nb.testing import TestEngine

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "journal-schema.md"


def sql_examples() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", SCHEMA_DOC.read_text(), flags=re.DOTALL)
    statements = []
    for block in blocks:
        lines = [line for line in block.splitlines() if not line.startswith("--")]
        statements += [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
    return statements


def test_the_doc_has_examples() -> None:
    assert len(sql_examples()) >= 3


@pytest.mark.parametrize("query", sql_examples())
def test_schema_doc_queries_run(engine: TestEngine, query: str) -> None:
    @weft_nb.activity
    def train(x: int, activity: weft_nb.ActivityContext) -> int:
        activity.heartbeat({"loss": 0.5})
        return x

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(train, x)

    engine.run(wf, 1)
    frame = engine.journal.select_frame(query)
    assert len(frame.columns) >= 2
