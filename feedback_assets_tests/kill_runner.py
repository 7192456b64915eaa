"""The process test_kill_points kills: one ranged run of the whole graph on the DAGSTER_HOME instance.

`python -m feedback_assets_tests.kill_runner FIRST LAST`, with DAGSTER_HOME and FEEDBACK_* in the
environment, the settings coming from there as in the code location. It imports Dagster and the
graph first, prints `READY` and waits for a line on stdin, so the test can pay the seconds of
imports while the previous victim is still running. Nothing is opened or written before that line:
`go`, or `go HOLD <regex>`.

An audit hook reports each atomic write the pipeline makes, without touching the pipeline's code:
`KILLPOINT open <file>` just before the temporary file for <file> is created and
`KILLPOINT replace <file>` just before it is renamed into place, <file> being `export/...` or
`storage/...` relative to the two directories. The output is unbuffered, so after a kill the last
line read is the last point the process reached. With HOLD, the first rename whose <file> matches
waits there (its temporary file written and synced) until the test kills the process: a kill
between sync and rename is then certain instead of a matter of luck.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

import dagster as dg

from feedback_assets.files import TEMP_PREFIX
from feedback_assets.resources import FeedbackSettings
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


def _report_atomic_writes(hold: re.Pattern[str] | None) -> None:
    roots = {
        "export": Path(os.environ["FEEDBACK_EXPORT_DIR"]).resolve(),
        "storage": Path(os.environ["FEEDBACK_STORAGE_DIR"]).resolve(),
    }
    actions = {"open": "open", "os.rename": "replace"}
    reporting = threading.Lock()

    def hook(event: str, args: tuple[object, ...]) -> None:
        action = actions.get(event)
        if action is None or not isinstance(args[0], str | os.PathLike):
            return
        # An exception here would make the pipeline's own open() or rename fail.
        try:
            target = _target(os.fsdecode(args[0]), roots)
        except Exception:
            return
        if target is None:
            return
        held = hold is not None and action == "replace" and hold.search(target) is not None
        # The pipeline writes a few files at a time (files.concurrently): one write call per
        # report, under a lock, so two threads' lines never run into each other.
        with reporting:
            sys.stdout.write(f"{MARKER} {action} {target}\n" + ("HOLDING\n" if held else ""))
            sys.stdout.flush()
        if held:
            time.sleep(HOLD_SECONDS)

    sys.addaudithook(hook)


def main() -> int:
    first, last = sys.argv[1:]
    print("READY", flush=True)
    command = sys.stdin.readline().strip().split(maxsplit=2)
    if command[:1] != ["go"]:
        return 2
    _report_atomic_writes(re.compile(command[2]) if command[1:2] == ["HOLD"] else None)
    # A run time limit for Dagster's run monitoring, when the test gives one.
    max_runtime = os.environ.get("KILL_RUNNER_MAX_RUNTIME")
    tags = {"dagster/max_runtime": max_runtime} if max_runtime else None
    with dg.DagsterInstance.get() as instance:
        result = materialize(instance, FeedbackSettings(), first, last, tags=tags)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
