"""Executors by name: the one module that knows every executor, for ``%weft executor``.

``executor_from_spec("process 4")`` builds the executor a short description names. The executor
modules know nothing of each other (``base`` defines the interface and the thread executor,
``process`` and ``dask`` build on ``remote``); this module alone names them all, so adding an
executor touches it and nothing else. The process and Dask modules are imported only when a
description names them, so ``%load_ext weft_nb`` stays quick.
"""

from __future__ import annotations

from weft_nb.executors.base import Executor, ThreadExecutor

EXECUTOR_USAGE = "thread | process [N] | dask ADDRESS"


def executor_from_spec(spec: str) -> Executor:
    """Build an executor from a short description: ``thread``, ``process 4``, ``dask tcp://h:8786``.

    Raises:
        ValueError: The description is not one of those (the message gives the forms).
    """
    words = spec.split()
    kind, args = (words[0], words[1:]) if words else ("", [])
    if kind == "thread" and not args:
        return ThreadExecutor()
    if kind == "process" and len(args) <= 1:
        if args and not (args[0].isdigit() and int(args[0]) >= 1):
            raise ValueError(f"process takes a worker count >= 1, not {args[0]!r}")
        from weft_nb.executors.process import ProcessExecutor

        return ProcessExecutor(max_workers=int(args[0]) if args else None)
    if kind == "dask" and len(args) == 1:
        from weft_nb.executors.dask import DaskExecutor

        return DaskExecutor(args[0])
    raise ValueError(f"unknown executor {spec.strip()!r}; use one of: {EXECUTOR_USAGE}")
