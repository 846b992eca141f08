"""A large checkpoint is checksummed on a helper thread while it is written (issue 17, item 5).

The recorded crc32 must still be that of the file's bytes, in order, whatever mix of small
pickle frames and large array buffers the state pickles to, and for a background snapshot's
bytes; and the checkpoint must load back.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weft_nb.activity.checkpoints import CheckpointStore
from weft_nb.activity.restore import CRC32
from weft_nb.base.clock import RealClock
from weft_nb.journal.duckdb_journal import DuckDBJournal

MIB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CheckpointStore]:
    journal = DuckDBJournal(tmp_path / "j.duckdb")
    yield CheckpointStore(journal, RealClock(), keep=5)
    journal.close()


def _states() -> list[Any]:
    rng = np.random.default_rng(7)
    big = rng.random(6 * MIB // 8)  # 6 MiB: over the helper thread's threshold
    return [
        big,
        {"epoch": 3, "weights": big, "bias": rng.random(5 * MIB // 8), "note": "x" * 1000},
        [np.zeros(3), big[: 5 * MIB // 8].copy(), "between", rng.random(4 * MIB // 8 + 1)],
        {"small": list(range(1000))},
    ]


@pytest.mark.parametrize("index", range(4))
def test_the_recorded_checksum_is_the_files_own(store: CheckpointStore, index: int) -> None:
    state = _states()[index]
    record = store.save("run", 0, 1, state)
    data = (Path(store.root) / record.path).read_bytes()
    assert record.codec == f"{CRC32}{zlib.crc32(data):08x}"
    assert record.size == len(data)
    back = store.load_latest("run", 0)
    assert repr(back) == repr(state)


def test_a_snapshots_bytes_are_hashed_whole(store: CheckpointStore) -> None:
    state = _states()[1]
    record = store.save_snapshot("run", 1, 1, CheckpointStore.snapshot("run", 1, state))
    data = (Path(store.root) / record.path).read_bytes()
    assert record.codec == f"{CRC32}{zlib.crc32(data):08x}"
    assert repr(store.load_latest("run", 1)) == repr(state)
