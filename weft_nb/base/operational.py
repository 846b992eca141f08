"""Operational trouble: a warning users can filter, and the same message on a ``weft_nb`` logger.

Damage, a full disk or an unusable sidecar are not the user's mistakes: an application that
configures ``logging`` must see them in its logs, while the warnings (some, such as
``JournalDamageWarning``, are documented and caught by tests and harnesses) stay as they were.
"""

from __future__ import annotations

import logging
import warnings


def report(
    message: str,
    category: type[Warning],
    stacklevel: int = 1,
    *,
    logger: str = "weft_nb.journal",
) -> None:
    """Log ``message`` at WARNING on ``logger``, then warn as ``warnings.warn`` would here."""
    logging.getLogger(logger).warning(message, extra={"warning": category.__name__})
    warnings.warn(message, category, stacklevel=stacklevel + 1)
