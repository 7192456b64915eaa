"""The demo-data generator: what it generates, and that SQLite and PostgreSQL hold exactly that."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import polars as pl
import psycopg2
import psycopg2.errors
import pytest

from feedback_assets.demo.data import main
from feedback_assets.demo.database import DemoSourceExistsError, create_schema, load, write_demo_source
from feedback_assets.demo.edge_cases import EDGE_CASE_IDS, EDGE_CASES, edge_case_ids
from feedback_assets.demo.generate import DemoData, generate

END = dt.date(2025, 10, 25)
DAYS = 4
ROWS_PER_DAY = 60
SEED = 7
RANGE = [END - dt.timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
UTC_US = pl.Datetime("us", "UTC")

# Written out again rather than imported, so a drift from docs/contract.md, section 1 fails here.
CONTRACT_SCHEMAS = {
    "users": {
        "id": pl.Int64,
        "age": pl.Int32,
        "ml_training_consent": pl.Boolean,
        "image_sharing_consent": pl.Boolean,
        "created_at": UTC_US,
    },
    "analyses": {
        "id": pl.Int64,
        "user_id": pl.Int64,
        "conditions": pl.String,
        "image_url": pl.String,
        "created_at": UTC_US,
    },
    "recommendation_records": {
        "id": pl.String,
        "analysis_id": pl.Int64,
        "rules_applied": pl.String,
        "timeframe": pl.String,
        "created_at": UTC_US,
    },
    "recommendation_feedback": {
        "id": pl.Int64,
        "user_id": pl.Int64,
        "analysis_id": pl.Int64,
        "recommendation_id": pl.String,
        "helpful_rating": pl.Int16,
        "product_satisfaction": pl.Int16,
        "routine_completion_pct": pl.Int16,
        "would_recommend": pl.Boolean,
        "feedback_text": pl.String,
        "created_at": UTC_US,
    },
    "erasure_requests": {"user_id": pl.Int64, "requested_at": UTC_US},
}
POSTGRES_TYPES = {
    pl.Int64: "bigint",
    pl.Int32: "integer",
    pl.Int16: "smallint",
    pl.Boolean: "boolean",
    pl.String: "text",
    UTC_US: "timestamp with time zone",
}
NOT_NULL = {
    ("users", "id"),
    ("users", "ml_training_consent"),
    ("users", "image_sharing_consent"),
    ("users", "created_at"),
    ("analyses", "id"),
    ("analyses", "user_id"),
    ("analyses", "created_at"),
    ("recommendation_records", "id"),
    ("recommendation_records", "analysis_id"),
    ("recommendation_records", "created_at"),
    ("recommendation_feedback", "id"),
    ("recommendation_feedback", "user_id"),
    ("recommendation_feedback", "analysis_id"),
    ("recommendation_feedback", "recommendation_id"),
    ("recommendation_feedback", "created_at"),
    ("erasure_requests", "user_id"),
    ("erasure_requests", "requested_at"),
}
PRIMARY_KEYS = {"users": "id", "analyses": "id", "recommendation_records": "id", "recommendation_feedback": "id"}
ORDER_BY = {
    "users": ("id",),
    "analyses": ("id",),
    "recommendation_records": ("id",),
    "recommendation_feedback": ("id",),
    "erasure_requests": ("user_id", "requested_at"),
}
SQLITE_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
RATINGS = ("helpful_rating", "product_satisfaction", "routine_completion_pct", "would_recommend")
VALID_RANGES = {"helpful_rating": (1, 5), "product_satisfaction": (1, 5), "routine_completion_pct": (0, 100)}
EXPECTED_AGES = {
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
FORMULA_CASES = {
    "formula_equals": "=",
    "formula_plus": "+",
    "formula_minus": "-",
    "formula_at": "@",
    "formula_tab": "\t",
}


@pytest.fixture(scope="module")
def demo() -> DemoData:
    return generate(end_date=END, days=DAYS, rows_per_day=ROWS_PER_DAY, seed=SEED)


@pytest.fixture(scope="module")
def facts(demo: DemoData) -> pl.DataFrame:
    """Each feedback row with what the other tables say about its user, analysis and record."""
    users = demo.users.select(
        pl.col("id").alias("user_id"), "age", "ml_training_consent", pl.lit(True).alias("has_user")
    )
    analyses = demo.analyses.select(
        pl.col("id").alias("analysis_id"),
        pl.col("user_id").alias("analysis_user_id"),
        "conditions",
        pl.col("created_at").alias("analysis_created_at"),
        pl.lit(True).alias("has_analysis"),
    )
    records = demo.recommendation_records.select(
        pl.col("id").alias("recommendation_id"),
        pl.col("analysis_id").alias("record_analysis_id"),
        "rules_applied",
        pl.lit(True).alias("has_record"),
    )
    erased = demo.erasure_requests.select("user_id").unique().with_columns(pl.lit(True).alias("erased"))
    return (
        demo.recommendation_feedback.join(users, on="user_id", how="left")
        .join(analyses, on="analysis_id", how="left")
        .join(records, on="recommendation_id", how="left")
        .join(erased, on="user_id", how="left")
        .with_columns(pl.col("has_user", "has_analysis", "has_record", "erased").fill_null(False))
    )


def test_generate_is_deterministic_for_a_seed(demo: DemoData) -> None:
    again = generate(end_date=END, days=DAYS, rows_per_day=ROWS_PER_DAY, seed=SEED)
    for name, frame in demo.tables().items():
        assert frame.equals(again.tables()[name]), name
    other = generate(end_date=END, days=DAYS, rows_per_day=ROWS_PER_DAY, seed=SEED + 1)
    assert not other.recommendation_feedback.equals(demo.recommendation_feedback)


def test_tables_have_the_contract_columns_and_dtypes(demo: DemoData) -> None:
    assert list(demo.tables()) == list(CONTRACT_SCHEMAS)
    for name, frame in demo.tables().items():
        assert dict(frame.schema) == CONTRACT_SCHEMAS[name], name
        for column in frame.columns:
            if (name, column) in NOT_NULL:
                assert frame[column].null_count() == 0, (name, column)


def test_ids_are_unique_across_bulk_and_crafted_rows(demo: DemoData) -> None:
    for name, key in PRIMARY_KEYS.items():
        frame = demo.tables()[name]
        assert frame[key].n_unique() == frame.height, name


def test_bulk_rows_fill_each_day_of_the_range(demo: DemoData) -> None:
    feedback = demo.recommendation_feedback
    crafted_offsets = {o for offsets in EDGE_CASE_IDS.values() for o in offsets}
    crafted_ids = {i for day in RANGE for ids in edge_case_ids(day).values() for i in ids}
    bulk = feedback.filter(~pl.col("id").is_in(list(crafted_ids)))
    assert bulk.height == DAYS * ROWS_PER_DAY
    per_day = bulk.group_by(pl.col("created_at").dt.date().alias("day")).len().sort("day")
    assert per_day["day"].to_list() == RANGE
    assert set(per_day["len"].to_list()) == {ROWS_PER_DAY}
    crafted = feedback.filter(pl.col("id").is_in(list(crafted_ids)))
    assert crafted.height == DAYS * len(crafted_offsets) - 1  # no second rating on the first day
    assert feedback["created_at"].dt.date().is_between(RANGE[0], RANGE[-1]).all()
    assert feedback["created_at"].is_sorted()


def mean(column: pl.Series) -> float:
    # Series.mean() is typed as any Python scalar, whatever the dtype; a boolean column's mean is a float.
    return cast(float, column.mean())


def test_bulk_rows_look_like_the_app_wrote_them() -> None:
    data = generate(end_date=END, days=2, rows_per_day=5000, seed=3)
    first_day_start = dt.datetime.combine(END - dt.timedelta(days=1), dt.time(), dt.UTC)
    users = data.users.filter(pl.col("id") < 1_000_000)
    assert users.height == 2 * 5000 // 25
    assert 0.85 < mean(users["ml_training_consent"]) < 0.95
    assert 0.5 < mean(users["image_sharing_consent"]) < 0.7
    assert users["age"].drop_nulls().is_between(16, 70).all()
    assert (users["created_at"] < first_day_start).all()

    feedback = data.recommendation_feedback.filter(pl.col("id") < 1_000_000).join(
        data.analyses.select(
            pl.col("id").alias("analysis_id"),
            pl.col("user_id").alias("analysis_user_id"),
            pl.col("created_at").alias("analysis_created_at"),
            "conditions",
            "image_url",
        ),
        on="analysis_id",
    )
    assert feedback.height == 2 * 5000
    assert (feedback["user_id"] == feedback["analysis_user_id"]).all()
    assert (feedback["analysis_created_at"] < feedback["created_at"]).all()
    assert (feedback["analysis_created_at"] > feedback["created_at"] - dt.timedelta(days=1)).all()
    for column, (low, high) in VALID_RANGES.items():
        assert feedback[column].drop_nulls().is_between(low, high).all()
    assert 0.05 < feedback["helpful_rating"].null_count() / feedback.height < 0.15
    assert 0.05 < feedback["product_satisfaction"].null_count() / feedback.height < 0.15
    assert 0 < feedback["routine_completion_pct"].null_count() < feedback.height // 5
    assert 0 < feedback["would_recommend"].null_count() < feedback.height // 5
    assert 0 < feedback["feedback_text"].null_count() < feedback.height
    assert feedback["created_at"].dt.microsecond().n_unique() > 1000

    analyses = data.analyses.filter(pl.col("id") < 1_000_000)
    conditions = analyses["conditions"]
    assert 0 < conditions.null_count() < analyses.height // 5
    present = conditions.drop_nulls()
    assert present.str.contains(r"[A-Z]").any()
    assert (present.str.starts_with(" ") | present.str.ends_with(" ")).any()
    labels = present.str.to_lowercase().str.split(",").list.eval(pl.element().str.strip_chars())
    assert (labels.list.len() > labels.list.unique().list.len()).any()
    urls = analyses["image_url"].drop_nulls()
    assert analyses["image_url"].null_count() > 0
    assert urls.str.contains(
        r"^https://cdn\.example\.invalid/img/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.jpg$"
    ).all()
    assert urls.n_unique() == urls.len()

    records = data.recommendation_records.filter(pl.col("analysis_id") < 1_000_000)
    assert records["id"].str.contains(r"^rec_\d{8}_\d{3,}$").all()
    assert set(records["timeframe"].drop_nulls().unique().to_list()) == {"2w", "4w", "8w", "12w"}
    assert records["timeframe"].null_count() > 0
    assert records["rules_applied"].drop_nulls().str.contains(r"^[a-z_]+(, [a-z_]+)*$").all()
    assert data.erasure_requests.height > 0


def _check_other_properties_are_clean(name: str, rows: pl.DataFrame) -> None:
    """A crafted row is awkward in one way only, so each case tests one rule."""
    if not name.startswith("orphan_"):
        assert rows["has_user"].all() and rows["has_analysis"].all() and rows["has_record"].all(), name
    if not name.startswith(("orphan_", "mismatched_")):
        assert (rows["analysis_user_id"] == rows["user_id"]).all(), name
        assert (rows["record_analysis_id"] == rows["analysis_id"]).all(), name
    if name not in ("no_consent_user", "erased_user", "orphan_user"):
        assert rows["ml_training_consent"].all() and not rows["erased"].any(), name
    if name not in ("helpful_rating_0", "helpful_rating_6", "product_satisfaction_minus_1", "routine_completion_101"):
        for column, (low, high) in VALID_RANGES.items():
            assert rows[column].drop_nulls().is_between(low, high).all(), (name, column)
    if name != "all_ratings_null":
        assert (rows.select(pl.sum_horizontal(pl.col(*RATINGS).is_not_null())).to_series() > 0).all(), name


def _check_case(name: str, day: dt.date, rows: pl.DataFrame, facts: pl.DataFrame) -> None:
    row = rows.row(0, named=True)
    if name == "helpful_rating_0":
        assert row["helpful_rating"] == 0
    elif name == "helpful_rating_6":
        assert row["helpful_rating"] == 6
    elif name == "product_satisfaction_minus_1":
        assert row["product_satisfaction"] == -1
    elif name == "routine_completion_101":
        assert row["routine_completion_pct"] == 101
    elif name == "orphan_user":
        assert not row["has_user"] and row["has_analysis"] and row["has_record"]
    elif name == "orphan_analysis":
        assert row["has_user"] and not row["has_analysis"] and row["has_record"]
    elif name == "orphan_recommendation":
        assert row["has_user"] and row["has_analysis"] and not row["has_record"]
    elif name == "duplicate_submission":
        assert rows.height == 2 and rows["id"].n_unique() == 2
        assert rows.select("user_id", "recommendation_id", "created_at").n_unique() == 1
    elif name == "rerated_next_day_first":
        later = facts.filter(
            (pl.col("user_id") == row["user_id"])
            & (pl.col("recommendation_id") == row["recommendation_id"])
            & (pl.col("created_at").dt.date() == day + dt.timedelta(days=1))
        )
        assert later.height == (1 if day < RANGE[-1] else 0)
    elif name == "rerated_next_day_second":
        earlier = facts.filter(pl.col("id").is_in(edge_case_ids(day - dt.timedelta(days=1))["rerated_next_day_first"]))
        assert earlier.height == 1
        assert (earlier["user_id"][0], earlier["recommendation_id"][0]) == (row["user_id"], row["recommendation_id"])
        assert earlier["created_at"][0].date() == day - dt.timedelta(days=1)
    elif name == "no_consent_user":
        assert row["ml_training_consent"] is False and not row["erased"]
    elif name == "erased_user":
        assert row["erased"] and row["ml_training_consent"] is True
    elif name == "all_ratings_null":
        assert all(row[c] is None for c in RATINGS)
    elif name == "mismatched_analysis":
        assert row["analysis_user_id"] != row["user_id"] and row["record_analysis_id"] == row["analysis_id"]
    elif name == "mismatched_recommendation":
        assert row["analysis_user_id"] == row["user_id"] and row["record_analysis_id"] != row["analysis_id"]
    elif name in EXPECTED_AGES:
        assert row["has_user"] and row["age"] == EXPECTED_AGES[name]
    elif name in FORMULA_CASES or name == "formula_cr":
        prefix = FORMULA_CASES.get(name, "\r")
        for column in ("recommendation_id", "conditions", "rules_applied"):
            assert row[column].startswith(prefix), column
    elif name == "text_quotes_commas":
        for column in ("conditions", "rules_applied", "feedback_text"):
            assert '"' in row[column] and "," in row[column], column
    elif name == "text_newlines":
        for column in ("conditions", "rules_applied", "feedback_text"):
            assert "\r\n" in row[column] and "\n" in row[column].replace("\r\n", ""), column
    elif name == "text_unicode":
        text = "".join(row[c] for c in ("conditions", "rules_applied", "feedback_text"))
        assert "é" in text and "日本" in text and any(ord(c) > 0xFFFF for c in text)
        for column in ("conditions", "rules_applied", "feedback_text"):
            assert any(ord(c) > 127 for c in row[column]), column
    elif name == "midnight_start":
        assert row["created_at"] == dt.datetime.combine(day, dt.time(), dt.UTC)
    elif name == "day_last_microsecond":
        assert row["created_at"] == dt.datetime.combine(day, dt.time(23, 59, 59, 999_999), dt.UTC)
    else:
        pytest.fail(f"no check written for edge case {name!r}")


@pytest.mark.parametrize("name", list(EDGE_CASE_IDS))
def test_each_edge_case_is_present_every_day(name: str, facts: pl.DataFrame) -> None:
    assert EDGE_CASES[name].description
    for day in RANGE:
        ids = edge_case_ids(day)[name]
        rows = facts.filter(pl.col("id").is_in(list(ids))).sort("id")
        if name == "rerated_next_day_second" and day == RANGE[0]:
            assert rows.is_empty()
            continue
        assert rows["id"].to_list() == list(ids), (name, day)
        assert (rows["created_at"].dt.date() == day).all(), (name, day)
        _check_case(name, day, rows, facts)
        _check_other_properties_are_clean(name, rows)


def test_edge_case_ids_are_recognisable_and_distinct() -> None:
    ids = [i for day in RANGE for case in edge_case_ids(day).values() for i in case]
    assert len(ids) == len(set(ids))
    assert all(
        str(i).startswith(f"{day:%Y%m%d}9") for day in RANGE for case in edge_case_ids(day).values() for i in case
    )


def test_generate_with_no_bulk_rows_still_has_every_edge_case() -> None:
    data = generate(end_date=END, days=2, rows_per_day=0, seed=1, users=5)
    assert data.users.filter(pl.col("id") < 1_000_000).height == 5
    expected = {i for day in RANGE[-2:] for ids in edge_case_ids(day).values() for i in ids}
    expected -= set(edge_case_ids(RANGE[-2])["rerated_next_day_second"])
    assert set(data.recommendation_feedback["id"].to_list()) == expected


def _sqlite_value(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


@contextlib.contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(str(path))
    try:
        yield conn
    finally:
        conn.close()


def test_sqlite_holds_exactly_the_generated_rows(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "demo.sqlite"
    data = write_demo_source(f"sqlite:///{path}", end_date=END, days=DAYS, rows_per_day=ROWS_PER_DAY, seed=SEED)
    with _sqlite(path) as conn:
        for table, frame in data.tables().items():
            (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert count == frame.height, table
            order = ", ".join(ORDER_BY[table])
            stored = conn.execute(f"SELECT {', '.join(frame.columns)} FROM {table} ORDER BY {order}").fetchall()
            expected = [tuple(_sqlite_value(v) for v in row) for row in frame.sort(list(ORDER_BY[table])).iter_rows()]
            assert stored == expected, table
            for column, dtype in CONTRACT_SCHEMAS[table].items():
                kinds = {k for (k,) in conn.execute(f"SELECT DISTINCT typeof({column}) FROM {table}")}
                if dtype == UTC_US:
                    assert kinds == {"text"}, (table, column)
                    values = [v for (v,) in conn.execute(f"SELECT {column} FROM {table}")]
                    assert all(SQLITE_TIMESTAMP.match(v) for v in values), (table, column)
                elif dtype == pl.Boolean:
                    assert kinds <= {"integer", "null"}, (table, column)
                    assert {v for (v,) in conn.execute(f"SELECT DISTINCT {column} FROM {table}")} <= {0, 1, None}
        indexes = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'recommendation_feedback'"
            " AND sql IS NOT NULL"
        ).fetchall()
        indexed = [[c[2] for c in conn.execute(f"PRAGMA index_info({name})")] for (name,) in indexes]
        assert ["created_at"] in indexed
        (midnight,) = conn.execute(
            "SELECT created_at FROM recommendation_feedback WHERE id = ?", edge_case_ids(END)["midnight_start"]
        ).fetchone()
        assert midnight == f"{END} 00:00:00.000000"
        (foreign_keys,) = conn.execute(
            "SELECT count(*) FROM sqlite_master m, pragma_foreign_key_list(m.name) WHERE m.type = 'table'"
        ).fetchone()
        assert foreign_keys == 0


def test_sqlite_refuses_existing_tables_unless_replacing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    first = write_demo_source(url, end_date=END, days=2, rows_per_day=10, seed=1)
    with pytest.raises(DemoSourceExistsError, match="replace"):
        create_schema(url)
    with pytest.raises(DemoSourceExistsError):
        write_demo_source(url, end_date=END, days=2, rows_per_day=10, seed=2, replace=False)
    second = write_demo_source(url, end_date=END, days=2, rows_per_day=10, seed=2)
    with _sqlite(tmp_path / "demo.sqlite") as conn:
        (count,) = conn.execute("SELECT count(*) FROM recommendation_feedback").fetchone()
    assert count == second.recommendation_feedback.height == first.recommendation_feedback.height


def test_postgres_holds_exactly_the_generated_rows(postgres_url: str) -> None:
    data = write_demo_source(postgres_url, end_date=END, days=DAYS, rows_per_day=ROWS_PER_DAY, seed=SEED)
    conn = psycopg2.connect(postgres_url)
    try:
        with conn.cursor() as cur:
            for table, frame in data.tables().items():
                cur.execute(f"SELECT count(*) FROM {table}")
                assert cur.fetchone() == (frame.height,), table
                # COLLATE "C" sorts text by bytes, as Polars does.
                order = ", ".join(f'{c} COLLATE "C"' if frame.schema[c] == pl.String else c for c in ORDER_BY[table])
                cur.execute(f"SELECT {', '.join(frame.columns)} FROM {table} ORDER BY {order}")
                assert cur.fetchall() == list(frame.sort(list(ORDER_BY[table])).iter_rows()), table

                cur.execute(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                    (table,),
                )
                expected = [
                    (column, POSTGRES_TYPES[dtype], "NO" if (table, column) in NOT_NULL else "YES")
                    for column, dtype in CONTRACT_SCHEMAS[table].items()
                ]
                assert cur.fetchall() == expected, table

            cur.execute(
                "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc"
                " JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)"
                " WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = 'public'"
            )
            assert dict(cur.fetchall()) == PRIMARY_KEYS
            cur.execute(
                "SELECT count(*) FROM information_schema.table_constraints WHERE constraint_type = 'FOREIGN KEY'"
            )
            assert cur.fetchone() == (0,)
            cur.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'recommendation_feedback'")
            assert any(d.endswith("(created_at)") for (d,) in cur.fetchall())

            cur.execute(
                "SELECT created_at, feedback_text FROM recommendation_feedback WHERE id IN %s ORDER BY id",
                (edge_case_ids(END)["day_last_microsecond"] + edge_case_ids(END)["text_newlines"],),
            )
            (text_at, text), (last_at, _) = cur.fetchall()
            assert "\r\n" in text
            assert last_at == dt.datetime.combine(END, dt.time(23, 59, 59, 999_999), dt.UTC)
            assert text_at.date() == END
    finally:
        conn.close()


def test_postgres_refuses_existing_tables_unless_replacing(postgres_url: str) -> None:
    write_demo_source(postgres_url, end_date=END, days=2, rows_per_day=10, seed=1)
    with pytest.raises(DemoSourceExistsError, match="replace"):
        create_schema(postgres_url)
    data = write_demo_source(postgres_url, end_date=END, days=2, rows_per_day=20, seed=2)
    conn = psycopg2.connect(postgres_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM recommendation_feedback")
            assert cur.fetchone() == (data.recommendation_feedback.height,)
    finally:
        conn.close()


def test_command_line_writes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    args = ["--url", url, "--end-date", "2025-10-25", "--days", "2", "--rows-per-day", "10", "--seed", "3"]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    expected = generate(end_date=END, days=2, rows_per_day=10, seed=3).counts()
    for table, count in expected.items():
        assert f"{table}={count}" in out[0]
    assert re.search(r"in \d+\.\d+s$", out[0])

    assert main(args) == 2
    assert "--replace" in capsys.readouterr().err
    assert main([*args, "--replace", "--users", "7"]) == 0


def test_postgres_load_still_enforces_primary_keys(postgres_url: str) -> None:
    data = write_demo_source(postgres_url, end_date=END, days=1, rows_per_day=10, seed=1)
    feedback = data.recommendation_feedback
    twice = DemoData(
        users=data.users.clear(),
        analyses=data.analyses.clear(),
        recommendation_records=data.recommendation_records.clear(),
        recommendation_feedback=feedback.head(1),
        erasure_requests=data.erasure_requests.clear(),
    )
    with pytest.raises(psycopg2.errors.UniqueViolation):
        load(postgres_url, twice)
    conn = psycopg2.connect(postgres_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM recommendation_feedback")
            assert cur.fetchone() == (feedback.height,)
            cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'recommendation_feedback' ORDER BY 1")
            assert cur.fetchall() == [("recommendation_feedback_created_at_idx",), ("recommendation_feedback_pkey",)]
    finally:
        conn.close()
