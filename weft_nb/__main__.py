"""``python -m weft_nb``: the ``weft-nb`` command line (see `weft_nb.cli.main`)."""

from __future__ import annotations

from weft_nb.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
