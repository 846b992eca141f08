"""Who holds a journal: the lock file's record, whether that process lives, and its endpoint."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from weft_nb.cli.text import format_time
from weft_nb.endpoint.discovery import read_endpoint
from weft_nb.errors import JournalLockedError
from weft_nb.journal.lock import holder_now
from weft_nb.journal.paths import endpoint_file, resolve_journal


def lock_holder(path: str) -> dict[str, Any]:
    """What the sidecar ``<journal>.lock`` says about the last engine that took it."""
    try:
        with open(resolve_journal(path) + ".lock", encoding="utf-8") as handle:
            loaded = json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def engine_holding(journal_path: str) -> dict[str, Any] | None:
    """The engine holding the journal now (its lock file's record, maybe empty), or None.

    Asks the lock, not the recorded PID: a closed engine's process may live on (a notebook
    whose engine was closed, a kernel that switched journals), and its PID stays in the record.
    ``journal_path`` is the resolved journal (a reader's ``journal.path``).

    Raises:
        JournalIOError: The file system cannot lock, so nobody can tell.
    """
    return holder_now(journal_path + ".lock")


def describe_holder(holder: dict[str, Any]) -> str:
    """``PID 123 on host (program), since ...``: the lock holder, for messages."""
    text = f"PID {holder.get('pid', '?')}"
    if holder.get("host") and holder.get("host") != socket.gethostname():
        text += f" on {holder['host']}"
    if holder.get("program"):
        text += f" ({holder['program']})"
    if isinstance(holder.get("since"), int | float):
        text += f", since {format_time(holder['since'])}"
    return text


def process_alive(holder: dict[str, Any]) -> bool:
    """Whether the recorded process still runs (on this host)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") not in (None, socket.gethostname()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serving_endpoint(path: str, holder_pid: int | None) -> dict[str, Any] | None:
    """The REST endpoint recorded by the engine that holds the journal, if it serves one."""
    where = endpoint_file(path)
    endpoint = read_endpoint(where)
    if endpoint is None or endpoint.get("pid") != holder_pid:
        return None  # none, or left behind by a process that no longer holds the journal
    if endpoint.get("host") not in (None, socket.gethostname()) or not process_alive(endpoint):
        return None  # on another machine (its loopback address is there), or its process died
    return {**endpoint, "file": where}


def busy_message(path: str, exc: JournalLockedError) -> str:
    """Why a read cannot open the file now: who holds it and what to do."""
    holder = lock_holder(path)
    pid = getattr(exc, "holder_pid", None)
    if holder and holder.get("pid") == pid:
        return (
            f"journal {path} is in use by a weft_nb engine: {describe_holder(holder)}. Its runs "
            "are active, and it keeps the file open until they finish (it lets go about 1 s after "
            "it goes idle). Retry then, or inspect it from that notebook (%weft sql, %weft show), "
            "or serve its REST endpoint (engine.serve(port=0, auth_token=...)) so that `weft-nb "
            "runs` and `weft-nb show` can ask it."
        )
    return (
        f"journal {path} is open in PID {pid if pid is not None else '?'}, which is not the "
        "weft_nb engine recorded in its lock file (a DuckDB shell, a viewer, another reader?). "
        "Close that connection and retry."
    )
