"""weft_nb runs on POSIX systems (Linux, macOS): the check ``import weft_nb`` makes first.

A journal's safety rests on POSIX calls that Windows does not have: ``fcntl.flock`` (the
single-writer lock on ``<journal>.lock`` and on the per-file lock of `weft_nb.journal.alias_lock`,
released by the operating system when a process dies), ``fsync`` of a folder after a checkpoint's
rename, and ``os.pread``/``os.pwrite`` on the lock's holder record. Without them weft_nb would
fail deep inside the journal with ``No module named 'fcntl'``, or, worse, run without its
guarantees. So `require_posix()` runs before ``weft_nb/__init__.py`` imports anything else, and
raises ``UnsupportedPlatformError`` naming the platform, what is missing and what to do (WSL 2,
a container, a Linux or macOS machine). The decision is written up in docs/platforms.md.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from weft_nb.errors import UnsupportedPlatformError

# The module without which a journal cannot be locked: not on Windows, nor in some WebAssembly
# builds of Python (Pyodide) that call themselves POSIX.
REQUIRED_MODULE = "fcntl"


def require_posix() -> None:
    """Raise ``UnsupportedPlatformError`` unless this is a POSIX system that has ``fcntl``.

    Raises:
        UnsupportedPlatformError: On Windows (``os.name == "nt"``), or anywhere ``fcntl`` is
            missing.
    """
    if os.name != "posix" or importlib.util.find_spec(REQUIRED_MODULE) is None:
        raise UnsupportedPlatformError(sys.platform)
