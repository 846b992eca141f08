"""Operational trouble and logging that never breaks a run.

Damage, a full disk or an unusable sidecar are not the user's mistakes: an application that
configures ``logging`` must see them in its logs, while the warnings (some, such as
``JournalDamageWarning``, are documented and caught by tests and harnesses) stay as they were.

`QuietLogger`: ``logging`` hands a record to every handler and filter without catching what
they raise (only the standard handlers catch their own errors), so a log shipper that fails would
otherwise fail the step or the run it was describing. Every logger of the engine is quiet: a
record that cannot be logged is dropped, and the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any


class QuietLogger:
    """A ``logging.Logger`` for the engine's records, whose handlers can never raise into it."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def isEnabledFor(self, level: int) -> bool:  # logging's own name
        """Whether a record at ``level`` would be handled (cheap: checked before formatting)."""
        return self.logger.isEnabledFor(level)

    def log(self, level: int, message: str, *args: Any, **kwargs: Any) -> None:
        """``Logger.log``, except that an error of a handler or filter is dropped."""
        self._log(level, message, args, kwargs)

    def debug(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log at DEBUG."""
        self._log(logging.DEBUG, message, args, kwargs)

    def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log at INFO."""
        self._log(logging.INFO, message, args, kwargs)

    def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log at WARNING."""
        self._log(logging.WARNING, message, args, kwargs)

    def error(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Log at ERROR."""
        self._log(logging.ERROR, message, args, kwargs)

    def _log(self, level: int, message: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        kwargs.setdefault("stacklevel", 3)  # the record names our caller, not this wrapper
        with contextlib.suppress(Exception):
            self.logger.log(level, message, *args, **kwargs)


def report(
    message: str,
    category: type[Warning],
    stacklevel: int = 1,
    *,
    logger: str = "weft_nb.journal",
) -> None:
    """Log ``message`` at WARNING on ``logger``, then warn as ``warnings.warn`` would here."""
    QuietLogger(logger).warning(message, extra={"warning": category.__name__})
    warnings.warn(message, category, stacklevel=stacklevel + 1)
