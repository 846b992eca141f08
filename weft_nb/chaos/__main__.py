"""``python -m weft_nb.chaos``: the fault-injection harness (`weft_nb.chaos.harness`)."""

from __future__ import annotations

from weft_nb.chaos.harness import main

raise SystemExit(main())
