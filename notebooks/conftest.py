"""nbval collection for the example notebooks: skip the PyTorch one where PyTorch is missing."""

from __future__ import annotations

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["*torch*.ipynb"]
