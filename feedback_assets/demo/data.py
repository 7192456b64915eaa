"""The demo-data generator's command line: write a deterministic demo source (docs/contract.md, section 1).

Every day in the range gets realistic bulk rows plus a fixed set of crafted rows, one per awkward
case the pipeline must survive (see edge_cases.EDGE_CASES).

    python -m feedback_assets.demo.data --url sqlite:///data/demo_feedback.sqlite --days 30 --replace
    python -m feedback_assets.demo.data --url postgresql://user@host:5432/db --end-date 2025-10-25 \\
        --days 365 --rows-per-day 13700 --seed 7 --replace
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence

from feedback_assets.demo.database import DemoSourceExistsError, write_demo_source
from feedback_assets.settings import DEMO_SOURCE_PATH, ConfigError, parse_source_url


def _parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date in YYYY-MM-DD form: {text!r}") from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    parser = argparse.ArgumentParser(
        prog="python -m feedback_assets.demo.data",
        description=(
            "Write a deterministic demo source database (docs/contract.md, section 1), with every edge case each day."
        ),
    )
    # Deliberately not FEEDBACK_SOURCE_URL: with --replace this drops tables, so the target is named explicitly.
    parser.add_argument("--url", default=f"sqlite:///{DEMO_SOURCE_PATH}", help="sqlite:///file or postgresql://...")
    parser.add_argument("--end-date", type=_parse_date, default=yesterday, help="last day, UTC (default: yesterday)")
    parser.add_argument("--days", type=_positive, default=30)
    parser.add_argument("--rows-per-day", type=_non_negative, default=500, help="bulk feedback rows per day")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=_positive, default=None, help="bulk users (default: rows/25, at least 50)")
    parser.add_argument("--replace", action="store_true", help="drop the five tables first if they exist")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    try:
        location = parse_source_url(args.url)
        data = write_demo_source(
            args.url,
            end_date=args.end_date,
            days=args.days,
            rows_per_day=args.rows_per_day,
            seed=args.seed,
            replace=args.replace,
            users=args.users,
        )
    except (ConfigError, DemoSourceExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    counts = " ".join(f"{table}={count}" for table, count in data.counts().items())
    first_day = args.end_date - dt.timedelta(days=args.days - 1)
    print(f"wrote {location.describe()} ({first_day}..{args.end_date}, seed {args.seed}): {counts} in {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
