"""How the ``weft-nb`` command line writes: errors, times, durations, tables and payloads.

Widths are terminal columns, not characters: a CJK run id takes two columns a character, so
tables pad and cut by `display_width()`, the one measure every table of the command line uses.
"""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from collections.abc import Sequence
from typing import Any, TextIO


def print_error(message: str) -> None:
    """Write ``weft-nb: error: MESSAGE`` on stderr."""
    print(f"weft-nb: error: {message}", file=sys.stderr)


def format_time(at: float | None) -> str:
    """A local date and time (``-`` for none)."""
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def format_seconds(seconds: float | None) -> str:
    """A duration, short: ``250ms``, ``4.2s``, ``3m05s``, ``2h10m`` (``-`` for none)."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.3g}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def span(start: float | None, end: float | None) -> float | None:
    """Seconds from ``start`` to ``end``, or None when either is unknown."""
    return None if start is None or end is None else max(0.0, end - start)


def char_width(char: str) -> int:
    """Columns one character takes in a terminal: 2, 1 or 0.

    East Asian wide (``W``) and fullwidth (``F``) characters take 2; combining marks and
    invisible format characters (a zero-width joiner) 0; the rest 1. Ambiguous-width characters
    (``A``: Greek, Cyrillic, some symbols) count 1, as terminals outside a CJK locale draw them.
    """
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal (see `char_width()`); ``len`` for ASCII."""
    return len(text) if text.isascii() else sum(char_width(c) for c in text)


def pad(text: str, width: int) -> str:
    """``text`` with spaces after it up to ``width`` columns (as ``ljust``, by display width)."""
    return text + " " * max(0, width - display_width(text))


def cut(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` columns with ``...`` (0: no limit)."""
    text = text.replace("\r", "").replace("\n", "\\n")
    if width <= 0 or display_width(text) <= width:
        return text
    room, used = max(1, width - 3), 0
    kept: list[str] = []
    for char in text:
        used += char_width(char)
        if used > room and kept:
            break
        kept.append(char)
    return "".join(kept) + "..."


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Print ``rows`` under ``header`` in left-aligned columns, aligned by display width."""
    widths = [display_width(h) for h in header]
    for row in rows:
        widths = [max(w, display_width(cell)) for w, cell in zip(widths, row, strict=True)]
    for line in (header, ["-" * w for w in widths], *rows):
        print("  ".join(pad(c, w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)


def payload(codec: str | None, data: bytes | None) -> dict[str, Any] | None:
    """A stored payload for export: decoded when its codec is JSON text, else described.

    ``json`` and ``pydantic:`` payloads are JSON text and decode without running any code;
    ``pickle`` payloads would need the classes they name (and unpickling runs code), so they
    are described by codec and size only.
    """
    if data is None:
        return None
    described: dict[str, Any] = {"codec": codec, "size": len(data)}
    if codec == "json" or (codec or "").startswith("pydantic:"):
        try:
            described["value"] = json.loads(data)
        except ValueError as exc:
            described["decode_error"] = str(exc)
    return described


def payload_text(codec: str | None, data: bytes | None, width: int = 100) -> str:
    """A stored payload in one line: its JSON value, or its codec and size."""
    described = payload(codec, data)
    if described is None:
        return "-"
    if "value" in described:
        return cut(json.dumps(described["value"], separators=(", ", ": "), default=str), width)
    return f"<{codec}, {described['size']:,} bytes>"


def error_json(text: str | None) -> Any:
    """A stored error: its JSON document, or the text itself when it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def error_text(text: str | None) -> str | None:
    """A stored error as ``Class: message``."""
    error = error_json(text)
    if error is None:
        return None
    if isinstance(error, dict):
        return f"{error.get('class', 'Error')}: {error.get('message', '')}"
    return str(error)
