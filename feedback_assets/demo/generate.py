"""The demo tables: realistic bulk rows drawn at random, plus every day's crafted rows (edge_cases).

generate() is deterministic: the same arguments give the same frames, so tests can assert on them
and benchmarks compare like with like.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import polars as pl

from feedback_assets.demo.edge_cases import edge_frames
from feedback_assets.demo.time_units import DAY_US, EPOCH, HOUR_US, MINUTE_US, SECOND_US, epoch_us
from feedback_assets.schemas import SOURCE_TABLES, UTC_US

MIN_USERS = 50
FEEDBACK_PER_USER = 25

IMAGE_URL_PREFIX = b"https://cdn.example.invalid/img/"
IMAGE_URL_SUFFIX = b".jpg"
CONDITION_LABELS = ("acne", "oily", "dry", "sensitive", "rosacea", "hyperpigmentation", "wrinkles", "combination")
RULES = (
    "hydration_boost",
    "spf_daily",
    "retinol_night",
    "gentle_cleanser",
    "niacinamide_serum",
    "barrier_repair",
    "exfoliate_weekly",
    "oil_control",
)
TIMEFRAMES = ("2w", "4w", "8w", "12w")
FEEDBACK_TEXTS = (
    "Loved it",
    "Skin feels softer after two weeks",
    "Too greasy for my skin",
    "Broke me out :(",
    "meh",
    "Will keep using",
    "Smells nice, works ok",
    "Did not notice any difference",
    "The SPF left a white cast",
    "Great, but too expensive",
    "My redness calmed down a lot",
    "Routine is too long for mornings",
    "Helped with the dry patches",
    "Stings a bit at night",
    "10/10 would buy again!",
    "not for sensitive skin",
    "ok",
    "Forgot to use it most days",
)


@dataclass(frozen=True)
class DemoData:
    """One frame per source table, columns and dtypes as in schemas.SOURCE_TABLES."""

    users: pl.DataFrame
    analyses: pl.DataFrame
    recommendation_records: pl.DataFrame
    recommendation_feedback: pl.DataFrame
    erasure_requests: pl.DataFrame

    def tables(self) -> dict[str, pl.DataFrame]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def counts(self) -> dict[str, int]:
        return {name: frame.height for name, frame in self.tables().items()}


def _nullable_series(series: pl.Series, null_mask: np.ndarray) -> pl.Series:
    return pl.select(pl.when(pl.Series(null_mask)).then(None).otherwise(series)).to_series()


def _nullable(values: np.ndarray, null_mask: np.ndarray, dtype: pl.DataType) -> pl.Series:
    return _nullable_series(pl.Series(values).cast(dtype), null_mask)


def _pick(vocabulary: Sequence[str], indices: np.ndarray, null_mask: np.ndarray) -> pl.Series:
    # Gathering from a small vocabulary keeps millions of strings out of Python objects.
    picked = pl.Series(list(vocabulary), dtype=pl.String).gather(pl.Series(indices, dtype=pl.UInt32))
    return _nullable_series(picked, null_mask)


def _timestamps(values_us: np.ndarray) -> pl.Series:
    return pl.Series(values_us, dtype=pl.Int64).cast(UTC_US)


def _messy_label(rng: np.random.Generator, label: str) -> str:
    style = rng.random()
    if style < 0.6:
        return label
    if style < 0.8:
        return label.capitalize()
    if style < 0.9:
        return label.upper()
    return "".join(c.upper() if rng.random() < 0.5 else c for c in label)


def _conditions_vocabulary(rng: np.random.Generator, size: int = 600) -> list[str]:
    """Condition strings the way a sloppy client writes them: mixed case, stray spaces, repeats."""
    separators = (", ", ",", " , ", ",  ", " ,")
    vocabulary = []
    for _ in range(size):
        labels = [str(x) for x in rng.choice(CONDITION_LABELS, size=int(rng.integers(1, 4)), replace=False)]
        if rng.random() < 0.15:
            labels.append(labels[0])
        parts = [_messy_label(rng, label) for label in labels]
        text = parts[0] + "".join(separators[int(rng.integers(len(separators)))] + p for p in parts[1:])
        if rng.random() < 0.2:
            text = " " + text
        if rng.random() < 0.2:
            text = text + " "
        vocabulary.append(text)
    return vocabulary


def _rules_vocabulary() -> tuple[list[str], np.ndarray]:
    """Every ordered choice of 1-3 rules, with weights that favour short lists."""
    vocabulary: list[str] = []
    weights: list[float] = []
    for k, share in ((1, 0.3), (2, 0.45), (3, 0.25)):
        combos = [", ".join(p) for p in itertools.permutations(RULES, k)]
        vocabulary.extend(combos)
        weights.extend([share / len(combos)] * len(combos))
    return vocabulary, np.asarray(weights)


def _image_urls(rng: np.random.Generator, count: int) -> pl.Series:
    """Random version-4 UUID URLs built as a fixed-width byte matrix, so no per-row formatting."""
    raw = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    hexed = np.empty((count, 32), dtype=np.uint8)
    hexed[:, 0::2] = hex_digits[raw >> 4]
    hexed[:, 1::2] = hex_digits[raw & 0x0F]
    start = len(IMAGE_URL_PREFIX)
    matrix = np.empty((count, start + 36 + len(IMAGE_URL_SUFFIX)), dtype=np.uint8)
    matrix[:, :start] = np.frombuffer(IMAGE_URL_PREFIX, dtype=np.uint8)
    matrix[:, start + 36 :] = np.frombuffer(IMAGE_URL_SUFFIX, dtype=np.uint8)
    for dashes_before, (low, high) in enumerate(((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))):
        column = start + low + dashes_before
        matrix[:, column : column + high - low] = hexed[:, low:high]
        if high < 32:
            matrix[:, column + high - low] = ord("-")
    return pl.Series(matrix.view(f"S{matrix.shape[1]}").ravel()).cast(pl.String)


def _record_ids(record_us: np.ndarray) -> pl.Series:
    """`rec_YYYYMMDD_NNN`, numbered per UTC day in creation order (at least three digits, more if needed)."""
    day = record_us // DAY_US
    order = np.argsort(record_us, kind="stable")
    day_sorted = day[order]
    first_day = int(day_sorted[0]) if len(day_sorted) else 0
    day_index = (day_sorted - first_day).astype(np.int64)
    # The position of each day's first record in sorted order, so a row's number is its distance from it.
    starts = np.searchsorted(day_index, np.arange(int(day_index[-1]) + 1 if len(day_index) else 0))
    sequence = np.empty(len(record_us), dtype=np.int64)
    sequence[order] = np.arange(len(record_us)) - starts[day_index] + 1
    prefixes = [f"rec_{EPOCH + dt.timedelta(days=first_day + i):%Y%m%d}_" for i in range(len(starts))]
    return pl.select(
        pl.concat_str(
            pl.Series(prefixes, dtype=pl.String).gather(pl.Series(day - first_day, dtype=pl.UInt32)),
            pl.Series(sequence).cast(pl.String).str.zfill(3),
        )
    ).to_series()


def _bulk_frames(
    rng: np.random.Generator, first_day: dt.date, days: int, rows_per_day: int, n_users: int
) -> dict[str, pl.DataFrame]:
    start_us = epoch_us(first_day)
    n = days * rows_per_day
    conditions_vocabulary = _conditions_vocabulary(rng)
    rules_vocabulary, rules_weights = _rules_vocabulary()

    # Users: a skewed activity weight, so some users give much more feedback than others.
    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    ages = np.clip(np.rint(rng.normal(33.0, 12.0, n_users)), 16, 70).astype(np.int32)
    users = pl.DataFrame(
        {
            "id": user_ids,
            "age": _nullable(ages, rng.random(n_users) < 0.03, pl.Int32()),
            "ml_training_consent": rng.random(n_users) < 0.90,
            "image_sharing_consent": rng.random(n_users) < 0.60,
            "created_at": _timestamps(start_us - rng.integers(DAY_US, 3 * 365 * DAY_US, n_users)),
        }
    )
    activity = rng.gamma(0.8, 1.0, n_users)

    # Feedback times first; ids then follow time as a serial key would.
    offsets = np.repeat(np.arange(days, dtype=np.int64) * DAY_US, rows_per_day) + rng.integers(0, DAY_US, n)
    feedback_us = np.sort(start_us + offsets)

    # An analysis yields 1-3 recommendations, each rated once, by consecutive feedback rows.
    if n:
        sizes = rng.choice(np.array([1, 2, 3]), size=n, p=[0.6, 0.3, 0.1])
        ends = np.cumsum(sizes)
        n_analyses = int(np.searchsorted(ends, n)) + 1
        analysis_of_feedback = np.repeat(np.arange(n_analyses), sizes[:n_analyses])[:n]
        first_feedback = np.concatenate([[0], ends[: n_analyses - 1]])
    else:
        n_analyses = 0
        analysis_of_feedback = np.zeros(0, dtype=np.int64)
        first_feedback = np.zeros(0, dtype=np.int64)
    analysis_us = feedback_us[first_feedback] - rng.integers(2 * MINUTE_US, 6 * HOUR_US, n_analyses)
    analysis_user = user_ids[rng.choice(n_users, size=n_analyses, p=activity / activity.sum())]
    analyses = pl.DataFrame(
        {
            "id": np.arange(1, n_analyses + 1, dtype=np.int64),
            "user_id": analysis_user,
            "conditions": _pick(
                conditions_vocabulary,
                rng.integers(0, len(conditions_vocabulary), n_analyses),
                rng.random(n_analyses) < 0.08,
            ),
            "image_url": _nullable_series(_image_urls(rng, n_analyses), rng.random(n_analyses) < 0.12),
            "created_at": _timestamps(analysis_us),
        }
    )

    record_us = analysis_us[analysis_of_feedback] + rng.integers(SECOND_US, 30 * SECOND_US, n)
    records = pl.DataFrame(
        {
            "id": _record_ids(record_us),
            "analysis_id": analysis_of_feedback.astype(np.int64) + 1,
            "rules_applied": _pick(
                rules_vocabulary,
                rng.choice(len(rules_vocabulary), size=n, p=rules_weights),
                rng.random(n) < 0.05,
            ),
            "timeframe": _pick(TIMEFRAMES, rng.choice(4, size=n, p=[0.2, 0.45, 0.25, 0.1]), rng.random(n) < 0.1),
            "created_at": _timestamps(record_us),
        }
    )

    helpful = rng.choice(np.arange(1, 6), size=n, p=[0.06, 0.1, 0.2, 0.34, 0.3])
    satisfaction = np.clip(helpful + rng.integers(-1, 2, n), 1, 5)
    would_recommend = rng.random(n) < np.where(helpful >= 4, 0.85, 0.25)
    feedback = pl.DataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "user_id": analysis_user[analysis_of_feedback],
            "analysis_id": analysis_of_feedback.astype(np.int64) + 1,
            "recommendation_id": records["id"],
            "helpful_rating": _nullable(helpful, rng.random(n) < 0.10, pl.Int16()),
            "product_satisfaction": _nullable(satisfaction, rng.random(n) < 0.10, pl.Int16()),
            "routine_completion_pct": _nullable(np.rint(rng.beta(2.0, 1.3, n) * 100), rng.random(n) < 0.07, pl.Int16()),
            "would_recommend": _nullable(would_recommend, rng.random(n) < 0.12, pl.Boolean()),
            "feedback_text": _pick(FEEDBACK_TEXTS, rng.integers(0, len(FEEDBACK_TEXTS), n), rng.random(n) < 0.6),
            "created_at": _timestamps(feedback_us),
        }
    )

    n_erased = max(1, n_users // 200)
    erasures = pl.DataFrame(
        {
            "user_id": rng.choice(user_ids, size=n_erased, replace=False),
            "requested_at": _timestamps(start_us + rng.integers(0, days * DAY_US, n_erased)),
        }
    )
    return {
        "users": users,
        "analyses": analyses,
        "recommendation_records": records,
        "recommendation_feedback": feedback,
        "erasure_requests": erasures,
    }


def generate(*, end_date: dt.date, days: int, rows_per_day: int, seed: int = 0, users: int | None = None) -> DemoData:
    """The demo tables for the `days` days ending at `end_date`: bulk rows plus every edge case each day.

    `rows_per_day` counts bulk feedback; each day adds the crafted rows of EDGE_CASES on top (41 feedback
    rows, 40 on the first day). `users` is the number of bulk users, by default one per 25 bulk feedback
    rows and at least 50. The same arguments give the same frames.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    if rows_per_day < 0:
        raise ValueError(f"rows_per_day must not be negative, not {rows_per_day}")
    n_users = max(MIN_USERS, rows_per_day * days // FEEDBACK_PER_USER) if users is None else users
    if n_users < 1:
        raise ValueError(f"users must be at least 1, not {n_users}")
    first_day = end_date - dt.timedelta(days=days - 1)
    rng = np.random.default_rng(seed)
    bulk = _bulk_frames(rng, first_day, days, rows_per_day, n_users)
    edge = edge_frames(first_day, days)
    schemas = {name: table.schema for name, table in SOURCE_TABLES.items()}
    tables = {
        table: pl.concat([bulk[table].select(schema.names()).cast(schema), edge[table]])
        for table, schema in schemas.items()
        if table != "recommendation_feedback"
    }
    # Feedback in created_at order, as the app appends it: a linear merge, since both parts are sorted.
    tables["recommendation_feedback"] = (
        bulk["recommendation_feedback"]
        .cast(schemas["recommendation_feedback"])
        .merge_sorted(edge["recommendation_feedback"].sort("created_at", "id"), key="created_at")
    )
    return DemoData(**tables)
