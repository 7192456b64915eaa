"""What one observation of the source costs (docs/benchmarks.md, "One observation of the source"):
the fingerprints of the lookback's days, read as the sensor reads them, timed several times, and the
plan PostgreSQL runs them with, which must reach every table through an index, never a whole scan.

    .venv/bin/python -m benchmarks.observation --url postgresql://root@127.0.0.1:5432/<db> [--repeats 5]

The source is any PostgreSQL database of the contract's tables, e.g. the 5M-row year written by
`python -m feedback_assets.demo.data --days 365 --rows-per-day 13700` (it ends yesterday, so the
lookback's days are full days of it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections import Counter
from collections.abc import Sequence

from feedback_assets.connections import postgres_connection
from feedback_assets.fingerprint import watched_days
from feedback_assets.settings import DEFAULT_LOOKBACK_DAYS, parse_source_url
from feedback_assets.source import open_source
from feedback_assets.source.sql import FINGERPRINT_PLANNER_SETTINGS, POSTGRESQL, fingerprint_query


def scans(url: str, days: Sequence[dt.date]) -> list[str]:
    """The plan's scan lines, with the settings the observation runs under."""
    with postgres_connection(parse_source_url(url)) as conn, conn.cursor() as cur:
        for setting in FINGERPRINT_PLANNER_SETTINGS:
            cur.execute(setting)
        cur.execute("EXPLAIN (COSTS OFF) " + fingerprint_query(days, POSTGRESQL))
        plan = [str(row[0]) for row in cur.fetchall()]
        conn.rollback()
    # Without the alias each day's copy of a table gets (f_1, f_2, ...).
    return [
        line.strip().removeprefix("->  ").rsplit(" ", 1)[0] for line in plan if "Scan" in line and "Cond" not in line
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="postgresql://... of the source")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lookback-days", type=int, default=DEFAULT_LOOKBACK_DAYS)
    args = parser.parse_args(argv)
    source = open_source(parse_source_url(args.url), include_image_urls=False)
    days = watched_days(dt.datetime.now(dt.UTC).date(), args.lookback_days)
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        fingerprints = source.fingerprints(days, once=True)
        seconds.append(time.perf_counter() - started)
    rows = sum(int(value.split(":")[0]) for value in fingerprints.values())
    print(f"{len(days)} days, {rows} feedback rows: {', '.join(f'{s:.2f}' for s in seconds)} s")
    print(f"median {statistics.median(seconds):.2f} s")
    found = scans(args.url, days)
    print("scans:", "; ".join(f"{n} x {line}" for line, n in sorted(Counter(found).items())))
    whole = [line for line in found if line.startswith("Seq Scan")]
    if whole:
        print(f"whole-table scans: {'; '.join(sorted(set(whole)))}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
