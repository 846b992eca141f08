"""Fault injection over real kernels: ``python -m weft_nb.chaos NOTEBOOK --trials N [--seed S]``.

The campaign lives in `weft_nb.chaos.harness` and one trial's parts in
`weft_nb.chaos.trials`; this package re-exports their public face, so
``from weft_nb import chaos`` and ``chaos.main([...])`` keep working.
"""

from __future__ import annotations

from weft_nb.chaos.harness import Harness, main, summarise
from weft_nb.chaos.trials import FAULTS, Evidence, Outcome

__all__ = ["FAULTS", "Evidence", "Harness", "Outcome", "main", "summarise"]
