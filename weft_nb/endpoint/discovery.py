"""The endpoint's discovery file: how the ``weft-nb`` command line finds a serving kernel.

While it serves, the endpoint's URL and bearer token are recorded in ``<journal>.endpoint.json``
beside the journal (mode 0600: readable by this user only; the engine names the file, see
`weft_nb.journal.paths.endpoint_file()`), so the command line can reach the kernel that holds
the journal. The file is removed when the server stops (and at interpreter exit); one left by a
killed process is ignored, because its PID no longer holds the journal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from typing import Any

log = logging.getLogger("weft_nb.server")


def read_endpoint(path: str) -> dict[str, Any] | None:
    """The recorded endpoint (``url``, ``token``, ``pid``, ``host``, ``since``), or None."""
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) and isinstance(loaded.get("url"), str) else None


def record_endpoint(path: str, url: str, auth_token: str | None) -> bool:
    """Write the discovery file (mode 0600, atomically); False, with a warning, if it cannot."""
    info = {
        "url": url,
        "token": auth_token,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.time(),
    }
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a leftover tmp file may have had another mode
            os.write(fd, json.dumps(info).encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        log.warning(
            "weft_nb endpoint could not be recorded in %s (%s); weft-nb cannot find it", path, exc
        )
        return False
    return True


def forget_endpoint(path: str, url: str) -> None:
    """Remove the discovery file at ``path``, if it still describes this process's ``url``."""
    recorded = read_endpoint(path)
    if recorded and recorded.get("pid") == os.getpid() and recorded.get("url") == url:
        with contextlib.suppress(OSError):
            os.unlink(path)
