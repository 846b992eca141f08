"""Reading self-delimiting, checksummed records past damage: one walk for every log we keep.

The step log (`weft_nb.journal.step_log`) and the dispatch log
(`weft_nb.journal.dispatch_log`) frame
each record with its length and a CRC. A torn or flipped range must not hide the records after
it, so reading resynchronises: after a byte where no intact record starts, it tries the next
byte, until a whole record (header, CRC and payload) validates again. Each log says what an
intact record is (its ``record_at``); this module only walks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def walk(
    data: bytes,
    offset: int,
    record_at: Callable[[int], tuple[T, int] | None],
    *,
    damaged_from: int | None = None,
) -> Iterator[tuple[int, int, T | None]]:
    """Yield ``(start, end, record)`` per intact record, ``(start, end, None)`` per damaged range.

    Args:
        data: The log's bytes.
        offset: Where the first record should start (after a file magic).
        record_at: The record starting at an offset and the offset after it, or None when no
            intact record starts there. It may depend on state the caller updates between items
            (the step log's growing sequence numbers): the walk is lazy.
        damaged_from: Report ``[damaged_from, offset)`` as damaged too, joined to any damage right
            after it (a file magic that did not validate).
    """
    bad_start = damaged_from
    while offset < len(data):
        found = record_at(offset)
        if found is None:
            if bad_start is None:
                bad_start = offset
            offset += 1
            continue
        if bad_start is not None:
            yield bad_start, offset, None
            bad_start = None
        record, end = found
        yield offset, end, record
        offset = end
    if bad_start is not None:
        yield bad_start, len(data), None


def describe_ranges(damaged: list[tuple[int, int]]) -> str:
    """Damaged byte ranges for a message: the first ten, and how many more."""
    shown = ", ".join(f"{start}-{end}" for start, end in damaged[:10])
    return shown + (f" and {len(damaged) - 10} more" if len(damaged) > 10 else "")


def keep_aside(log_path: str, label: str = "damaged") -> str:
    """Rename a log out of the way (never overwriting an older copy); its new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = f"{log_path}.{label}-{stamp}"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{log_path}.{label}-{stamp}-{n}"
    os.replace(log_path, target)
    return target
