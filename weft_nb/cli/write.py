"""The write commands of ``weft-nb``: ``complete``, ``fail``, ``signal`` and ``salvage``."""

from __future__ import annotations

import argparse
import contextlib
import os
import urllib.parse
from collections.abc import Callable
from typing import Any

from weft_nb.cli.holders import describe_holder, lock_holder, serving_endpoint
from weft_nb.cli.http import request_endpoint
from weft_nb.cli.reading import missing_journal
from weft_nb.errors import CliError, JournalLockedError
from weft_nb.journal.paths import endpoint_file

# -- writing -------------------------------------------------------------------------------------


def cmd_complete(args: argparse.Namespace) -> int:
    """``weft-nb complete TOKEN JSON``."""
    _write(
        args.journal,
        "complete",
        direct=lambda engine: engine.complete_async_activity(args.token, args.result),
        remote=("/api/v1/activities/complete", {"token": args.token, "result": args.result}),
    )
    print(f"completed {args.token}")
    return 0


def cmd_fail(args: argparse.Namespace) -> int:
    """``weft-nb fail TOKEN MESSAGE``."""
    message = " ".join(args.message)
    _write(
        args.journal,
        "fail",
        direct=lambda engine: engine.fail_async_activity(args.token, message),
        remote=("/api/v1/activities/fail", {"token": args.token, "error": message}),
    )
    print(f"failed {args.token}: {message}")
    return 0


def cmd_signal(args: argparse.Namespace) -> int:
    """``weft-nb signal RUN NAME JSON [--id SIGNAL_ID]``."""
    route = (
        f"/api/v1/runs/{urllib.parse.quote(args.run, safe='')}/signals/"
        f"{urllib.parse.quote(args.name, safe='')}"
    )
    answer = _write(
        args.journal,
        "signal",
        direct=lambda engine: engine.signal(
            args.run, args.name, args.payload, signal_id=args.signal_id
        ),
        remote=(route, {"payload": args.payload, "signal_id": args.signal_id}),
    )
    delivered = answer.get("delivered") if isinstance(answer, dict) else answer
    if delivered is False:
        print(
            f"signal {args.name!r} with id {args.signal_id!r} was already sent to run "
            f"{args.run!r}; ignored"
        )
    else:
        print(f"sent signal {args.name!r} to run {args.run!r}")
    return 0


def _write(
    path: str, command: str, *, direct: Callable[[Any], Any], remote: tuple[str, dict[str, Any]]
) -> Any:
    """Apply a write: on the journal itself when free, else through its holder's endpoint."""
    if not os.path.exists(path):
        raise missing_journal(path, command)
    from weft_nb.engine.engine import Engine

    try:
        engine = Engine(path, program=f"weft-nb {command}")
    except JournalLockedError as exc:
        holder = lock_holder(path)
        if not holder or holder.get("pid") == os.getpid():
            raise  # no engine holds it; the DuckDB file is open elsewhere (the message says)
        endpoint = serving_endpoint(path, holder.get("pid"))
        if endpoint is None:
            raise CliError(
                f"journal {path} is held by a weft_nb engine: {describe_holder(holder)}, which "
                "serves no REST endpoint, and only the holder may write the journal. Either run "
                "`engine.serve(port=0, auth_token=...)` in that kernel and retry (weft-nb finds "
                "the endpoint by itself), or use %weft complete / %weft fail / engine.signal(...) "
                "there, or close that engine (engine.close(), or shut the kernel down) and retry."
            ) from exc
        route, body = remote
        return request_endpoint(endpoint, "POST", route, body)
    try:
        with contextlib.suppress(OSError):  # we hold the journal: an endpoint file is stale
            os.unlink(endpoint_file(path))
        return direct(engine)
    finally:
        engine.close()


# -- salvage -------------------------------------------------------------------------------------


def cmd_salvage(args: argparse.Namespace) -> int:
    """``weft-nb salvage BROKEN TARGET``."""
    from weft_nb.journal.salvage import salvage

    report = salvage(args.broken, args.target)
    print(report.describe())
    return 0 if not report.damaged else 3
