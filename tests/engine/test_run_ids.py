"""Run ids become folder names safely; what cannot be a run id is refused at ``start`` (issue 12.7).

Before: ``run_id="../../x"`` or an absolute id wrote checkpoints outside the checkpoint folder,
and a NUL in a run id failed late, after the run was recorded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import training

from weft_nb import Engine
from weft_nb.errors import InvalidRunIdError, WeftError


def _pickles(folder: Path) -> set[Path]:
    return set(folder.rglob("*.pkl"))


def test_hostile_run_ids_keep_checkpoints_inside_the_folder(tmp_path: Path) -> None:
    journal = tmp_path / "deep" / "j.duckdb"
    ids = ["../../x", "../escape", str(tmp_path / "absolute"), "a/b", ".", "..", "A", "a", "é 1"]
    with Engine(journal) as eng:
        for index, run_id in enumerate(ids):
            assert eng.run(training, index + 1, run_id=run_id) == index + 1
        root = Path(eng.checkpoints.root)
        for index, run_id in enumerate(ids):
            assert eng.checkpoints.load_latest(run_id, 0) == {"epoch": index + 1}
            for record in eng.journal.checkpoints_of(run_id, 0):
                assert ".." not in Path(record.path).parts
                assert not os.path.isabs(record.path)
    inside = _pickles(root)
    assert _pickles(tmp_path) == inside  # nothing anywhere else
    # one folder per run: distinct ids never share one, not even by case
    folders = {p.relative_to(root).parts[0] for p in inside}
    assert len({f.lower() for f in folders}) == len(ids)
    with Engine(journal) as eng:  # reopened: every run still finds its checkpoints
        assert [eng.checkpoints.load_latest(r, 0) for r in ids] == [
            {"epoch": i + 1} for i in range(len(ids))
        ]


@pytest.mark.parametrize(
    "run_id",
    [
        "",
        "a\x00b",
        "line\nbreak",
        "tab\there",
        "bell\x07",
        "x" * 257,
        "\ud800",
        " ",
        "\u00a0\u3000",
    ],
    ids=[
        "empty",
        "nul",
        "newline",
        "tab",
        "control",
        "too-long",
        "lone-surrogate",
        "space",
        "unicode-spaces",
    ],
)
def test_unusable_run_ids_are_refused_before_anything_is_written(
    tmp_path: Path, run_id: str
) -> None:
    with Engine(tmp_path / "j.duckdb") as eng:
        with pytest.raises(ValueError, match="run id") as caught:
            eng.start(training, 1, run_id=run_id)
        assert isinstance(caught.value, WeftError)
        assert type(caught.value).__name__ == "InvalidRunIdError"
        assert "not usable" in str(caught.value)
        with pytest.raises(ValueError, match="run id"):
            eng.run(training, 1, run_id=run_id)
        assert eng.runs() == []
        assert eng.run(training, 1, run_id="x" * 256) == 1  # the longest usable id


def test_a_whitespace_only_run_id_is_refused_and_the_message_says_why(tmp_path: Path) -> None:
    with Engine(tmp_path / "j.duckdb") as eng:
        with pytest.raises(InvalidRunIdError, match=r"run id ' ' is not usable: it is only white"):
            eng.start(training, 1, run_id=" ")
        assert eng.run(training, 1, run_id=" a ") == 1  # spaces around a name are fine
