"""This release's version: the one place it is written.

``weft_nb.__version__``, ``weft-nb --version`` and the built wheel's metadata all read it: hatch
takes the wheel's version from this file (``[tool.hatch.version]`` in ``pyproject.toml``), and
``tests/test_packaging.py`` builds the wheel and checks that the three agree. It lives below
every layer so the command line can print it without importing the package's public face.
"""

from __future__ import annotations

__version__ = "0.1.0"
