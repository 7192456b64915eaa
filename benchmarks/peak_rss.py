"""Run a command and write its peak resident memory, in bytes, and its CPU seconds (user and
system, its children's included), one per line, to a file: measured from a small, fresh process,
not from the benchmark.

    python -m benchmarks.peak_rss REPORT -- COMMAND [ARG ...]

Linux counts in a child's peak (`ru_maxrss` from `wait4`) the resident memory of the process it was
started from, up to the moment it execs: a benchmark that has just generated 20 million rows would
report its own gigabytes as the run's (docs/benchmarks.md, lesson 13). This process starts small,
so what it reads for the command it starts is the command's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    report, command = Path(args[0]), args[2:]
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    # Linux reports ru_maxrss in KiB.
    report.write_text(f"{usage.ru_maxrss * 1024}\n{usage.ru_utime + usage.ru_stime:.3f}\n")
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
