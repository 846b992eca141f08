"""``%weft journal``, ``executor``, ``checkpoints`` and ``queue``: where things live and run.

Each changes a setting of the notebook's session (and so what its next engine opens); each
has a parser (``<name>_parser``) that declares its arguments for the help. Mistakes raise
``UsageError``, checked before the engine in use is closed.
"""

from __future__ import annotations

import os

from IPython.core.error import UsageError

from weft_nb.errors import WeftError
from weft_nb.executors.spec import executor_from_spec
from weft_nb.notebook.session import NotebookSession
from weft_nb.notebook.usage import UsageParser, unquote


def journal_parser() -> UsageParser:
    """``%weft journal [PATH]``."""
    parser = UsageParser(
        "%weft journal",
        description="Show the journal in use, or switch to the journal at PATH (the engine "
        "open now is closed first, flushing its heartbeats).",
    )
    parser.add_argument("path", metavar="PATH", nargs="?", help="the journal file to use next")
    return parser


def journal(session: NotebookSession, rest: str) -> str | None:
    """``%weft journal [PATH]``: the journal in use, or switch to another one.

    Asked before the notebook is known (the cells run so far fit several notebooks), it says so
    and chooses none: the choice waits for a cell that tells them apart, or for a PATH.
    """
    text = _journal_path_text(rest)
    if text:
        session.switch_journal(usable_journal_path(text))
    waiting = session.undecided()
    if waiting is not None:
        print(f"no journal chosen yet. {waiting}")
        return None
    return session.journal_path()


def _journal_path_text(rest: str) -> str:
    """The path of ``%weft journal PATH``: one word, or quoted; otherwise a ``UsageError``.

    The line is read as free text (a Windows path keeps its backslashes), so a space in an
    unquoted line is a mistake: ``%weft journal a b c`` would otherwise name a file ``a b c``.
    """
    stripped = rest.strip()
    text = unquote(stripped)
    usage = journal_parser().usage_line()
    quoted = text != stripped
    if not quoted and stripped[:1] in ("'", '"'):
        raise UsageError(
            f"no closing quotation in {stripped!r}: close the quote "
            f"(%weft journal {stripped}{stripped[0]})\nusage: {usage}"
        )
    if quoted and stripped[0] in text:  # 'a' 'b': two quoted words
        raise UsageError(f"%weft journal takes one path, got {stripped}\nusage: {usage}")
    if not quoted and any(char.isspace() for char in text):
        raise UsageError(
            f"%weft journal takes one path, got {stripped!r}; quote a path with spaces: "
            f"%weft journal '{stripped}'\nusage: {usage}"
        )
    return text


def usable_journal_path(text: str) -> str:
    """``text`` as a journal path, its folder created; a ``UsageError`` says why it cannot be.

    Checked before the engine in use is closed, so a mistyped path leaves the notebook on the
    journal it had.
    """
    path = os.path.expanduser(text)
    advice = "choose another: %weft journal PATH"
    if "\0" in path:
        raise UsageError(f"the journal path {path!r} holds a NUL character; {advice}")
    if os.path.isdir(path):
        example = os.path.join(path, "notebook.duckdb")
        raise UsageError(f"{path} is a folder; name a file in it: %weft journal {example}")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):  # the nearest ancestor that is there
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(
            f"cannot use {path} as the journal: {existing} is a file, not a folder; {advice}"
        )
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot use {path} as the journal: its folder {folder} cannot be created "
            f"({exc.strerror or exc}); {advice}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot use {path} as the journal: {folder} is not writable; {advice}")
    return path


def executor_parser() -> UsageParser:
    """``%weft executor [KIND [N | ADDRESS]]``."""
    parser = UsageParser(
        "%weft executor",
        description="Show or switch where activity attempts run: thread (the kernel's threads, "
        "the default), process [N] (N worker processes) or dask ADDRESS (a Dask cluster). "
        "Registrations carry over; no run may be live.",
    )
    parser.add_argument("kind", metavar="KIND", nargs="?", help="thread, process or dask")
    parser.add_argument(
        "where", metavar="N|ADDRESS", nargs="?", help="worker processes, or the scheduler address"
    )
    return parser


def executor(session: NotebookSession, rest: str) -> str:
    """Where activities run: ``%weft executor [thread | process [N] | dask ADDRESS]``.

    Switching closes this notebook's engine (its registrations move to the next one) and
    opens the next one on the new executor, so no run may be live.
    """
    options = executor_parser().parse_line(rest)
    spec = " ".join(w for w in (options.kind, options.where) if w)
    if not spec:
        return session.executor_spec
    engine = session.open_engine
    if engine is not None:
        live = [r.run_id for r in engine.runs() if r.active]
        if live:
            raise UsageError(
                f"runs are live in this kernel ({', '.join(live)}); wait for them or "
                "cancel them before switching executors"
            )
    try:
        chosen = executor_from_spec(spec)  # a bad spec or an unreachable cluster: say so
    except (ValueError, WeftError) as exc:
        raise UsageError(f"%weft executor: {exc}") from None
    session.switch_executor(spec, chosen)
    return spec


def checkpoints_parser() -> UsageParser:
    """``%weft checkpoints [URL | default]``."""
    parser = UsageParser(
        "%weft checkpoints",
        description="Show or switch where checkpoints go: default (the folder beside the "
        "journal) or a URL (s3://bucket/prefix, gs://bucket/prefix, a shared path) that workers "
        "write to directly; options (endpoint, credentials) from %config "
        "WeftMagics.storage_options. Registrations carry over; no run may be live.",
    )
    parser.add_argument("url", metavar="URL", nargs="?", help="a storage URL, or default")
    return parser


def checkpoints(session: NotebookSession, rest: str) -> str:
    """Where checkpoints go: ``%weft checkpoints [URL | default]``.

    Switching closes this notebook's engine and opens the next one with the new storage (the
    journal keeps the references of older checkpoints, which stay readable where they are).
    """
    options = checkpoints_parser().parse_line(rest)
    engine = session.open_engine
    if options.url is None:
        if engine is not None:
            storage = engine.checkpoints.storage
            return storage.url if storage is not None else engine.checkpoints.root
        return session.settings.checkpoint_storage or "default (the folder beside the journal)"
    url = "" if options.url == "default" else options.url
    if engine is not None:
        live = [r.run_id for r in engine.runs() if r.active]
        if live:
            raise UsageError(
                f"runs are live in this kernel ({', '.join(live)}); wait for them or "
                "cancel them before switching checkpoint storage"
            )
    session.switch_checkpoints(url)
    return url or "default"


def queue_parser() -> UsageParser:
    """``%weft queue [NAME [LIMIT | none]]``."""
    parser = UsageParser(
        "%weft queue",
        description="Show the queue limits, show one, set one (%weft queue gpu 1: one gpu "
        "attempt at a time, whatever the executor) or remove one (%weft queue gpu none). A live "
        "engine takes a change at once.",
    )
    parser.add_argument(
        "name", metavar="NAME", nargs="?", help="the queue (--queue of an activity)"
    )
    parser.add_argument(
        "limit", metavar="LIMIT", nargs="?", help="attempts running at once (>= 1), or none"
    )
    return parser


def queue(session: NotebookSession, rest: str) -> dict[str, int]:
    """Queue limits: ``%weft queue`` shows them, ``%weft queue gpu 1`` sets one.

    ``%weft queue gpu none`` removes it; ``%config WeftMagics.queue_limits = {...}`` sets
    them all. A live engine takes a change at once (for attempts not yet started).
    """
    parser = queue_parser()
    options = parser.parse_line(rest)
    name, text = options.name, options.limit
    if name is not None and "=" in name:  # gpu=2: a limit written as key=value
        queue_name, _, limit = name.partition("=")
        example = f"%weft queue {queue_name or 'NAME'} {limit or 'LIMIT'}"
        raise UsageError(
            f"{name!r}: a queue name holds no '='; to set a limit, write NAME and LIMIT apart: "
            f"{example}\nusage: {parser.usage_line()}"
        )
    settings = session.settings
    if name is not None and text is not None:
        if text.lower() != "none" and not (text.isdigit() and int(text) >= 1):
            raise UsageError(
                f"the limit of queue {name!r} must be >= 1 or none\nusage: {parser.usage_line()}"
            )
        limits = dict(settings.queue_limits)
        if text.lower() == "none":
            limits.pop(name, None)
        else:
            limits[name] = int(text)
        settings.queue_limits = limits  # the trait's observer updates a live engine
    elif name is not None:
        return {q: n for q, n in dict(settings.queue_limits).items() if q == name}
    return dict(settings.queue_limits)
