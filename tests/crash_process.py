"""A crash-test child process: started on a JSON config, awaited, killed, its evidence read.

``tests/crash/test_crash.py`` and ``tests/crash/test_crash_seed.py`` each run their own child
script (``tests/crash_children/``); this is what their child handles share. The child reports
through files in its evidence folder (``markers/<name>``, ``markers/error``, ``result.json``,
JSON-lines logs read with :func:`read_jsonl`), which survive its SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 60.0  # generous: a loaded 2-core machine starts Python + DuckDB slowly


class ChildProcess:
    """One child process running ``script`` on ``settings`` (written to ``<work>/<name>.json``)."""

    def __init__(
        self,
        work: Path,
        name: str,
        script: Path,
        settings: Mapping[str, Any],
        evidence: Path,
        *,
        kill_at: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.work = work
        self.name = name
        self.evidence = evidence
        self.evidence.mkdir(parents=True, exist_ok=True)
        config_path = work / f"{name}.json"
        config_path.write_text(json.dumps(dict(settings)))
        child_env = {k: v for k, v in os.environ.items() if k != "WEFT_NB_KILL_AT"}
        child_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), child_env.get("PYTHONPATH")])
        )
        child_env.update(env or {})
        if kill_at is not None:
            child_env["WEFT_NB_KILL_AT"] = kill_at
        self.log = work / f"{name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work,
                env=child_env,
            )
        self.pid = self.proc.pid
        self.started = time.monotonic()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def _check_alive(self, what: str) -> None:
        error = self.evidence / "markers" / "error"
        if error.exists():
            self.kill_quietly()
            pytest.fail(f"{self.name} reported {error.read_text()}:\n{self.output()}")
        if self.proc.poll() is not None:
            pytest.fail(
                f"{self.name} exited with {self.proc.returncode} before {what}:\n{self.output()}"
            )
        if time.monotonic() - self.started > DEADLINE:
            self.kill_quietly()
            pytest.fail(f"{self.name} did not reach {what} in {DEADLINE}s:\n{self.output()}")

    def wait_for(self, condition: Callable[[], Any], what: str) -> Any:
        """Poll ``condition()`` until truthy; fail clearly if the child died or time ran out."""
        while True:
            value = condition()
            if value:
                return value
            self._check_alive(what)
            time.sleep(0.01)

    def wait_marker(self, marker: str) -> Any:
        """Wait for ``markers/<marker>`` from this child; consume it and return its payload."""
        path = self.evidence / "markers" / marker
        self.wait_for(path.exists, f"marker {marker!r}")
        payload = json.loads(path.read_text())
        path.unlink()  # the next child may signal the same marker
        assert payload["pid"] == self.pid
        return payload["payload"]

    def kill_quietly(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the child and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.expect_killed()

    def expect_killed(self) -> None:
        """Wait for the child to die by SIGKILL (sent by us, weft_nb or the child itself)."""
        try:
            code = self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.kill_quietly()
            pytest.fail(f"{self.name} was not killed within {DEADLINE}s:\n{self.output()}")
        assert code == -signal.SIGKILL, (
            f"{self.name} exited with {code}, not by SIGKILL:\n{self.output()}"
        )
        assert not (self.evidence / "markers" / "error").exists(), self.output()

    def finish(self) -> dict[str, Any]:
        """Wait for a clean exit and return the run's outcome (``result.json``)."""
        try:
            code = self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.kill_quietly()
            pytest.fail(f"{self.name} did not finish within {DEADLINE}s:\n{self.output()}")
        assert code == 0, f"{self.name} exited with {code}:\n{self.output()}"
        outcome: dict[str, Any] = json.loads((self.evidence / "result.json").read_text())
        return outcome


class WorkflowChild(ChildProcess):
    """A child that runs (or, with ``api="resume"``, resumes) one workflow run of its script.

    The settings every workflow child reads: its journal (``<work>/journal.duckdb`` unless
    given), evidence folder (``<work>/evidence`` unless given), run id, workflow and input;
    ``config`` adds the script's own keys and may override ``api``.
    """

    def __init__(
        self,
        work: Path,
        name: str,
        script: Path,
        *,
        run_id: str,
        workflow: str,
        input: Any,
        journal: Path | None = None,
        evidence: Path | None = None,
        kill_at: str | None = None,
        env: Mapping[str, str] | None = None,
        **config: Any,
    ) -> None:
        self.journal = journal or work / "journal.duckdb"
        evidence = evidence or work / "evidence"
        settings = {
            "journal": str(self.journal),
            "evidence": str(evidence),
            "run_id": run_id,
            "workflow": workflow,
            "input": input,
            "api": "start",
            **config,
        }
        super().__init__(work, name, script, settings, evidence, kill_at=kill_at, env=env)


def read_jsonl(evidence: Path, name: str) -> list[dict[str, Any]]:
    """The whole JSON lines of ``evidence/name`` (none while it does not exist).

    A line without its newline is left out: a child may be appending it while the parent reads.
    """
    path = evidence / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line]
