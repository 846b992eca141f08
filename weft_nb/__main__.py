"""``python -m weft_nb``: the ``weft-nb`` command line (see :mod:`weft_nb._cli`)."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
