"""Shared fixtures: engines on real journal files in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from weft_nb.testing import TestEngine


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.duckdb"


@pytest.fixture
def engine(journal_path: Path) -> Iterator[TestEngine]:
    """A TestEngine (virtual, auto-advancing clock) on a real DuckDB file."""
    with TestEngine(journal_path, heartbeat_interval=0.01) as eng:
        yield eng
