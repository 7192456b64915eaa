"""Servers and runners the tests start as real subprocesses: each in a session (process group) of its
own, stopped by its pid's group, never left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

# The console scripts of the environment running the tests (the project's .venv under ./scripts/test).
BIN_DIR = Path(sys.executable).parent
STOP_TIMEOUT = 20.0


class Processes:
    """Subprocesses, each in a session of its own with its output in a log file; on exit their
    whole process groups (code servers and run workers included) are stopped together."""

    def __init__(self, cwd: Path, env: Mapping[str, str]) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM to every group at once (each takes seconds to shut down), SIGKILL to what outlives STOP_TIMEOUT."""
        for process in self.started:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.started:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        # A leader may exit before its children; its group lives on as long as any of them does.
        while time.monotonic() < deadline and any(_group_alive(process) for process in self.started):
            time.sleep(0.2)
        for process in self.started:
            if _group_alive(process):
                _signal_group(process, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # start_new_session made each process the leader of a group whose id is its pid.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _group_alive(process: subprocess.Popen[bytes]) -> bool:
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True
