"""The process test_kill_points kills: one ranged run of the whole graph on the DAGSTER_HOME instance.

`python -m feedback_assets_tests.kill_runner FIRST LAST`, with DAGSTER_HOME and FEEDBACK_* in the
environment, the settings coming from there as in the code location. It imports Dagster and the
graph first, prints `READY` and waits for a line on stdin, so the test can pay the seconds of
imports while the previous victim is still running. Nothing is opened or written before that line:
`go`, or `go HOLD <regex>`.

An audit hook reports each atomic write the pipeline makes, without touching the pipeline's code:
`KILLPOINT open <file>` just before the temporary file for <file> is created and
`KILLPOINT replace <file>` just before it is renamed into place, <file> being `export/...` or
`storage/...` relative to the two directories. The output is unbuffered.

`go HOLD <point> <regex>` makes the process wait at one point until the test kills it, so where a
kill lands is certain, whatever the machine's load, rather than a matter of delays and luck. The
thread that reaches the point prints `HOLDING <point> <what>` and sleeps; the test kills on that line.
- `created`: the temporary file of a matching <file> exists, empty (its mode is being set);
- `synced`: its temporary file is written and synced, not yet renamed;
- `renamed`: it is renamed into place, its directory not yet synced (the thread's next open);
- `connect`: a source connection is being opened to a SQLite file whose path matches.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

import dagster as dg

from feedback_assets.resources import FeedbackSettings
from feedback_assets.storage.local import TEMP_PREFIX
from feedback_assets_tests.graph import materialize

MARKER = "KILLPOINT"
# Long enough for any test to kill it, short enough that a runner whose test died still ends.
HOLD_SECONDS = 300


def _target(temp: str, roots: dict[str, Path]) -> str | None:
    """`export/<name>` or `storage/<dirs>/<name>` when `temp` is the pipeline's temporary file for it."""
    path = Path(temp)
    if not path.name.startswith(TEMP_PREFIX):
        return None
    # .tmp-<name>.<host>-<pid>.<uuid> names <name>
    final = path.parent.resolve() / path.name.removeprefix(TEMP_PREFIX).rsplit(".", 2)[0]
    for label, root in roots.items():
        if final.is_relative_to(root):
            return f"{label}/{final.relative_to(root)}"
    return None


HOLD_POINTS = ("created", "synced", "renamed", "connect")


def _report_atomic_writes(hold_point: str | None, hold: re.Pattern[str] | None) -> None:
    roots = {
        "export": Path(os.environ["FEEDBACK_EXPORT_DIR"]).resolve(),
        "storage": Path(os.environ["FEEDBACK_STORAGE_DIR"]).resolve(),
    }
    actions = {"open": "open", "os.chmod": "created", "os.rename": "replace"}
    reporting = threading.Lock()
    # Per thread: the target a `renamed` hold waits behind, once that thread has renamed it.
    renamed = threading.local()

    def say(text: str) -> None:
        # The pipeline writes a few files at a time (files.concurrently): one write call per
        # report, under a lock, so two threads' lines never run into each other.
        with reporting:
            sys.stdout.write(text)
            sys.stdout.flush()

    def hold_here(what: str) -> None:
        say(f"HOLDING {hold_point} {what}\n")
        time.sleep(HOLD_SECONDS)

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "sqlite3.connect":
            if hold_point == "connect" and hold is not None and hold.search(str(args[0])):
                hold_here("source")
            return
        action = actions.get(event)
        if action is None:
            return
        if action == "open" and getattr(renamed, "target", None) is not None:
            hold_here(renamed.target)
        if not args or not isinstance(args[0], str | os.PathLike):
            return
        # An exception here would make the pipeline's own open() or rename fail.
        try:
            target = _target(os.fsdecode(args[0]), roots)
        except Exception:
            return
        if target is None:
            return
        if action != "created":
            say(f"{MARKER} {action} {target}\n")
        matches = hold is not None and hold.search(target) is not None
        if not matches or action == "open":
            return
        # The point each hold waits at, as (hold point, the write's action there).
        if (hold_point, action) in (("created", "created"), ("synced", "replace")):
            hold_here(target)
        elif (hold_point, action) == ("renamed", "replace"):
            renamed.target = target

    sys.addaudithook(hook)


def main() -> int:
    first, last = sys.argv[1:]
    print("READY", flush=True)
    command = sys.stdin.readline().strip().split(maxsplit=3)
    if command[:1] != ["go"]:
        return 2
    if command[1:2] == ["HOLD"]:
        if len(command) != 4 or command[2] not in HOLD_POINTS:
            return 2
        _report_atomic_writes(command[2], re.compile(command[3]))
    else:
        _report_atomic_writes(None, None)
    # A run time limit for Dagster's run monitoring, when the test gives one.
    max_runtime = os.environ.get("KILL_RUNNER_MAX_RUNTIME")
    tags = {"dagster/max_runtime": max_runtime} if max_runtime else None
    with dg.DagsterInstance.get() as instance:
        result = materialize(instance, FeedbackSettings(), first, last, tags=tags)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
