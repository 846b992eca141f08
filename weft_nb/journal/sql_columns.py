"""Which BLOB columns a user's query can read, told from DuckDB's own parse tree.

``%weft sql`` copies the tables a query reads into a sandbox (`weft_nb.journal.sql_sandbox`).
The
BLOB columns (``steps.input``/``result``, ``heartbeats.details``, ``async_tokens.payload``) are
most of a journal's bytes and most queries never look at them, so they are copied as NULL unless
the query may read them. The question is answered from ``json_serialize_sql`` (DuckDB's parser,
the same one that runs the query), never from the text alone, and every doubt copies them: a
``*``/``COLUMNS(...)``, a positional reference (``#2``), a whole row used as a value
(``SELECT s FROM steps s``, ``to_json(steps)``), renamed columns (``FROM steps s(a, b)``), a table
function (``query_table('steps')``), ``SHOW``/``DESCRIBE``/``SUMMARIZE``, a PIVOT, or anything
the serializer cannot handle. Otherwise a column is copied when its name appears as (a part of)
any column reference, whichever table that reference belongs to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from weft_nb.base.duckdb_engine import duckdb

# Table references whose columns are the base tables' own, under their own names.
_PLAIN_TABLE_REFS = frozenset({"BASE_TABLE", "SUBQUERY", "JOIN", "EMPTY", "EXPRESSION_LIST"})
# Expressions that reach columns without naming them.
_UNNAMED_COLUMN_EXPRESSIONS = frozenset({"STAR", "POSITIONAL_REFERENCE"})


class _Unsure(Exception):
    """The query may read columns it does not name."""


def named_columns(parser: duckdb.DuckDBPyConnection, queries: Iterable[str]) -> set[str] | None:
    """The lower-case names the queries' column references use, or None when in doubt.

    Args:
        parser: A connection used only to parse (it never sees a journal).
        queries: The SELECT statements to be run (an EXPLAIN's explained statement, not the
            EXPLAIN itself).

    Returns:
        Every part of every column reference (``s.result`` gives ``s`` and ``result``); None
        when the queries may read a column without naming it (see the module docstring).
    """
    names: set[str] = set()
    try:
        for query in queries:
            row = parser.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
            tree = json.loads(row[0]) if row else {"error": True}
            if tree.get("error", True):
                return None
            names |= _references(tree)
    except (duckdb.Error, ValueError, _Unsure):
        return None
    return names


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


def _references(tree: dict[str, Any]) -> set[str]:
    """Column reference parts in one parse tree; raises _Unsure when a column may go unnamed."""
    rows: set[str] = set()  # names that, used as a column, mean a whole row
    parts: list[list[str]] = []
    for node in _nodes(tree):
        kind = node.get("type")
        if "class" in node:
            if node["class"] in _UNNAMED_COLUMN_EXPRESSIONS:
                raise _Unsure
            if node["class"] == "COLUMN_REF":
                parts.append([str(name).lower() for name in node.get("column_names", [])])
        elif "alias" in node:  # a table reference
            if kind not in _PLAIN_TABLE_REFS or node.get("column_name_alias"):
                raise _Unsure
            rows |= {str(node.get(key, "")).lower() for key in ("alias", "table_name")}
        elif kind == "SHOW_REF":  # (carries no alias in some versions)
            raise _Unsure
        if "cte_map" in node:
            rows |= {str(entry.get("key", "")).lower() for entry in node["cte_map"]["map"]}
    if any(reference and reference[-1] in rows for reference in parts):
        raise _Unsure
    return {name for reference in parts for name in reference}
