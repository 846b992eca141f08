"""DuckDB for weft_nb: its compiled engine module, without the ``duckdb`` package's Python layer.

The ``duckdb`` package (2.x) is a Python layer over its compiled extension, the top-level module
``_duckdb``: the package's ``__init__`` re-exports the extension's connections, exceptions and
functions (the same objects) and adds relation and expression helpers, and reads its own version
through ``importlib.metadata``. That layer costs 50-110 ms to import on a slow VM, the extension
10-20 ms, and every notebook pays it at ``%load_ext weft_nb``. weft_nb uses only what the extension
itself defines (``connect``, ``DuckDBPyConnection``, the exception classes, ``tokenize``), so it
imports the extension, and the package where the extension has another name.

Everything in weft_nb that needs DuckDB writes ``from weft_nb.base.duckdb_engine import duckdb``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["duckdb"]

if TYPE_CHECKING:
    import _duckdb as duckdb
else:
    try:
        import _duckdb as duckdb
    except ImportError:  # a packaging of DuckDB without the top-level extension module
        import duckdb
