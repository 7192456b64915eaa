"""The crafted rows: one per awkward case the pipeline must survive, on every day (see EDGE_CASES).

Crafted ids live in their own block per day: `YYYYMMDD * 1_000_000 + 900_000 + offset`, e.g.
20251025900012, far above any bulk id (bulk ids count up from 1), so a crafted row is
recognisable by its id alone and its day is readable in it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

import polars as pl

from feedback_assets.demo.time_units import DAY_US, HOUR_US, MINUTE_US, SECOND_US, epoch_us
from feedback_assets.schemas import SOURCE_TABLES, UTC_US

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
FORMULA_CASES: Mapping[str, tuple[str, str, str]] = MappingProxyType(
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
    "mismatched_analysis": EdgeCase(
        (15,), "the analysis (and its record) belongs to another consenting user, with its own conditions: mismatched"
    ),
    "mismatched_recommendation": EdgeCase(
        (16,), "the recommendation record belongs to another analysis (all_ratings_null's): mismatched"
    ),
    **{
        name: EdgeCase((20 + i,), f"the user's age is {age}: age_range edge")
        for i, (name, age) in enumerate(EDGE_AGES.items())
    },
    **{
        name: EdgeCase(
            (40 + i,), f"conditions, rules_applied and recommendation_id start with {prefix!r}: formula injection"
        )
        for i, (name, (prefix, _, _)) in enumerate(FORMULA_CASES.items())
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
    schema = SOURCE_TABLES[table].schema
    raw_schema = {name: (pl.Int64 if dtype == UTC_US else dtype) for name, dtype in schema.items()}
    frame = pl.DataFrame(rows, schema=raw_schema, orient="row")
    return frame.with_columns(pl.col(n).cast(UTC_US) for n, d in schema.items() if d == UTC_US)


def _edge_image_url(analysis_id: int) -> str:
    return f"https://cdn.example.invalid/img/{uuid.uuid5(uuid.NAMESPACE_URL, f'edge-analysis-{analysis_id}')}.jpg"


def _add_edge_day(rows: _EdgeRows, day: dt.date, previous_in_range: bool) -> None:
    day_us = epoch_us(day)
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

    # Another person's analysis: its owner is a user of their own, who consented, so only the
    # ownership rule keeps their conditions and image out of the regular user's row.
    mismatched = case("mismatched_analysis")
    owner, mismatched_at = edge_id(day, mismatched), _edge_time(day_us, mismatched)
    user(owner)
    rows.analyses.append(
        (owner, owner, "rosacea, someone else's", _edge_image_url(owner), mismatched_at - 45 * MINUTE_US)
    )
    rows.recommendation_records.append(
        (edge_record_id(day, mismatched), owner, "barrier_repair", "4w", mismatched_at - 40 * MINUTE_US)
    )
    rating(owner, regular, owner, edge_record_id(day, mismatched), (4, 4, 80, True), "crafted edge case", mismatched_at)
    feedback(case("mismatched_recommendation"), rec_id=edge_record_id(day, case("all_ratings_null")), with_record=False)

    for name, age in EDGE_AGES.items():
        user(edge_id(day, case(name)), age=age)
        feedback(case(name), user_id=edge_id(day, case(name)))

    for name, (prefix, conditions, rules) in FORMULA_CASES.items():
        feedback(case(name), rec_id=prefix + edge_record_id(day, case(name)), conditions=conditions, rules=rules)

    for name, (conditions, rules, text) in SPECIAL_TEXTS.items():
        feedback(case(name), conditions=conditions, rules=rules, text=text)

    feedback(case("midnight_start"), at=day_us)
    feedback(case("day_last_microsecond"), at=day_us + DAY_US - 1)


def edge_frames(first_day: dt.date, days: int) -> dict[str, pl.DataFrame]:
    """The crafted rows of the `days` days from `first_day`, one frame per source table."""
    rows = _EdgeRows()
    for i in range(days):
        _add_edge_day(rows, first_day + dt.timedelta(days=i), previous_in_range=i > 0)
    return rows.frames()
