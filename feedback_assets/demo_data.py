"""A deterministic demo source database (CONTRACT section 1) for demos, tests and benchmarks.

Every day in the range gets realistic bulk rows plus a fixed set of crafted rows, one per awkward
case the pipeline must survive (see EDGE_CASES). Crafted ids live in their own block per day:
`YYYYMMDD * 1_000_000 + 900_000 + offset`, e.g. 20251025900012, far above any bulk id (bulk ids
count up from 1), so a crafted row is recognisable by its id alone and its day is readable in it.

    python -m feedback_assets.demo_data --url sqlite:///data/demo_feedback.sqlite --days 30 --replace
    python -m feedback_assets.demo_data --url postgresql://user@host:5432/db --end-date 2025-10-25 \\
        --days 365 --rows-per-day 13700 --seed 7 --replace
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import itertools
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType

import numpy as np
import polars as pl
import psycopg2.extensions

from feedback_assets.connections import postgres_connection, sqlite_connection
from feedback_assets.settings import DEMO_SOURCE_PATH, ConfigError, SourceLocation, parse_source_url

UTC_US = pl.Datetime("us", "UTC")

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
EPOCH = dt.date(1970, 1, 1)

MIN_USERS = 50
FEEDBACK_PER_USER = 25
# A year of 5M feedback rows as one CSV would need a few GB of memory; 1M-row chunks keep it
# bounded while each COPY stays long enough for its per-statement overhead not to matter.
COPY_CHUNK_ROWS = 1_000_000
SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S%.6f"
COPY_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S%.6f%:z"
FEEDBACK_INDEX = "recommendation_feedback_created_at_idx"
FEEDBACK_INDEX_DDL = f"CREATE INDEX {FEEDBACK_INDEX} ON recommendation_feedback (created_at)"
# For the index builds at the end of a PostgreSQL load; the server's default (64MB) makes them spill to disk.
LOAD_MAINTENANCE_WORK_MEM = "256MB"

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
class Column:
    name: str
    dtype: pl.DataType
    postgres_type: str
    nullable: bool = True
    primary_key: bool = False

    @property
    def sqlite_type(self) -> str:
        # SQLite has no boolean or timestamp type: 0/1 integers and UTC text, as CONTRACT section 1 says.
        return "TEXT" if self.postgres_type in ("text", "timestamptz") else "INTEGER"


TABLES: Mapping[str, tuple[Column, ...]] = MappingProxyType(
    {
        "users": (
            Column("id", pl.Int64(), "bigint", nullable=False, primary_key=True),
            Column("age", pl.Int32(), "integer"),
            Column("ml_training_consent", pl.Boolean(), "boolean", nullable=False),
            Column("image_sharing_consent", pl.Boolean(), "boolean", nullable=False),
            Column("created_at", UTC_US, "timestamptz", nullable=False),
        ),
        "analyses": (
            Column("id", pl.Int64(), "bigint", nullable=False, primary_key=True),
            Column("user_id", pl.Int64(), "bigint", nullable=False),
            Column("conditions", pl.String(), "text"),
            Column("image_url", pl.String(), "text"),
            Column("created_at", UTC_US, "timestamptz", nullable=False),
        ),
        "recommendation_records": (
            Column("id", pl.String(), "text", nullable=False, primary_key=True),
            Column("analysis_id", pl.Int64(), "bigint", nullable=False),
            Column("rules_applied", pl.String(), "text"),
            Column("timeframe", pl.String(), "text"),
            Column("created_at", UTC_US, "timestamptz", nullable=False),
        ),
        "recommendation_feedback": (
            Column("id", pl.Int64(), "bigint", nullable=False, primary_key=True),
            Column("user_id", pl.Int64(), "bigint", nullable=False),
            Column("analysis_id", pl.Int64(), "bigint", nullable=False),
            Column("recommendation_id", pl.String(), "text", nullable=False),
            Column("helpful_rating", pl.Int16(), "smallint"),
            Column("product_satisfaction", pl.Int16(), "smallint"),
            Column("routine_completion_pct", pl.Int16(), "smallint"),
            Column("would_recommend", pl.Boolean(), "boolean"),
            Column("feedback_text", pl.String(), "text"),
            Column("created_at", UTC_US, "timestamptz", nullable=False),
        ),
        "erasure_requests": (
            Column("user_id", pl.Int64(), "bigint", nullable=False),
            Column("requested_at", UTC_US, "timestamptz", nullable=False),
        ),
    }
)
SCHEMAS: Mapping[str, pl.Schema] = MappingProxyType(
    {table: pl.Schema({c.name: c.dtype for c in columns}) for table, columns in TABLES.items()}
)


@dataclass(frozen=True)
class DemoData:
    """One frame per source table, columns and dtypes as in SCHEMAS."""

    users: pl.DataFrame
    analyses: pl.DataFrame
    recommendation_records: pl.DataFrame
    recommendation_feedback: pl.DataFrame
    erasure_requests: pl.DataFrame

    def tables(self) -> dict[str, pl.DataFrame]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def counts(self) -> dict[str, int]:
        return {name: frame.height for name, frame in self.tables().items()}


class DemoSourceExistsError(RuntimeError):
    """The target already has source tables and replacing them was not asked for."""


# ---------------------------------------------------------------------------------------------
# The crafted rows
# ---------------------------------------------------------------------------------------------

EDGE_ID_OFFSET = 900_000


@dataclass(frozen=True)
class EdgeCase:
    offsets: tuple[int, ...]
    description: str


EDGE_AGES: Mapping[str, int | None] = MappingProxyType(
    {
        "age_minus_1": -1,
        "age_0": 0,
        "age_17": 17,
        "age_18": 18,
        "age_24": 24,
        "age_25": 25,
        "age_34": 34,
        "age_35": 35,
        "age_49": 49,
        "age_50": 50,
        "age_120": 120,
        "age_121": 121,
        "age_300": 300,
        "age_null": None,
    }
)
# Case name -> (leading character, conditions, rules_applied); the recommendation_id starts with it too.
FORMULA_PREFIXES: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "formula_equals": ("=", "=cmd|' /C calc'!A0, acne", '=HYPERLINK("https://attacker.invalid","x"), spf_daily'),
        "formula_plus": ("+", "+oily, acne", "+hydration_boost, spf_daily"),
        "formula_minus": ("-", "-dry, acne", "-spf_daily"),
        "formula_at": ("@", "@sensitive, acne", "@SUM(1+1), retinol_night"),
        "formula_tab": ("\t", "\tacne, oily", "\tbarrier_repair"),
        "formula_cr": ("\r", "\rrosacea", "\rgentle_cleanser"),
    }
)
SPECIAL_TEXTS: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "text_quotes_commas": (
            '"acne", oily, "dry, flaky"',
            'hydration_boost, "spf_daily, reapply"',
            'She said "it works", mostly, but, well, "meh"',
        ),
        "text_newlines": (
            "acne,\noily,\r\ndry",
            "hydration_boost,\nspf_daily\r\n",
            "Line one\nLine two\r\nLine three",
        ),
        "text_unicode": (
            "eczéma, 日本の肌, acne 😊",
            "crème_hydratante, 日本_routine, glow_✨",
            "Très bien ! 日本語のテキスト 👍🏽 ça marche",
        ),
    }
)

_CASES: dict[str, EdgeCase] = {
    "helpful_rating_0": EdgeCase((1,), "helpful_rating 0, below the valid 1..5: out_of_range"),
    "helpful_rating_6": EdgeCase((2,), "helpful_rating 6, above the valid 1..5: out_of_range"),
    "product_satisfaction_minus_1": EdgeCase((3,), "product_satisfaction -1: out_of_range"),
    "routine_completion_101": EdgeCase((4,), "routine_completion_pct 101: out_of_range"),
    "orphan_user": EdgeCase((5,), "user_id has no users row (its analysis and record exist): orphan"),
    "orphan_analysis": EdgeCase((6,), "analysis_id has no analyses row (its record exists): orphan"),
    "orphan_recommendation": EdgeCase((7,), "recommendation_id has no recommendation_records row: orphan"),
    "duplicate_submission": EdgeCase(
        (8, 9), "the same user, recommendation and created_at twice, different ids: 8 is kept, 9 is the duplicate"
    ),
    "rerated_next_day_first": EdgeCase(
        (10,), "a rating whose user rates the same recommendation again on the next day (when in range)"
    ),
    "rerated_next_day_second": EdgeCase(
        (11,),
        "the second rating of the previous day's rerated_next_day_first pair: same user and recommendation; "
        "absent on the first day of the range",
    ),
    "no_consent_user": EdgeCase((12,), "the user has ml_training_consent false: excluded"),
    "erased_user": EdgeCase((13,), "the user is listed in erasure_requests (after the feedback): excluded"),
    "all_ratings_null": EdgeCase((14,), "all four rating fields null: too few fields"),
    **{
        name: EdgeCase((20 + i,), f"the user's age is {age}: age_range edge")
        for i, (name, age) in enumerate(EDGE_AGES.items())
    },
    **{
        name: EdgeCase(
            (40 + i,), f"conditions, rules_applied and recommendation_id start with {prefix!r}: formula injection"
        )
        for i, (name, (prefix, _, _)) in enumerate(FORMULA_PREFIXES.items())
    },
    "text_quotes_commas": EdgeCase((50,), "double quotes and commas in conditions, rules_applied, feedback_text"),
    "text_newlines": EdgeCase((51,), "\\n and \\r\\n inside conditions, rules_applied, feedback_text"),
    "text_unicode": EdgeCase((52,), "é, 日本 and emoji in conditions, rules_applied, feedback_text"),
    "midnight_start": EdgeCase((60,), "created_at exactly 00:00:00.000000 of the day: belongs to that day"),
    "day_last_microsecond": EdgeCase((61,), "created_at 23:59:59.999999 of the day: still that day"),
}
EDGE_CASES: Mapping[str, EdgeCase] = MappingProxyType(_CASES)
# Case name -> feedback id offsets within a day's block; edge_case_ids(day) turns them into ids.
EDGE_CASE_IDS: Mapping[str, tuple[int, ...]] = MappingProxyType({name: c.offsets for name, c in _CASES.items()})
# The crafted consenting user that the cases not about users give their feedback as.
EDGE_REGULAR_USER_OFFSET = 0


def edge_id(day: dt.date, offset: int) -> int:
    """The id of crafted row `offset` of `day`, shared by its feedback and analysis (and user, if its own)."""
    if not 0 <= offset < 100_000:
        raise ValueError(f"edge offset {offset} is outside 0..99999")
    return int(day.strftime("%Y%m%d")) * 1_000_000 + EDGE_ID_OFFSET + offset


def edge_case_ids(day: dt.date) -> dict[str, tuple[int, ...]]:
    """The crafted feedback ids of `day`, by case name (rerated_next_day_second is absent on a range's first day)."""
    return {name: tuple(edge_id(day, o) for o in offsets) for name, offsets in EDGE_CASE_IDS.items()}


def edge_record_id(day: dt.date, offset: int) -> str:
    return f"rec_{day:%Y%m%d}_edge_{offset:02d}"


def _epoch_us(day: dt.date) -> int:
    return (day - EPOCH).days * DAY_US


def _edge_time(day_us: int, offset: int) -> int:
    # Spread the cases over the day with non-zero microseconds, clear of the two boundary cases.
    return day_us + HOUR_US + offset * 11 * MINUTE_US + offset * 1_001


_Ratings = tuple[int | None, int | None, int | None, bool | None]


@dataclass
class _EdgeRows:
    users: list[tuple[object, ...]] = field(default_factory=list)
    analyses: list[tuple[object, ...]] = field(default_factory=list)
    recommendation_records: list[tuple[object, ...]] = field(default_factory=list)
    recommendation_feedback: list[tuple[object, ...]] = field(default_factory=list)
    erasure_requests: list[tuple[object, ...]] = field(default_factory=list)

    def frames(self) -> dict[str, pl.DataFrame]:
        return {f.name: _frame_from_rows(f.name, getattr(self, f.name)) for f in fields(self)}


def _frame_from_rows(table: str, rows: list[tuple[object, ...]]) -> pl.DataFrame:
    # Timestamps travel as epoch microseconds and are cast once, so no Python datetime is involved.
    schema = SCHEMAS[table]
    raw_schema = {name: (pl.Int64 if dtype == UTC_US else dtype) for name, dtype in schema.items()}
    frame = pl.DataFrame(rows, schema=raw_schema, orient="row")
    return frame.with_columns(pl.col(n).cast(UTC_US) for n, d in schema.items() if d == UTC_US)


def _edge_image_url(analysis_id: int) -> str:
    return f"https://cdn.example.invalid/img/{uuid.uuid5(uuid.NAMESPACE_URL, f'edge-analysis-{analysis_id}')}.jpg"


def _add_edge_day(rows: _EdgeRows, day: dt.date, previous_in_range: bool) -> None:
    day_us = _epoch_us(day)
    regular = edge_id(day, EDGE_REGULAR_USER_OFFSET)
    user_created = day_us - 30 * DAY_US

    def user(user_id: int, *, age: int | None = 30, ml_consent: bool = True) -> None:
        rows.users.append((user_id, age, ml_consent, True, user_created))

    def rating(
        feedback_id: int,
        user_id: int,
        analysis_id: int,
        record_id: str,
        ratings: _Ratings,
        text: str | None,
        at_us: int,
    ) -> None:
        rows.recommendation_feedback.append((feedback_id, user_id, analysis_id, record_id, *ratings, text, at_us))

    def feedback(
        offset: int,
        *,
        user_id: int = regular,
        ratings: _Ratings = (4, 4, 80, True),
        text: str | None = "crafted edge case",
        at: int | None = None,
        rec_id: str | None = None,
        conditions: str | None = "acne, oily",
        rules: str | None = "hydration_boost, spf_daily",
        with_analysis: bool = True,
        with_record: bool = True,
    ) -> int:
        feedback_id = edge_id(day, offset)
        at_us = _edge_time(day_us, offset) if at is None else at
        record_id = rec_id if rec_id is not None else edge_record_id(day, offset)
        if with_analysis:
            rows.analyses.append(
                (feedback_id, user_id, conditions, _edge_image_url(feedback_id), at_us - 45 * MINUTE_US)
            )
        if with_record:
            rows.recommendation_records.append(
                (record_id, feedback_id, rules, "4w", at_us - 45 * MINUTE_US + 5 * SECOND_US)
            )
        rating(feedback_id, user_id, feedback_id, record_id, ratings, text, at_us)
        return at_us

    def case(name: str) -> int:
        (offset,) = EDGE_CASE_IDS[name]
        return offset

    user(regular)
    feedback(case("helpful_rating_0"), ratings=(0, 4, 80, True))
    feedback(case("helpful_rating_6"), ratings=(6, 4, 80, True))
    feedback(case("product_satisfaction_minus_1"), ratings=(4, -1, 80, True))
    feedback(case("routine_completion_101"), ratings=(4, 4, 101, True))

    feedback(case("orphan_user"), user_id=edge_id(day, case("orphan_user")))
    feedback(case("orphan_analysis"), with_analysis=False)
    feedback(case("orphan_recommendation"), with_record=False)

    kept, duplicate = EDGE_CASE_IDS["duplicate_submission"]
    submitted_at = feedback(kept)
    rating(
        edge_id(day, duplicate),
        regular,
        edge_id(day, kept),
        edge_record_id(day, kept),
        (4, 4, 80, True),
        "crafted edge case",
        submitted_at,
    )

    first_rating = case("rerated_next_day_first")
    feedback(first_rating, ratings=(5, 5, 100, True), text="first impression: great")
    if previous_in_range:
        previous = day - dt.timedelta(days=1)
        second_rating = case("rerated_next_day_second")
        rating(
            edge_id(day, second_rating),
            edge_id(previous, EDGE_REGULAR_USER_OFFSET),
            edge_id(previous, first_rating),
            edge_record_id(previous, first_rating),
            (2, 3, 40, False),
            "changed my mind after a day",
            _edge_time(day_us, second_rating),
        )

    no_consent = case("no_consent_user")
    user(edge_id(day, no_consent), ml_consent=False)
    feedback(no_consent, user_id=edge_id(day, no_consent))
    erased = case("erased_user")
    user(edge_id(day, erased))
    erased_at = feedback(erased, user_id=edge_id(day, erased))
    rows.erasure_requests.append((edge_id(day, erased), erased_at + 2 * HOUR_US))
    feedback(case("all_ratings_null"), ratings=(None, None, None, None))

    for name, age in EDGE_AGES.items():
        user(edge_id(day, case(name)), age=age)
        feedback(case(name), user_id=edge_id(day, case(name)))

    for name, (prefix, conditions, rules) in FORMULA_PREFIXES.items():
        feedback(case(name), rec_id=prefix + edge_record_id(day, case(name)), conditions=conditions, rules=rules)

    for name, (conditions, rules, text) in SPECIAL_TEXTS.items():
        feedback(case(name), conditions=conditions, rules=rules, text=text)

    feedback(case("midnight_start"), at=day_us)
    feedback(case("day_last_microsecond"), at=day_us + DAY_US - 1)


def _edge_frames(first_day: dt.date, days: int) -> dict[str, pl.DataFrame]:
    rows = _EdgeRows()
    for i in range(days):
        _add_edge_day(rows, first_day + dt.timedelta(days=i), previous_in_range=i > 0)
    return rows.frames()


# ---------------------------------------------------------------------------------------------
# The bulk rows
# ---------------------------------------------------------------------------------------------


def _nullable_series(series: pl.Series, null_mask: np.ndarray) -> pl.Series:
    return pl.select(pl.when(pl.Series(null_mask)).then(None).otherwise(series)).to_series()


def _nullable(values: np.ndarray, null_mask: np.ndarray, dtype: pl.DataType) -> pl.Series:
    return _nullable_series(pl.Series(values).cast(dtype), null_mask)


def _pick(vocabulary: Sequence[str], indices: np.ndarray, null_mask: np.ndarray) -> pl.Series:
    # Gathering from a small vocabulary keeps millions of strings out of Python objects.
    picked = pl.Series(list(vocabulary), dtype=pl.String).gather(pl.Series(indices, dtype=pl.UInt32))
    return _nullable_series(picked, null_mask)


def _timestamps(epoch_us: np.ndarray) -> pl.Series:
    return pl.Series(epoch_us, dtype=pl.Int64).cast(UTC_US)


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
    start_us = _epoch_us(first_day)
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

    `rows_per_day` counts bulk feedback; each day adds the crafted rows of EDGE_CASES on top (39 feedback
    rows, 38 on the first day). `users` is the number of bulk users, by default one per 25 bulk feedback
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
    edge = _edge_frames(first_day, days)
    tables = {
        table: pl.concat([bulk[table].select(schema.names()).cast(schema), edge[table]])
        for table, schema in SCHEMAS.items()
        if table != "recommendation_feedback"
    }
    # Feedback in created_at order, as the app appends it: a linear merge, since both parts are sorted.
    tables["recommendation_feedback"] = (
        bulk["recommendation_feedback"]
        .cast(SCHEMAS["recommendation_feedback"])
        .merge_sorted(edge["recommendation_feedback"].sort("created_at", "id"), key="created_at")
    )
    return DemoData(**tables)


# ---------------------------------------------------------------------------------------------
# Writing to a database
# ---------------------------------------------------------------------------------------------


def _as_location(location: SourceLocation | str) -> SourceLocation:
    return parse_source_url(location) if isinstance(location, str) else location


def _table_ddl(table: str, dialect: str) -> str:
    definitions = []
    for column in TABLES[table]:
        sql_type = column.postgres_type if dialect == "postgresql" else column.sqlite_type
        if column.primary_key and dialect == "sqlite":
            # Inline, because SQLite cannot add a primary key to an existing table.
            definitions.append(f"{column.name} {sql_type} PRIMARY KEY")
        else:
            definitions.append(f"{column.name} {sql_type}{'' if column.nullable else ' NOT NULL'}")
    return f"CREATE TABLE {table} ({', '.join(definitions)})"


def _postgres_indexes() -> list[tuple[str, str]]:
    """(drop, create) per PostgreSQL index, so that a bulk load can build each once, after the rows."""
    pairs = [
        (
            f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_pkey",
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({column.name})",
        )
        for table, columns in TABLES.items()
        for column in columns
        if column.primary_key
    ]
    pairs.append((f"DROP INDEX IF EXISTS {FEEDBACK_INDEX}", FEEDBACK_INDEX_DDL))
    return pairs


def _schema_statements(dialect: str) -> list[str]:
    # No foreign keys: the app writes orphans, and the demo must hold them too.
    tables = [_table_ddl(t, dialect) for t in TABLES]
    if dialect == "postgresql":
        return [*tables, *(create for _, create in _postgres_indexes())]
    return [*tables, FEEDBACK_INDEX_DDL]


def _refuse_existing(existing: Sequence[str], location: SourceLocation) -> None:
    if existing:
        raise DemoSourceExistsError(
            f"the {location.describe()} already has the table(s) {', '.join(sorted(existing))}; "
            "pass replace=True (--replace) to drop and recreate them"
        )


def create_schema(location: SourceLocation | str, *, replace: bool = False) -> None:
    """Create the five source tables and the created_at index; `replace` drops existing ones first."""
    location = _as_location(location)
    names = list(TABLES)
    if location.dialect == "postgresql":
        with postgres_connection(location) as conn:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema() AND table_name = ANY(%s)",
                    (names,),
                )
                existing = [row[0] for row in cur.fetchall()]
                if replace:
                    cur.execute(f"DROP TABLE IF EXISTS {', '.join(names)}")
                else:
                    _refuse_existing(existing, location)
                for statement in _schema_statements("postgresql"):
                    cur.execute(statement)
            conn.commit()
        return
    location.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite_connection(location, read_only=False) as conn:
        placeholders = ", ".join("?" for _ in names)
        existing = [
            row[0]
            for row in conn.execute(
                f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({placeholders})", names
            )
        ]
        with conn:
            if replace:
                for name in names:
                    conn.execute(f"DROP TABLE IF EXISTS {name}")
            else:
                _refuse_existing(existing, location)
            for statement in _schema_statements("sqlite"):
                conn.execute(statement)


def _copy_frame(cur: psycopg2.extensions.cursor, table: str, frame: pl.DataFrame) -> None:
    statement = f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv)"
    for start in range(0, frame.height, COPY_CHUNK_ROWS):
        buffer = io.BytesIO()
        # Empty strings are written quoted and nulls as nothing, which is how COPY's CSV tells them apart.
        frame.slice(start, COPY_CHUNK_ROWS).write_csv(
            buffer, include_header=False, datetime_format=COPY_TIMESTAMP_FORMAT
        )
        buffer.seek(0)
        cur.copy_expert(statement, buffer, size=1 << 20)


def _sqlite_ready(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        [pl.col(name).dt.strftime(SQLITE_TIMESTAMP_FORMAT) for name, dtype in frame.schema.items() if dtype == UTC_US]
        + [pl.col(name).cast(pl.Int8) for name, dtype in frame.schema.items() if dtype == pl.Boolean]
    )


def load(location: SourceLocation | str, data: DemoData) -> None:
    """Insert `data` into tables made by create_schema, in one transaction."""
    location = _as_location(location)
    if location.dialect == "postgresql":
        with postgres_connection(location) as conn:
            conn.set_client_encoding("UTF8")
            with conn.cursor() as cur:
                # PostgreSQL's advice for bulk loads: build the indexes once after the rows rather than
                # row by row (a year loads in 70 s instead of 100 s). It is one transaction, so no reader ever
                # sees the tables without them, and the primary keys are still checked when rebuilt.
                cur.execute(f"SET LOCAL maintenance_work_mem = '{LOAD_MAINTENANCE_WORK_MEM}'")
                indexes = _postgres_indexes()
                for drop, _ in indexes:
                    cur.execute(drop)
                for table, frame in data.tables().items():
                    _copy_frame(cur, table, frame)
                for _, create in indexes:
                    cur.execute(create)
                # Fresh statistics, so the pipeline's first queries are planned on the real sizes.
                cur.execute(f"ANALYZE {', '.join(TABLES)}")
            conn.commit()
        return
    with sqlite_connection(location, read_only=False) as conn, conn:
        for table, frame in data.tables().items():
            columns = ", ".join(frame.columns)
            placeholders = ", ".join("?" for _ in frame.columns)
            conn.executemany(
                f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", _sqlite_ready(frame).iter_rows()
            )


def write_demo_source(
    url: str,
    *,
    end_date: dt.date,
    days: int,
    rows_per_day: int,
    seed: int = 0,
    replace: bool = True,
    users: int | None = None,
) -> DemoData:
    """Create the schema at `url`, generate the demo data and load it; returns what was loaded."""
    location = parse_source_url(url)
    # The schema first: an existing source is refused before minutes of generating.
    create_schema(location, replace=replace)
    data = generate(end_date=end_date, days=days, rows_per_day=rows_per_day, seed=seed, users=users)
    load(location, data)
    return data


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
        prog="python -m feedback_assets.demo_data",
        description="Write a deterministic demo source database (CONTRACT section 1), with every edge case each day.",
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
