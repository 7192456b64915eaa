"""Property-based tests (Hypothesis) of the pure functions of docs/contract.md, sections 4 and 5.

Any source frame of the contract's shape, however awkward its values, must give counts that add
up, rows that obey every rule, and a CSV that holds no user id, exact age, free text or
unconsented image URL. A plain-Python model of the rules says what each day's file must hold and
the Polars chain is compared with it cell by cell; the rules are also checked row by row on the
CSV as the data science team reads it, so a mistake shared by model and product still shows.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import io
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from feedback_assets import csv_cells, schemas
from feedback_assets import source_join as j
from feedback_assets import transforms as t
from feedback_assets.settings import (
    DEDUPE_SCOPES,
    PSEUDONYM_SCOPES,
    TIMESTAMP_PRECISIONS,
    DedupeScope,
    PseudonymScope,
    TimestampPrecision,
)
from feedback_assets.source.parsing import FEEDBACK_READ_SCHEMA, type_feedback
from feedback_assets.storage import split_by_partition
from feedback_assets.training_csv import csv_bytes
from feedback_assets_tests.frames import KEY

# The example database is the default one, which conftest.py puts under pytest's temp dir.
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)
# For the regression tests of defects these properties found: each explicit example reproduces its
# defect at once, so shrinking (a minute per failure) is skipped; the generated examples still run.
DEFECT_SETTINGS = settings(PROPERTY_SETTINGS, phases=(Phase.explicit, Phase.generate))

WINDOW_DAYS = 3
HISTORY_DAYS = 3
# A month end, a year end and a leap day: the days' dates roll over in every way.
WINDOW_STARTS = (dt.date(2025, 10, 24), dt.date(2024, 12, 30), dt.date(2024, 2, 28))
# Ids no rating, percentage, age bucket or timestamp can equal, so an id found as a cell is a leak.
USER_ID_BASES = (7_000_000_000, 2**62, -(2**40))
ANALYSIS_ID_BASE = 500_000
FEEDBACK_ID_BASE = 900_000
AGE_BUCKETS = ("<18", "18-25", "25-35", "35-50", "50+")
FREE_TEXT_MARKER = "FREETEXT-SECRET-"
IMAGE_URL_PREFIX = "https://img.invalid/SECRET-"
INT64 = (-(2**63), 2**63 - 1)
REQUIRED_FEEDBACK = ("feedback_id", "user_id", "analysis_id", "recommendation_id", "created_at")
# The contract's rules as the model's own constants (docs/contract.md, sections 4 and 5), never the
# product's: a changed constant there must make the model and the product disagree.
MODEL_RATING_RANGES = {"helpful_rating": (1, 5), "product_satisfaction": (1, 5), "routine_completion_pct": (0, 100)}
MODEL_RATING_FIELDS = (*MODEL_RATING_RANGES, "would_recommend")
MODEL_REJECTED = ("malformed", "orphan", "ambiguous", "mismatched", "out_of_range")
MODEL_EXCLUDED = ("no_consent", "erased")
MODEL_SKIPPED = "too_few_fields"
MODEL_ELIGIBLE = "eligible"
MODEL_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# The label the contract's period pseudonyms derive their key from (docs/privacy.md, pseudonym scopes).
MODEL_PERIOD_KEY_INFO = "feedback_assets pseudonym period v1 "
RATING_COLUMNS = tuple(MODEL_RATING_RANGES)
# Unicode White_Space, what Polars' strip_chars() trims; Python's str.strip() also trims \x1c-\x1f,
# which the contract's "trimmed" does not settle either way.
UNICODE_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u2028\u2029\u202f\u205f\u3000"
)
ISO_8601_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
MIDNIGHT_AND_LAST_MICROSECOND = (dt.time(0), dt.time(0, 0, 0, 1), dt.time(12), dt.time(23, 59, 59, 999_999))

# Text the app might store: CSV syntax, formula starters, control characters, case and space games.
AWKWARD_TEXT = (
    "",
    " ",
    ",",
    " , ,",
    '"',
    '""',
    "a,b",
    "\n",
    "\r",
    "\r\n",
    "\t",
    "\x00",
    "=cmd()",
    "+1",
    "-2",
    "@sum",
    "\tx",
    "\rx",
    "'=kept",
    " Acne, oily,ACNE ",
    "\u00c9czema, \u00e9",
    "\u039f\u0394\u039f\u03a3",
    "a\x1fb",
    "\ufeffbom",
    "rec_20251025_001",
)
# Unassigned code points (Cn) are left out: Python's Unicode tables are older than Polars', and a
# character one of them does not know would lower-case differently in the model than in Polars.
CHARACTERS = st.characters(exclude_categories=("Cs", "Cn"))
# Each bad thing happens to a row now and then, not to most rows: a row reaches the file only when
# it escapes all of them, and the properties about exported rows need rows to look at.
USUALLY = st.sampled_from([True] * 7 + [False])
RARELY = st.sampled_from([False] * 7 + [True])


def awkward_text(max_size: int = 10) -> st.SearchStrategy[str]:
    fixed = st.sampled_from(AWKWARD_TEXT)
    return st.one_of(
        fixed,
        st.text(CHARACTERS, max_size=max_size),
        st.builds(lambda a, b: a + b, fixed, st.text(CHARACTERS, max_size=4)),
    )


def without_nul(text: str) -> str:
    return text.replace("\x00", "")


# Conditions and rules without NUL: exported text drops NUL only after normalising and trimming,
# which breaks both (test_nul_in_a_label_never_breaks_the_normalisation below).
LABEL_TEXT = awkward_text(16).map(without_nul)


def rating(low: int, high: int) -> st.SearchStrategy[int | None]:
    """Mostly in range (the bounds included), sometimes missing, now and then out of range."""
    out_of_range = st.one_of(
        st.sampled_from([*INT64, low - 1, high + 1]), st.integers(low - 50, low - 1), st.integers(high + 1, high + 50)
    )
    kinds = [st.integers(low, high)] * 9 + [st.none()] * 2 + [out_of_range]
    return st.sampled_from(kinds).flatmap(lambda kind: kind)


AGES = st.one_of(
    st.none(),
    st.integers(-3, 125),
    st.sampled_from([-1, 0, 17, 18, 24, 25, 34, 35, 49, 50, 120, 121]),
    st.sampled_from([300, *INT64]),
)
# NULL consent among them: the source's column is NOT NULL by contract, but nothing enforces it in SQLite.
CONSENTS: st.SearchStrategy[bool | None] = st.sampled_from([True] * 7 + [False, None])
ANALYSIS_TIMES = st.datetimes(
    min_value=dt.datetime(1000, 1, 1),
    max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999_999),
    timezones=st.just(dt.UTC),
)


def moments(days: Sequence[dt.date]) -> st.SearchStrategy[dt.datetime]:
    times = st.one_of(st.sampled_from(MIDNIGHT_AND_LAST_MICROSECOND), st.times())
    return st.builds(lambda day, time: dt.datetime.combine(day, time, tzinfo=dt.UTC), st.sampled_from(days), times)


# ---- generated sources -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One source with the run's settings, as Python rows for the model and as frames for the product."""

    days: tuple[dt.date, ...]
    scope: DedupeScope
    min_fields: int
    include_image_urls: bool
    precision: TimestampPrecision
    pseudonym_scope: PseudonymScope
    users: Mapping[int, Mapping[str, Any]]
    analyses: Mapping[int, Mapping[str, Any]]
    records: Mapping[str, Mapping[str, Any]]
    erased: tuple[int, ...]
    rows: tuple[Mapping[str, Any], ...]
    # Every user id the source mentions, also of users it lacks: none may appear in the CSV.
    user_ids: tuple[int, ...]
    # Second rows of ids the tables hold twice (they have no key), with other values: users,
    # analyses, records. The first rows are those of `users`, `analyses`, `records`.
    second_rows: Mapping[str, tuple[Mapping[str, Any], ...]] = dataclasses.field(
        default_factory=lambda: {"users": (), "analyses": (), "records": ()}
    )

    @functools.cached_property
    def frames(self) -> j.SourceFrames:
        feedback = _frame(self.rows, schemas.FEEDBACK_SCHEMA).with_columns(
            # The app's free text rides along as the reader would carry it if it ever selected it.
            feedback_text=pl.Series([row["feedback_text"] for row in self.rows], dtype=pl.String)
        )
        second = self.second_rows
        return j.SourceFrames(
            feedback=feedback,
            users=_frame([*self.users.values(), *second["users"]], schemas.USERS_SCHEMA),
            analyses=_frame([*self.analyses.values(), *second["analyses"]], schemas.ANALYSES_SCHEMA),
            records=_frame([*self.records.values(), *second["records"]], schemas.RECORDS_SCHEMA),
            erasures=pl.DataFrame({"user_id": list(self.erased)}, schema=schemas.ERASURES_SCHEMA),
        )

    def held_twice(self, table: str, key: str) -> set[Any]:
        return {row[key] for row in self.second_rows[table]}

    def repeated_feedback_ids(self) -> set[int]:
        counts = Counter(row["feedback_id"] for row in self.rows if row["feedback_id"] is not None)
        return {feedback_id for feedback_id, n in counts.items() if n > 1}

    @property
    def partitions(self) -> list[str]:
        return [day.isoformat() for day in self.days]

    @property
    def csv_format(self) -> csv_cells.CsvFormat:
        return csv_cells.CsvFormat(self.include_image_urls, self.precision, self.pseudonym_scope, KEY)

    @property
    def columns(self) -> list[str]:
        return [*schemas.TRAINING_COLUMNS, "image_url"] if self.include_image_urls else list(schemas.TRAINING_COLUMNS)

    def by_id(self) -> dict[int, Mapping[str, Any]]:
        return {row["feedback_id"]: row for row in self.rows if row["feedback_id"] is not None}

    def window_rows(self, day: str) -> list[Mapping[str, Any]]:
        return [row for row in self.rows if not row["is_history"] and row["partition"].isoformat() == day]


def _frame(rows: Iterable[Mapping[str, Any]], schema: pl.Schema) -> pl.DataFrame:
    rows = list(rows)
    return pl.DataFrame({name: [row[name] for row in rows] for name in schema.names()}, schema=schema)


@st.composite
def cases(
    draw: st.DrawFn,
    consents: st.SearchStrategy[bool | None] = CONSENTS,
    analysis_times: st.SearchStrategy[dt.datetime | None] = ANALYSIS_TIMES,
    labels: st.SearchStrategy[str] = LABEL_TEXT,
) -> Case:
    start = draw(st.sampled_from(WINDOW_STARTS))
    days = tuple(start + dt.timedelta(days=i) for i in range(WINDOW_DAYS))
    history_days = tuple(start - dt.timedelta(days=i) for i in range(1, HISTORY_DAYS + 1))
    scope: DedupeScope = draw(st.sampled_from(DEDUPE_SCOPES))

    # Small pools, so rows share users, analyses and records; each pool has one id its table lacks
    # (the last), which rows name now and then: joins hit and miss.
    base = draw(st.sampled_from(USER_ID_BASES))
    user_ids = [base + 7 * i for i in range(draw(st.integers(2, 5)))]
    users = {
        uid: {
            "user_id": uid,
            "age": draw(AGES),
            "ml_training_consent": draw(consents),
            "image_sharing_consent": draw(st.sampled_from([True, False, None])),
        }
        for uid in user_ids[:-1]
    }
    # erasure_requests has no key: a user may ask twice, and someone unknown may ask.
    erased = [uid for uid in user_ids if draw(RARELY)]
    asked_twice: bool = draw(RARELY)
    if erased and asked_twice:
        erased.append(erased[0])

    def pick(pool: Sequence[Any], missing: bool) -> Any:
        return pool[-1] if missing else draw(st.sampled_from(pool[:-1]))

    analysis_ids = [ANALYSIS_ID_BASE + i for i in range(draw(st.integers(2, 4)))]
    analyses = {
        aid: {
            "analysis_id": aid,
            # Rarely none (a value that did not parse) or a user the source lacks.
            "analysis_user_id": None if draw(RARELY) else pick(user_ids, draw(RARELY)),
            "conditions": draw(st.none() | labels),
            "image_url": draw(st.none() | st.just(f"{IMAGE_URL_PREFIX}{aid}")),
            "analysis_created_at": draw(analysis_times),
        }
        for aid in analysis_ids[:-1]
    }
    recommendation_ids = draw(st.lists(awkward_text(), min_size=len(analysis_ids), max_size=6, unique=True))
    # Each analysis the table holds has a record of its own; the other records belong to any analysis.
    record_owners = [*analysis_ids[:-1], *(draw(st.sampled_from(analysis_ids)) for _ in recommendation_ids)]
    records = {
        rid: {
            "recommendation_id": rid,
            "record_analysis_id": None if draw(RARELY) else owner,
            "rules_applied": draw(st.none() | labels),
            "timeframe": draw(st.none() | awkward_text()),
        }
        for rid, owner in zip(recommendation_ids[:-1], record_owners, strict=False)
    }

    def ratings() -> dict[str, Any]:
        return {
            "helpful_rating": draw(rating(1, 5)),
            "product_satisfaction": draw(rating(1, 5)),
            "routine_completion_pct": draw(rating(0, 100)),
            "would_recommend": draw(st.none() | st.booleans()),
        }

    def owned(row: dict[str, Any]) -> None:
        """Usually give the row its analysis's user and a record of its analysis, as the app does."""
        analysis = analyses.get(row["analysis_id"])
        if analysis is not None and row["user_id"] in users and draw(USUALLY):
            row["user_id"] = (
                analysis["analysis_user_id"] if analysis["analysis_user_id"] is not None else row["user_id"]
            )
        own_records = [rid for rid, record in records.items() if record["record_analysis_id"] == row["analysis_id"]]
        if own_records and row["recommendation_id"] in records and draw(USUALLY):
            row["recommendation_id"] = draw(st.sampled_from(own_records))

    def draft(pool: Sequence[dt.date], is_history: bool) -> dict[str, Any]:
        # One row in four is an orphan, of any of the three kinds.
        orphan_of = draw(st.sampled_from([None] * 9 + ["user", "analysis", "record"]))
        row = {
            "feedback_id": 0,
            "user_id": pick(user_ids, orphan_of == "user"),
            "analysis_id": pick(analysis_ids, orphan_of == "analysis"),
            "recommendation_id": pick(recommendation_ids, orphan_of == "record"),
            **ratings(),
            "created_at": draw(moments(pool)),
            "malformed": draw(RARELY),
            "is_history": is_history,
        }
        owned(row)
        if row["malformed"]:
            # type_feedback marks every row missing a required value malformed, so only these may lack one.
            for name in REQUIRED_FEEDBACK:
                if draw(st.booleans()):
                    row[name] = None
        return row

    window = [draft(days, False) for _ in range(draw(st.integers(0, 10)))]
    for _ in range(draw(st.integers(0, 4))) if window else ():
        copy = dict(draw(st.sampled_from(window)))
        kind = draw(st.sampled_from(["resubmitted", "rerated_same_day", "rerated"]))
        if kind == "resubmitted":
            # The same submission twice, maybe with other ratings: same user, recommendation, created_at.
            if draw(st.booleans()):
                copy.update(ratings())
        else:
            # A re-rating of the pair: later or earlier the same day (one key for first_per_pair, two
            # for exact), or on any day of the window.
            same_day = kind == "rerated_same_day" and copy["created_at"] is not None
            copy.update(ratings(), created_at=draw(moments([copy["created_at"].date()] if same_day else days)))
        window.append(copy)
    history: list[dict[str, Any]] = []
    if scope == "first_per_pair":
        # The earlier rows the source reads for first_per_pair; mostly of a pair the window holds.
        pairs = [
            (row["user_id"], row["recommendation_id"], row["analysis_id"]) for row in window if not row["malformed"]
        ]
        for _ in range(draw(st.integers(0, 4))):
            row = draft(history_days, True)
            of_a_window_pair: bool = draw(USUALLY)
            if pairs and of_a_window_pair:
                row["user_id"], row["recommendation_id"], row["analysis_id"] = draw(st.sampled_from(pairs))
            history.append(row)

    rows = window + history
    # Ids in no particular order against time, so "the smallest id" and "the earliest" differ.
    order = draw(st.permutations(range(len(rows))))
    for row, position in zip(rows, order, strict=True):
        feedback_id = FEEDBACK_ID_BASE + position
        if row["feedback_id"] is not None:
            row["feedback_id"] = feedback_id
        row["feedback_text"] = f"{FREE_TEXT_MARKER}{feedback_id}"
        # A timestamp that does not parse leaves the row on the day its text names.
        row["partition"] = (
            row["created_at"].date()
            if row["created_at"] is not None
            else draw(st.sampled_from(history_days if row["is_history"] else days))
        )
    # The tables have no key: now and then a row shares its feedback id with another (on any day),
    # and a user, analysis or record id is held by a second row with other values.
    for row in rows:
        shares_an_id: bool = draw(RARELY) and draw(RARELY)
        if shares_an_id and row["feedback_id"] is not None:
            row["feedback_id"] = draw(st.sampled_from(rows))["feedback_id"] or row["feedback_id"]
    second_rows: dict[str, tuple[Mapping[str, Any], ...]] = {}
    for table, pool in (("users", users), ("analyses", analyses), ("records", records)):
        twice = [dict(entry) for entry in pool.values() if draw(RARELY) and draw(RARELY)]
        for entry in twice:
            if table == "users":
                entry["ml_training_consent"] = not entry["ml_training_consent"]
            elif table == "analyses":
                entry["conditions"] = "OTHER-ANALYSIS"
            else:
                entry["rules_applied"] = "OTHER-RECORD"
        second_rows[table] = tuple(twice)
    return Case(
        days=days,
        scope=scope,
        min_fields=draw(st.integers(0, 4)),
        include_image_urls=draw(st.booleans()),
        precision=draw(st.sampled_from(TIMESTAMP_PRECISIONS)),
        pseudonym_scope=draw(st.sampled_from(PSEUDONYM_SCOPES)),
        users=users,
        analyses=analyses,
        records=records,
        erased=tuple(erased),
        rows=tuple(rows),
        user_ids=tuple(user_ids),
        second_rows=second_rows,
    )


def one_row_case(
    *,
    consent: bool | None = True,
    analysis_created_at: dt.datetime | None = dt.datetime(2025, 10, 24, tzinfo=dt.UTC),
    conditions: str = "acne",
) -> Case:
    """One user's one valid feedback row: the smallest source a defect shows in."""
    created = dt.datetime(2025, 10, 25, 12, tzinfo=dt.UTC)
    user_id = USER_ID_BASES[0]
    return Case(
        days=(created.date(),),
        scope="exact",
        min_fields=1,
        include_image_urls=False,
        precision="day",
        pseudonym_scope="stable",
        users={
            user_id: {"user_id": user_id, "age": 30, "ml_training_consent": consent, "image_sharing_consent": False}
        },
        analyses={
            ANALYSIS_ID_BASE: {
                "analysis_id": ANALYSIS_ID_BASE,
                "analysis_user_id": user_id,
                "conditions": conditions,
                "image_url": None,
                "analysis_created_at": analysis_created_at,
            }
        },
        records={
            "rec_1": {
                "recommendation_id": "rec_1",
                "record_analysis_id": ANALYSIS_ID_BASE,
                "rules_applied": None,
                "timeframe": None,
            }
        },
        erased=(),
        rows=(
            {
                "feedback_id": FEEDBACK_ID_BASE,
                "user_id": user_id,
                "analysis_id": ANALYSIS_ID_BASE,
                "recommendation_id": "rec_1",
                "helpful_rating": 4,
                "product_satisfaction": None,
                "routine_completion_pct": None,
                "would_recommend": None,
                "created_at": created,
                "malformed": False,
                "is_history": False,
                "partition": created.date(),
                "feedback_text": f"{FREE_TEXT_MARKER}{FEEDBACK_ID_BASE}",
            },
        ),
        user_ids=(user_id,),
    )


# ---- the product's chain, as the assets call it ------------------------------------------------


@dataclass(frozen=True)
class Run:
    raw: pl.DataFrame
    classified: pl.DataFrame
    deduplicated: pl.DataFrame
    rows: dict[str, pl.DataFrame]
    csv: dict[str, bytes]

    def kept(self) -> pl.DataFrame:
        return self.deduplicated.filter(pl.col("kept"))


def run_chain(case: Case, frames: j.SourceFrames | None = None) -> Run:
    raw = j.redact_excluded(j.join_source(frames or case.frames))
    if case.scope == "first_per_pair":
        raw = j.add_history(raw)
    classified = t.classify(raw, case.min_fields)
    deduplicated = t.deduplicate(t.with_dedupe_key(t.anonymize(classified, KEY, case.include_image_urls), case.scope))
    rows = {
        day: csv_cells.training_rows(part, case.csv_format)
        for day, part in split_by_partition(deduplicated, case.partitions).items()
    }
    # The asset formats a slice's days in one pass: in every example, exactly the rows of each day alone.
    by_day = csv_cells.training_rows_by_day(deduplicated, case.csv_format, case.partitions)
    assert list(by_day) == list(rows)
    for day, frame in rows.items():
        assert_frame_equal(by_day[day], frame)
    return Run(raw, classified, deduplicated, rows, {day: csv_bytes(frame) for day, frame in rows.items()})


def cell(value: object) -> str:
    """A value as the CSV spells it: empty for null, true/false, decimal integers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def frame_cells(frame: pl.DataFrame) -> list[list[str]]:
    return [[cell(value) for value in row] for row in frame.iter_rows()]


def parse_csv(data: bytes) -> list[list[str]]:
    # newline="": a CR or LF inside a quoted cell is data, not a line end.
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


# ---- the model: docs/contract.md, sections 4 and 5 in plain Python --------------------------------------


def trim(text: str) -> str:
    return text.strip(UNICODE_WHITESPACE)


def bucket(age: int | None) -> str:
    if age is None or not 0 <= age <= 120:
        return ""
    for limit, name in ((18, "<18"), (25, "18-25"), (35, "25-35"), (50, "35-50")):
        if age < limit:
            return name
    return "50+"


def normalized(conditions: str | None) -> str:
    labels = (trim(label).lower() for label in without_nul(conditions or "").split(","))
    return ",".join(sorted({label for label in labels if label}))


def formula_escaped(text: str) -> str:
    return "'" + text if text.startswith(MODEL_FORMULA_PREFIXES) else text


def escaped(text: str | None) -> str:
    """A text cell: NUL dropped (README), then a quote before what a spreadsheet would run."""
    return formula_escaped(without_nul(text or ""))


def readings(text: str) -> list[str]:
    """What a text cell may have held before escaping: a quote before a formula starter is the
    escape, unless the source text itself began with that quote."""
    return [text, text[1:]] if text.startswith("'") and text[1:].startswith(MODEL_FORMULA_PREFIXES) else [text]


def normalized_labels(text: str) -> bool:
    labels = text.split(",") if text else []
    return labels == sorted(set(labels)) and all(label and label == trim(label) == label.lower() for label in labels)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def model_outcome(case: Case, row: Mapping[str, Any]) -> str:
    user = case.users.get(row["user_id"])
    if row["malformed"]:
        return "malformed"
    if user is None or row["analysis_id"] not in case.analyses or row["recommendation_id"] not in case.records:
        return "orphan"
    if (
        row["user_id"] in case.held_twice("users", "user_id")
        or row["analysis_id"] in case.held_twice("analyses", "analysis_id")
        or row["recommendation_id"] in case.held_twice("records", "recommendation_id")
        or row["feedback_id"] in case.repeated_feedback_ids()
    ):
        return "ambiguous"
    analysis, record = case.analyses[row["analysis_id"]], case.records[row["recommendation_id"]]
    if analysis["analysis_user_id"] != row["user_id"] or record["record_analysis_id"] != row["analysis_id"]:
        return "mismatched"
    if user["ml_training_consent"] is not True:
        return "no_consent"
    if row["user_id"] in case.erased:
        return "erased"
    if any(row[name] is not None and not low <= row[name] <= high for name, (low, high) in MODEL_RATING_RANGES.items()):
        return "out_of_range"
    if sum(row[name] is not None for name in MODEL_RATING_FIELDS) < case.min_fields:
        return MODEL_SKIPPED
    return MODEL_ELIGIBLE


def dedupe_identity(case: Case, row: Mapping[str, Any]) -> tuple[Any, ...]:
    if case.scope == "exact":
        return (row["user_id"], row["recommendation_id"], row["created_at"])
    return (row["user_id"], row["recommendation_id"])


def earliest(rows: Iterable[Mapping[str, Any]]) -> Mapping[str, Any]:
    return min(rows, key=lambda row: (row["created_at"], row["feedback_id"]))


def model_exported(case: Case) -> dict[str, list[Mapping[str, Any]]]:
    """Per day, the source rows its file holds, in no particular order.

    A dedupe key's row is its earliest eligible one (tie: smallest id), history included; it is
    exported only if it lies in the window, by the day that holds it.
    """
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in case.rows:
        if model_outcome(case, row) == MODEL_ELIGIBLE:
            groups.setdefault(dedupe_identity(case, row), []).append(row)
    per_day: dict[str, list[Mapping[str, Any]]] = {day: [] for day in case.partitions}
    for group in groups.values():
        winner = earliest(group)
        if not winner["is_history"]:
            per_day[winner["partition"].isoformat()].append(winner)
    return per_day


def stable_pseudonym(user_id: int) -> str:
    return hmac.new(KEY, str(user_id).encode(), hashlib.sha256).hexdigest()


def exported_pseudonym(case: Case, user_id: int, day: dt.date) -> str:
    """The CSV's pseudonym, derived here with nothing of the product's: the stable one is
    HMAC-SHA256(key, decimal id), and HKDF-Expand of one SHA-256 block is HMAC(key, info || 0x01)."""
    stable = stable_pseudonym(user_id)
    if case.pseudonym_scope == "stable":
        return stable
    label = {"year": f"{day:%Y}", "month": f"{day:%Y-%m}", "day": day.isoformat()}[case.pseudonym_scope]
    period_key = hmac.new(KEY, (MODEL_PERIOD_KEY_INFO + label).encode() + b"\x01", hashlib.sha256).digest()
    return hmac.new(period_key, stable.encode(), hashlib.sha256).hexdigest()


UNITS = {
    "microsecond": dt.timedelta(microseconds=1),
    "second": dt.timedelta(seconds=1),
    "minute": dt.timedelta(minutes=1),
    "hour": dt.timedelta(hours=1),
    "day": dt.timedelta(days=1),
}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def truncated(moment: dt.datetime, precision: TimestampPrecision) -> dt.datetime:
    """The moment floored to a whole unit since the epoch (a UTC day starts at a whole day)."""
    unit = UNITS[precision]
    return EPOCH + (moment - EPOCH) // unit * unit


def in_file_order(header: list[str], rows: list[list[str]]) -> list[list[str]]:
    """The contract's order: by cell text, feedback_created_at, recommendation_id, analysis_hash first."""
    leading = [header.index(name) for name in ("feedback_created_at", "recommendation_id", "analysis_hash")]
    order = [*leading, *(i for i in range(len(header)) if i not in leading)]
    return sorted(rows, key=lambda row: [row[i] for i in order])


def model_cells(case: Case, row: Mapping[str, Any]) -> list[str]:
    user = case.users[row["user_id"]]
    analysis = case.analyses[row["analysis_id"]]
    record = case.records[row["recommendation_id"]]
    cells = [
        exported_pseudonym(case, row["user_id"], row["partition"]),
        escaped(row["recommendation_id"]),
        *(cell(row[name]) for name in MODEL_RATING_FIELDS),
        escaped(normalized(analysis["conditions"])),
        escaped(trim(without_nul(record["rules_applied"] or ""))),
        escaped(record["timeframe"]),
        bucket(user["age"]),
        iso(truncated(row["created_at"], case.precision)),
        iso(truncated(analysis["analysis_created_at"], case.precision)),
    ]
    if case.include_image_urls:
        cells.append(escaped(analysis["image_url"] if user["image_sharing_consent"] else None))
    return cells


# ---- what must hold for every source -----------------------------------------------------------


def assert_counts_add_up(case: Case, run: Run) -> None:
    outcomes = t.outcome_counts(run.classified, case.partitions)
    dedupes = t.dedupe_counts(run.deduplicated, case.partitions)
    exported = model_exported(case)
    for day in case.partitions:
        counts = {**outcomes[day], **dedupes[day]}
        window = case.window_rows(day)
        by_reason = Counter(model_outcome(case, row) for row in window)
        assert t.unaccounted_rows(counts) == 0, counts
        assert counts["total_feedback_records"] == len(window), counts
        assert counts["exported_records"] == run.rows[day].height == len(exported[day]), counts
        assert counts["anonymized_records"] == by_reason[MODEL_ELIGIBLE], counts
        assert counts["deduplicated_records"] == by_reason[MODEL_ELIGIBLE] - len(exported[day]), counts
        assert counts["skipped_records"] == by_reason[MODEL_SKIPPED], counts
        for reason in MODEL_REJECTED:
            assert counts[f"rejected_{reason}"] == by_reason[reason], (reason, counts)
        for reason in MODEL_EXCLUDED:
            assert counts[f"excluded_{reason}"] == by_reason[reason], (reason, counts)


def assert_files_match_the_model(case: Case, run: Run) -> None:
    for day, rows in model_exported(case).items():
        expected = in_file_order(case.columns, [model_cells(case, row) for row in rows])
        assert parse_csv(run.csv[day]) == [case.columns, *expected], day


def assert_rows_obey_the_contract(case: Case, run: Run) -> None:
    for day in case.partitions:
        user_of_hash = {exported_pseudonym(case, uid, dt.date.fromisoformat(day)): uid for uid in case.user_ids}
        header, *rows = parse_csv(run.csv[day])
        assert header == case.columns
        for values in rows:
            assert len(values) == len(header), values
            assert_row_obeys_the_contract(case, day, dict(zip(header, values, strict=True)), user_of_hash)
        # Sorted by feedback_created_at (fixed-width ISO text sorts as time does), and by nothing the
        # file does not show: the rows are in the order of their cells.
        created = [row[header.index("feedback_created_at")] for row in rows]
        assert created == sorted(created), "rows not sorted by feedback_created_at"
        assert rows == in_file_order(header, rows), "rows not in the order of their cells"
        for name in ("feedback_created_at", "analysis_created_at"):
            for text in (row[header.index(name)] for row in rows):
                moment = dt.datetime.fromisoformat(text)
                assert truncated(moment, case.precision) == moment, f"{name} {text} finer than {case.precision}"

    source = case.by_id()
    kept_rows = [source[feedback_id] for feedback_id in run.kept()["feedback_id"].to_list()]
    identities = Counter(dedupe_identity(case, row) for row in kept_rows)
    assert all(n == 1 for n in identities.values()), f"a dedupe key exported twice: {identities}"
    eligible = [row for row in case.rows if model_outcome(case, row) == MODEL_ELIGIBLE]
    for row in kept_rows:
        assert earliest(r for r in eligible if dedupe_identity(case, r) == dedupe_identity(case, row)) is row


def assert_row_obeys_the_contract(
    case: Case, day: str, row: Mapping[str, str], user_of_hash: Mapping[str, int]
) -> None:
    assert row["analysis_hash"] in user_of_hash, "the pseudonym is no known user's"
    user_id = user_of_hash[row["analysis_hash"]]
    user = case.users.get(user_id)
    assert user is not None, "a row of a missing user"
    assert user["ml_training_consent"] is True, "a row of a user without consent"
    assert user_id not in case.erased, "a row of an erased user"

    for name, (low, high) in MODEL_RATING_RANGES.items():
        assert row[name] == "" or low <= int(row[name]) <= high, (name, row[name])
    assert row["would_recommend"] in ("", "true", "false")
    assert sum(row[name] != "" for name in MODEL_RATING_FIELDS) >= case.min_fields

    assert row["age_range"] in ("", *AGE_BUCKETS)
    assert row["age_range"] == bucket(user["age"])

    assert any(normalized_labels(text) for text in readings(row["conditions"])), row["conditions"]
    assert any(text == trim(text) for text in readings(row["rules_applied"])), row["rules_applied"]

    for name, value in row.items():
        assert not value.startswith(MODEL_FORMULA_PREFIXES), (name, value)
    for name in ("feedback_created_at", "analysis_created_at"):
        assert ISO_8601_UTC.fullmatch(row[name]), (name, row[name])
    assert dt.datetime.fromisoformat(row["feedback_created_at"]).date().isoformat() == day, "a row in another day"

    if case.include_image_urls and row["image_url"]:
        assert user["image_sharing_consent"] is True, "an image URL without image consent"


def assert_no_personal_data(case: Case, run: Run) -> None:
    # The stored raw partition keeps nothing personal of a user who refused or asked to be erased, nor
    # of an ambiguous or mismatched row (another person's analysis), nor any owner's id but the row's own.
    excluded = run.raw.filter(
        pl.col("erasure_requested")
        | ~pl.col("ml_training_consent").fill_null(False)
        | pl.col("ambiguous")
        | pl.col("mismatched")
    )
    assert excluded.select(j.PERSONAL_COLUMNS).null_count().row(0) == (excluded.height,) * len(j.PERSONAL_COLUMNS)
    assert not {"analysis_user_id", "record_analysis_id"} & set(run.raw.columns)

    source = case.by_id()
    kept = run.kept()
    for feedback_id, analysis_hash in kept.select("feedback_id", "analysis_hash").iter_rows():
        assert analysis_hash == stable_pseudonym(source[feedback_id]["user_id"])

    raw_ids = {str(uid) for uid in case.user_ids}
    ages = {str(user["age"]) for user in case.users.values() if user["age"] is not None}
    consented_urls = {
        case.analyses[source[feedback_id]["analysis_id"]]["image_url"]
        for feedback_id in kept["feedback_id"].to_list()
        if case.users[source[feedback_id]["user_id"]]["image_sharing_consent"]
    }
    for day, data in run.csv.items():
        assert FREE_TEXT_MARKER.encode() not in data, "free text in the CSV"
        header, *rows = parse_csv(data)
        day_kept = kept.filter(pl.col("partition") == dt.date.fromisoformat(day))
        day_hashes = [
            exported_pseudonym(case, source[feedback_id]["user_id"], dt.date.fromisoformat(day))
            for feedback_id in day_kept["feedback_id"].to_list()
        ]
        assert Counter(row[0] for row in rows) == Counter(day_hashes)
        for row in rows:
            assert raw_ids.isdisjoint(row), "a raw user id as a cell"
            assert row[header.index("age_range")] not in ages, "an exact age as the age cell"
        urls = set(re.findall(re.escape(IMAGE_URL_PREFIX) + r"\d+", data.decode("utf-8")))
        if case.include_image_urls:
            assert urls <= consented_urls, "an image URL without image consent"
            assert {row[-1] for row in rows if row[-1]} <= consented_urls
        else:
            assert not urls, "an image URL with image URLs disabled"


def assert_round_trip(case: Case, run: Run) -> None:
    for day, frame in run.rows.items():
        assert list(frame.columns) == case.columns
        assert parse_csv(run.csv[day]) == [case.columns, *frame_cells(frame)]


def assert_independent_of_row_order(case: Case, run: Run) -> None:
    # A database returns rows in no promised order; a re-run must still give byte-identical files.
    frames = case.frames
    reversed_frames = j.SourceFrames(
        feedback=frames.feedback.reverse(),
        users=frames.users.reverse(),
        analyses=frames.analyses.reverse(),
        records=frames.records.reverse(),
        erasures=frames.erasures.reverse(),
    )
    rerun = run_chain(case, reversed_frames)
    assert rerun.csv == run.csv
    assert t.outcome_counts(rerun.classified, case.partitions) == t.outcome_counts(run.classified, case.partitions)


@PROPERTY_SETTINGS
@given(cases())
def test_any_source_gives_counted_lawful_private_files(case: Case) -> None:
    # One test checks every property on one run of the chain: a test per property would build and
    # run each source again, and building it is most of the cost.
    run = run_chain(case)
    assert_counts_add_up(case, run)
    assert_files_match_the_model(case, run)
    assert_rows_obey_the_contract(case, run)
    assert_no_personal_data(case, run)
    assert_round_trip(case, run)
    assert_independent_of_row_order(case, run)


@PROPERTY_SETTINGS
@given(
    ages=st.lists(AGES, max_size=20),
    conditions=st.lists(st.none() | LABEL_TEXT, max_size=20),
    texts=st.lists(awkward_text(), max_size=20),
)
def test_the_column_rules_hold_for_any_value(
    ages: list[int | None], conditions: list[str | None], texts: list[str]
) -> None:
    # The chain meets a boundary age or a formula-like label only now and then; here every example does.
    result = pl.DataFrame({"age": ages}, schema={"age": pl.Int64}).select(t.age_range(pl.col("age")).alias("age"))
    assert [cell(value) for value in result["age"].to_list()] == [bucket(age) for age in ages]
    result = pl.DataFrame({"c": conditions}, schema={"c": pl.String}).select(t.normalize_conditions(pl.col("c")))
    assert result.to_series().to_list() == [normalized(value) for value in conditions]
    result = pl.DataFrame({"x": texts}, schema={"x": pl.String}).select(csv_cells.escape_formula(pl.col("x")))
    assert result.to_series().to_list() == [formula_escaped(text) for text in texts]


TEXT_CELL = st.none() | st.text(CHARACTERS, max_size=8) | st.sampled_from(AWKWARD_TEXT)


@st.composite
def training_frames(draw: st.DrawFn) -> pl.DataFrame:
    """Frames of training_rows' schema with any values, also text no real row would hold."""
    columns = [*schemas.TRAINING_COLUMNS, "image_url"] if draw(st.booleans()) else list(schemas.TRAINING_COLUMNS)
    n = draw(st.integers(0, 5))
    schema: dict[str, pl.DataType] = {}
    values: dict[str, list[Any]] = {}
    cells: st.SearchStrategy[Any]
    for name in columns:
        if name in RATING_COLUMNS:
            schema[name], cells = pl.Int64(), st.none() | st.integers(*INT64)
        elif name == "would_recommend":
            schema[name], cells = pl.Boolean(), st.none() | st.booleans()
        else:
            schema[name], cells = pl.String(), TEXT_CELL
        values[name] = draw(st.lists(cells, min_size=n, max_size=n))
    return pl.DataFrame(values, schema=schema)


@PROPERTY_SETTINGS
@given(training_frames())
def test_csv_bytes_parse_back_to_exactly_the_cells(rows: pl.DataFrame) -> None:
    assert parse_csv(csv_bytes(rows)) == [rows.columns, *frame_cells(rows)]


# ---- defects these properties found, kept as regression tests


@DEFECT_SETTINGS
@given(cases(consents=st.none()))
@example(one_row_case(consent=None))
def test_a_user_whose_consent_is_unknown_is_never_exported(case: Case) -> None:
    run = run_chain(case)
    assert all(frame.is_empty() for frame in run.rows.values())


@DEFECT_SETTINGS
@given(cases(analysis_times=st.none()))
@example(one_row_case(analysis_created_at=None))
def test_every_exported_analysis_created_at_is_a_timestamp(case: Case) -> None:
    for data in run_chain(case).csv.values():
        header, *rows = parse_csv(data)
        assert all(ISO_8601_UTC.fullmatch(row[header.index("analysis_created_at")]) for row in rows)


@DEFECT_SETTINGS
@given(cases(labels=awkward_text(16)))
@example(one_row_case(conditions="acne, Acne\x00"))
def test_nul_in_a_label_never_breaks_the_normalisation(case: Case) -> None:
    assert_rows_obey_the_contract(case, run_chain(case))


# Three-day windows across a common-year February end, a leap day, a 30-day month's end and a year end.
TEXT_WINDOW_STARTS = (dt.date(2025, 2, 27), dt.date(2024, 2, 28), dt.date(2025, 4, 29), dt.date(2025, 12, 30))
TEXT_WINDOW_LENGTH = 3
# Dates that do not exist, near those boundaries: SQLite stores them, its text comparison puts them in a window.
IMPOSSIBLE_DATES = (
    "2025-02-29",
    "2025-02-30",
    "2024-02-30",
    "2025-04-31",
    "2025-13-01",
    "2025-12-32",
    "2025-00-10",
    "2025-03-00",
    "2026-01-00",
)
TIME_SUFFIXES = (
    "",
    " 00:00:00",
    " 12:00:00",
    " 23:59:59.999999",
    " 23:59:60",
    " 24:00:00",
    " 25:00:00",
    " 10:60:00",
    " 12:00:00 ",
    " 12:00:00.1",
    " 12:00:00.1234567",
    " 12:00:00.",
    "T12:00:00",
    "T12:00:00Z",
    " 12:00",
    " 12:00:00+02:00",
    " 12:00:00Z",
    "\t",
)


def date_texts(start: dt.date) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(-1, TEXT_WINDOW_LENGTH + 2)]


def created_at_texts(start: dt.date) -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.none(),
        st.builds(
            lambda date, suffix: date + suffix,
            st.sampled_from([*date_texts(start), *IMPOSSIBLE_DATES]),
            st.one_of(
                st.sampled_from(TIME_SUFFIXES),
                st.times().map(lambda time: " " + time.isoformat()),
                st.text(CHARACTERS, max_size=6),
            ),
        ),
        st.sampled_from(["", " ", "2025", "20250301", "1740787200", "1740787200.5"]),
        st.text(CHARACTERS, max_size=12),
    )


NUMBER_TEXT = st.one_of(
    st.none(), st.sampled_from(["1", " 4 ", "0", "101", "x", "4.0", ""]), st.integers(-9, 200).map(str)
)


def feedback_text_rows(start: dt.date) -> st.SearchStrategy[list[dict[str, str | None]]]:
    return st.lists(
        st.fixed_dictionaries(
            {
                "feedback_id": st.integers(1, 10**6).map(str),
                "user_id": st.sampled_from(["1", "2", " 1", "u"]),
                "analysis_id": st.sampled_from(["10", "11"]),
                "recommendation_id": st.sampled_from(["rec_1", "rec_2"]),
                "helpful_rating": NUMBER_TEXT,
                "product_satisfaction": NUMBER_TEXT,
                "routine_completion_pct": NUMBER_TEXT,
                "would_recommend": st.sampled_from([None, "1", "0", "t", "true", "FALSE", "yes"]),
                "created_at": created_at_texts(start),
                "is_history": st.just("0"),
            }
        ),
        max_size=8,
        unique_by=lambda row: row["feedback_id"],
    )


ONE_TEXT_ROW = {
    **dict.fromkeys(FEEDBACK_READ_SCHEMA.names(), "1"),
    "recommendation_id": "rec_1",
    "analysis_id": "10",
    "is_history": "0",
}


@st.composite
def text_windows(draw: st.DrawFn) -> tuple[list[dt.date], list[dict[str, str | None]]]:
    start = draw(st.sampled_from(TEXT_WINDOW_STARTS))
    return [start + dt.timedelta(days=i) for i in range(TEXT_WINDOW_LENGTH)], draw(feedback_text_rows(start))


def leap_window(created_at: str) -> tuple[list[dt.date], list[dict[str, str | None]]]:
    return [dt.date(2025, 2, 27) + dt.timedelta(days=i) for i in range(3)], [{**ONE_TEXT_ROW, "created_at": created_at}]


@DEFECT_SETTINGS
@given(text_windows())
@example(leap_window("2025-03-01"))
@example(leap_window("2025-02-28 23:59:60"))
@example(leap_window("2025-02-29 10:00:00"))
@example(leap_window("2025-02-28 24:00:00"))
def test_every_row_a_window_reads_is_counted_in_its_days(
    window: tuple[list[dt.date], list[dict[str, str | None]]],
) -> None:
    window_days, text_rows = window
    start, end = (f"{day.isoformat()} 00:00:00" for day in (window_days[0], window_days[-1] + dt.timedelta(1)))
    # The source's WHERE created_at >= :start AND created_at < :end, on SQLite's text: compared bytewise.
    selected = [row for row in text_rows if row["created_at"] is not None and start <= row["created_at"] < end]
    text = pl.DataFrame(selected, schema=dict.fromkeys(FEEDBACK_READ_SCHEMA.names(), pl.String))
    feedback = type_feedback(text, window_days)
    days = [day.isoformat() for day in window_days]
    assert {day.isoformat() for day in feedback["partition"].to_list()} <= set(days)
    # A row that is not malformed parsed to the very day it was read for.
    for day, malformed, created in feedback.select("partition", "malformed", "created_at").iter_rows():
        assert malformed or created.date() == day, (day, created)
    assert sum(part.height for part in split_by_partition(feedback, days).values()) == len(selected)
    frames = j.SourceFrames(
        feedback=feedback,
        users=pl.DataFrame(
            {"user_id": [1], "age": [30], "ml_training_consent": [True], "image_sharing_consent": [False]},
            schema=schemas.USERS_SCHEMA,
        ),
        analyses=pl.DataFrame(
            {
                "analysis_id": [10],
                "analysis_user_id": [1],
                "conditions": ["acne"],
                "image_url": [None],
                "analysis_created_at": [None],
            },
            schema=schemas.ANALYSES_SCHEMA,
        ),
        records=pl.DataFrame(
            {"recommendation_id": ["rec_1"], "record_analysis_id": [10], "rules_applied": [None], "timeframe": [None]},
            schema=schemas.RECORDS_SCHEMA,
        ),
        erasures=pl.DataFrame(schema=schemas.ERASURES_SCHEMA),
    )
    counts = t.outcome_counts(t.classify(j.join_source(frames), 1), days)
    assert sum(day["total_feedback_records"] for day in counts.values()) == len(selected)
