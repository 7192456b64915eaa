"""The baseline the graph is held against: the export written the old way, row by row.

One SQL join of the four tables per day, a Python loop over the rows, hashlib's HMAC per row,
`csv.writer`: the design this project replaced. It applies the same rules (consent, erasure,
ranges, dedupe key, age buckets, conditions) so that its rows per second compare like with like.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import time
from pathlib import Path

import psycopg2

JOIN = """
SELECT f.id, f.user_id, f.recommendation_id, f.helpful_rating, f.product_satisfaction,
       f.routine_completion_pct, f.would_recommend, f.created_at, u.age, u.ml_training_consent,
       a.conditions, a.created_at, r.rules_applied, r.timeframe,
       EXISTS (SELECT 1 FROM erasure_requests e WHERE e.user_id = f.user_id)
FROM recommendation_feedback f
JOIN users u ON u.id = f.user_id
JOIN analyses a ON a.id = f.analysis_id
JOIN recommendation_records r ON r.id = f.recommendation_id
WHERE f.created_at >= %s AND f.created_at < %s
ORDER BY f.id
"""
AGE_BUCKETS = ((18, "<18"), (25, "18-25"), (35, "25-35"), (50, "35-50"), (121, "50+"))


def _age_range(age: int | None) -> str:
    if age is None or not 0 <= age <= 120:
        return ""
    return next(label for bound, label in AGE_BUCKETS if age < bound)


def _in_range(value: int | None, low: int, high: int) -> bool:
    return value is None or low <= value <= high


def export_day(cur: psycopg2.extensions.cursor, day: dt.date, key: bytes, out: Path) -> int:
    """Export one day the old way; returns how many feedback rows were read."""
    cur.execute(JOIN, (day, day + dt.timedelta(days=1)))
    seen: set[tuple[str, str, str]] = set()
    read = 0
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for row in cur:
            read += 1
            (_, user_id, rec, helpful, satisfaction, completion, recommend, created) = row[:8]
            (age, consent, conditions, analysed, rules, timeframe, erased) = row[8:]
            if not consent or erased:
                continue
            if not (_in_range(helpful, 1, 5) and _in_range(satisfaction, 1, 5) and _in_range(completion, 0, 100)):
                continue
            if helpful is None and satisfaction is None and completion is None and recommend is None:
                continue
            pseudonym = hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()
            when = created.isoformat()
            if (pseudonym, rec, when) in seen:
                continue
            seen.add((pseudonym, rec, when))
            labels = sorted({c.strip().lower() for c in (conditions or "").split(",") if c.strip()})
            cells = [pseudonym, rec, helpful, satisfaction, completion, recommend, ",".join(labels)]
            writer.writerow([*cells, (rules or "").strip(), timeframe, _age_range(age), when, analysed.isoformat()])
    return read


def rows_per_second(url: str, first: dt.date, days: int, key: bytes, workdir: Path) -> tuple[int, float]:
    """Feedback rows read and seconds taken to export `days` days from `first` the old way."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    total = 0
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        for offset in range(days):
            day = first + dt.timedelta(days=offset)
            total += export_day(cur, day, key, workdir / f"old_{day:%Y%m%d}.csv")
    conn.close()
    return total, time.perf_counter() - started
