"""Argument parsing for the magics: argparse that reports mistakes as IPython's ``UsageError``.

IPython shows a ``UsageError`` as one line, without a traceback, and the kernel keeps running;
plain argparse would print its own usage and raise ``SystemExit``.
"""

from __future__ import annotations

import argparse
from typing import Any

from IPython.core.error import UsageError


class UsageParser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` (naming the magic's usage) instead of exiting."""

    def __init__(self, usage: str) -> None:
        super().__init__(prog="weft", usage=usage, add_help=False, exit_on_error=False)

    def error(self, message: str) -> Any:
        """Raise ``UsageError`` with the message and the usage line."""
        raise UsageError(f"{message}\nusage: {self.usage}")
