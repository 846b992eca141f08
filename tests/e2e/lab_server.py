"""A JupyterLab server for the browser test, and where to find the system Chromium.

The server listens on 127.0.0.1 only, with no token (nothing but loopback reaches it), serves a
temporary folder, and reads nothing from the user's own Jupyter setup.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers import wait_until

REPO = Path(__file__).resolve().parents[2]
SERVER_START_SECONDS = 120.0
# Chromium's own background traffic (updates, sync, QUIC probes) is refused on a closed network
# and slows every page: these flags turn it off.
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The system Chromium (Debian's ``chromium``); Playwright's own browser download is unused."""
    found = os.environ.get("WEFT_E2E_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise AssertionError(
            "the browser test needs Debian's chromium: apt-get install chromium "
            "(or set WEFT_E2E_CHROMIUM to a Chromium binary)"
        )
    return found


class Lab:
    """A running JupyterLab: its base URL, the folder it serves, and its log."""

    def __init__(self, url: str, root: Path, log: Path) -> None:
        self.url = url
        self.root = root
        self.log = log

    def log_tail(self) -> str:
        """The end of the server's log, for failure messages."""
        return self.log.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}api/status", timeout=5) as response:
            return dict(json.load(response))
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _isolated_environment(home: Path) -> dict[str, str]:
    """Environment for a JupyterLab whose configuration all lives under ``home``.

    Its one kernel is this interpreter (the project's venv). Its settings turn off the news and
    update notifications (a toast over the page), start a notebook's kernel without asking, and
    turn off notebook windowing, so every cell's output is in the DOM, not only the cells on
    screen.
    """
    data = home / "data"
    kernel = data / "kernels" / "python3"
    kernel.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    (kernel / "kernel.json").write_text(json.dumps(spec))
    settings = {
        "notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }
    for plugin, values in settings.items():
        path = home / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(data),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        IPYTHONDIR=str(home / "ipython"),
    )
    return env


@contextlib.contextmanager
def running_lab(home: Path, root: Path) -> Iterator[Lab]:
    """Start JupyterLab serving ``root`` (its settings and log under ``home``); stop it after."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = home / "server.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    with log.open("wb") as out:
        server = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_isolated_environment(home),
            cwd=root,
            start_new_session=True,
        )
    lab = Lab(url, root, log)
    try:
        try:
            wait_until(lambda: server.poll() is not None or _status(url), SERVER_START_SECONDS)
        except AssertionError:
            raise AssertionError(f"JupyterLab did not answer on {url}:\n{lab.log_tail()}") from None
        if server.poll() is not None:
            raise AssertionError(f"JupyterLab exited ({server.returncode}):\n{lab.log_tail()}")
        yield lab
    finally:
        server.terminate()  # SIGTERM: the server shuts its kernels down, then exits
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
