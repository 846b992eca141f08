"""weft_nb runs on POSIX systems only, and says so at ``import weft_nb`` (docs/platforms.md).

Each case imports weft_nb in a fresh interpreter that looks like another system before the
import: ``os.name`` and ``sys.platform`` set as Windows sets them, and ``fcntl`` made unimportable
as it is there. The package's own check must speak first, with ``UnsupportedPlatformError``;
without it the import would die on ``No module named 'fcntl'`` deep inside the journal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

IMPORT_AS = r"""
import json, os, sys

os.name, sys.platform, missing = sys.argv[1], sys.argv[2], sys.argv[3] == "no-fcntl"
if missing:
    sys.modules["fcntl"] = None  # `import fcntl` now raises ModuleNotFoundError, as on Windows
try:
    import weft_nb
except BaseException as exc:
    print(json.dumps({
        "raised": type(exc).__name__,
        "bases": [c.__name__ for c in type(exc).__mro__],
        "message": str(exc),
        "platform": getattr(exc, "platform", None),
    }))
else:
    print(json.dumps({"raised": None, "version": weft_nb.__version__}))
"""


def import_as(os_name: str, platform: str, *, fcntl: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_NB_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_AS, os_name, platform, "fcntl" if fcntl else "no-fcntl"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_windows_gets_one_clear_error_at_import() -> None:
    outcome = import_as("nt", "win32", fcntl=False)
    assert outcome["raised"] == "UnsupportedPlatformError", outcome
    assert {"WeftError", "ImportError"} <= set(outcome["bases"])
    assert outcome["platform"] == "win32"
    message = outcome["message"]
    assert "Linux and macOS" in message and "'win32'" in message
    assert "fcntl.flock" in message and "fsync of a folder" in message  # why
    assert "WSL 2" in message  # what to do


@pytest.mark.parametrize(
    ("os_name", "platform"),
    [("posix", "emscripten"), ("nt", "win32")],
    ids=["posix-without-fcntl", "windows-name-only"],
)
def test_either_sign_of_a_non_posix_system_is_enough(os_name: str, platform: str) -> None:
    # Pyodide says "posix" but has no fcntl; a Windows without the missing module is not enough
    # to pass either: os.name alone decides there.
    outcome = import_as(os_name, platform, fcntl=os_name == "nt")
    assert outcome["raised"] == "UnsupportedPlatformError", outcome
    assert outcome["platform"] == platform


def test_this_posix_system_imports_weft_nb() -> None:
    outcome = import_as(os.name, sys.platform, fcntl=True)
    assert outcome == {"raised": None, "version": outcome["version"]}
