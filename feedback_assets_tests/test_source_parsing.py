"""Typing what the readers read (`feedback_assets.source.parsing`), on literal frames."""

from __future__ import annotations

import datetime as dt

import polars as pl
from polars.testing import assert_frame_equal, assert_series_equal

from feedback_assets.source import parsing

D25, D26 = dt.date(2025, 10, 25), dt.date(2025, 10, 26)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_booleans_are_read_from_their_texts_and_anything_else_is_null() -> None:
    text = pl.Series("v", [" T ", "false", "1", "0", "TRUE", "yes", "2", None])
    parsed = pl.select(parsing.parse_bool(pl.lit(text))).to_series()
    assert parsed.to_list() == [True, False, True, False, True, None, None, None]


def test_timestamps_are_read_as_utc_and_a_text_that_does_not_parse_is_null() -> None:
    text = pl.Series("v", ["2025-10-25 08:00:00", " 2025-10-25 08:00:00.123456 ", "2025-10-25", "soon", None])
    parsed = pl.select(parsing.parse_timestamp(pl.lit(text))).to_series()
    assert parsed.to_list() == [utc("2025-10-25 08:00:00"), utc("2025-10-25 08:00:00.123456"), None, None, None]


def test_the_day_read_for_is_the_day_whose_window_held_the_text() -> None:
    stored = pl.Series(["2025-10-25 00:00:00", "2025-10-25", "2025-10-25 24:00:00", "2025-10-26 23:59:60", ""])
    # A date alone sorts before the day's midnight, and so does an empty text: the first day.
    assert parsing.day_read_for(stored, [D25, D26]).to_list() == [D25, D25, D25, D26, D25]


def feedback_text(*rows: tuple[str | None, ...]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=dict.fromkeys(parsing.FEEDBACK_READ_SCHEMA.names(), pl.String), orient="row")


def test_feedback_rows_are_typed_and_the_ones_that_do_not_parse_are_malformed() -> None:
    typed = parsing.type_feedback(
        feedback_text(
            ("1", "7", "10", "rec_a", "4", "5", "80", "t", "2025-10-25 08:00:00", "0"),
            ("2", "7", "10", "rec_a", "four", None, None, None, "2025-10-25 09:00:00", "0"),
            # A leap second parses to the next day: not the day it was read for.
            ("3", "7", "10", "rec_a", "4", None, None, None, "2025-10-25 23:59:60", "0"),
            ("4", None, "10", "rec_a", "4", None, None, None, "2025-10-25 10:00:00", "0"),
            ("5", "7", "10", "rec_a", "4", None, None, None, "2025-10-25", "0"),
            # An earlier row of the pair keeps its own day.
            ("6", "7", "10", "rec_a", "3", None, None, None, "2025-10-20 10:00:00", "1"),
        ),
        [D25],
    )
    assert typed.schema == pl.Schema(
        {**parsing.FEEDBACK_READ_SCHEMA, "malformed": pl.Boolean(), "partition": pl.Date()}
    )
    assert typed["malformed"].to_list() == [False, True, True, True, True, False]
    assert typed["partition"].to_list() == [D25, D25, D25, D25, D25, dt.date(2025, 10, 20)]
    assert typed["is_history"].to_list() == [False] * 5 + [True]
    assert typed.row(0) == (1, 7, 10, "rec_a", 4, 5, 80, True, utc("2025-10-25 08:00:00"), False, False, D25)


def test_columns_the_database_typed_itself_are_converted() -> None:
    read = pl.DataFrame(
        {
            "user_id": pl.Series([1, 2], dtype=pl.Int32),
            "age": ["30", " 41 "],
            "ml_training_consent": ["1", "0"],
            "image_sharing_consent": [None, "f"],
        }
    )
    assert_frame_equal(
        parsing.typed(read, parsing.DIMENSIONS["users"][0]),
        pl.DataFrame(
            {
                "user_id": [1, 2],
                "age": [30, 41],
                "ml_training_consent": [True, False],
                "image_sharing_consent": [None, False],
            },
            schema=parsing.DIMENSIONS["users"][0],
        ),
    )
    # A time without zone is taken as UTC, one in another zone converted; one no text read could give
    # (PostgreSQL's infinities, a year BC) is null.
    before_year_one = parsing.READABLE_MICROSECONDS[0] - 1
    naive = pl.Series([utc("2025-10-25 08:00:00").replace(tzinfo=None)]).dt.cast_time_unit("us").cast(pl.Int64)
    times = pl.DataFrame(
        {
            "naive": pl.concat([naive, pl.Series([before_year_one])]).cast(pl.Datetime("us")),
            "zoned": pl.Series([dt.datetime(2025, 10, 25, 10), dt.datetime(2025, 10, 25, 11)]).dt.replace_time_zone(
                "Europe/Paris"
            ),
        }
    )
    schema = pl.Schema({"naive": pl.Datetime("us", "UTC"), "zoned": pl.Datetime("us", "UTC")})
    typed = parsing.typed(times, schema)
    assert typed.schema == schema
    assert typed["naive"].to_list() == [utc("2025-10-25 08:00:00"), None]
    assert typed["zoned"].to_list() == [utc("2025-10-25 08:00:00"), utc("2025-10-25 09:00:00")]


def test_a_driver_rows_become_text_columns_and_take_their_schemas_names() -> None:
    text = parsing.text_frame([("1", "30", "1", None)], 4)
    assert text.schema == pl.Schema(dict.fromkeys(["c0", "c1", "c2", "c3"], pl.String()))
    users = parsing.typed_dimension("users", text)
    assert users.row(0) == (1, 30, True, None)


def test_repeated_ids_erasure_ids_and_consents() -> None:
    assert parsing.typed_repeated_ids(None).height == 0
    repeated = parsing.typed_repeated_ids(parsing.text_frame([("5",), ("x",), (None,)], 1))
    assert repeated["feedback_id"].to_list() == [5]
    assert_series_equal(
        parsing.erasure_ids(parsing.text_frame([(" 7 ",), ("no id",)], 1)), pl.Series("user_id", [7, None])
    )
    consent = parsing.consent_frame([("1", "1", "0"), ("2", "maybe", None)])
    assert consent.columns == ["user_id", "ml_training_consent", "image_sharing_consent"]
    assert consent.rows() == [(1, True, False), (2, None, None)]
