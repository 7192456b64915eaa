"""The slices' feedback rows read as text (psycopg2's COPY, parsed in Polars) against in their own
types (ADBC's binary COPY), on one snapshot, back to back (docs/benchmarks.md, lesson 15).

    .venv/bin/python -m benchmarks.feedback_reads [--slice-days 36] [--repeats 2]

The source is the year benchmark's PostgreSQL database (`feedback_bench`, generated when absent).
Each side reads every slice of the whole range, exact scope and first_per_pair (with history
rows), and types the rows as the reader does; the sides alternate, and every read prints its
seconds and the rows it typed, which must be the same on both sides.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import time
from collections.abc import Callable, Mapping, Sequence

import polars as pl

from benchmarks.year import add_source_arguments, ensure_source
from feedback_assets.connections import postgres_arrow_session, postgres_connection
from feedback_assets.settings import parse_source_url
from feedback_assets.source.parsing import typed_feedback
from feedback_assets.source.postgres_sessions import (
    begin_arrow_read,
    begin_shared_read,
    fetch_arrow,
    native_feedback_queries,
)
from feedback_assets.source.sql import POSTGRESQL, Query, feedback_queries, postgres_bounds, window_queries
from feedback_assets_tests.text_copy import copy_out

Read = Callable[[Mapping[str, Query], Mapping[str, str]], dict[str, pl.DataFrame]]


def read_all(read: Read, queries: Mapping[str, Query], edges: Sequence[dt.datetime]) -> tuple[float, int]:
    """Seconds to read and type every slice between consecutive `edges`, and the rows typed."""
    started, rows = time.perf_counter(), 0
    for start, end in itertools.pairwise(edges):
        rows += typed_feedback(read(queries, postgres_bounds(start, end)), start, end).height
    return time.perf_counter() - started, rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(parser)
    parser.add_argument("--slice-days", type=int, default=36)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    source = ensure_source(args.database, args.first, args.days, args.rows_per_day)
    first = dt.datetime.combine(source.first, dt.time(), dt.UTC)
    end = first + dt.timedelta(days=source.days)
    edges = [*(first + dt.timedelta(days=d) for d in range(0, source.days, args.slice_days)), end]
    location = parse_source_url(source.url)
    with postgres_connection(location) as leader, postgres_arrow_session(location) as arrow:
        begin_arrow_read(arrow, begin_shared_read(leader))
        sides: dict[str, tuple[Read, Callable[[bool], dict[str, Query]]]] = {
            "text (psycopg2)": (
                lambda queries, bounds: copy_out(leader, queries, bounds),
                lambda history: feedback_queries(window_queries(POSTGRESQL, history, False)),
            ),
            "own types (ADBC)": (
                lambda queries, bounds: fetch_arrow(leader, arrow, queries, bounds),
                lambda history: native_feedback_queries(leader, history, False),
            ),
        }
        for history in (False, True):
            scope = "first_per_pair" if history else "exact"
            for repeat in range(args.repeats):
                for side, (read, queries) in sides.items():
                    seconds, rows = read_all(read, queries(history), edges)
                    print(
                        f"{scope}, run {repeat + 1}, {side}: {len(edges) - 1} slices, {rows} rows in {seconds:.1f} s",
                        flush=True,
                    )
        leader.rollback()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
