"""The rules of docs/contract.md, sections 4 and 5, on literal frames."""

from __future__ import annotations

import datetime as dt
import hashlib

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feedback_assets import csv_cells, schemas
from feedback_assets import source_join as j
from feedback_assets import transforms as t
from feedback_assets.pseudonyms import (
    PseudonymCache,
    hkdf_expand,
    pseudonym,
    pseudonymize_user_ids,
    scoped_pseudonyms,
)
from feedback_assets.settings import PseudonymScope, TimestampPrecision
from feedback_assets_tests.frames import KEY, analyses, feedback, own, owned_by, records, source, users, utc

# Computed outside Python: echo -n 42 | openssl dgst -sha256 -mac HMAC -macopt hexkey:0123456789abcdef...(x4)
HMAC_OF_42 = "b9ee33abc5595a2f6b06faf3185be1c85a28b7248e5b7576726a59a4a2e4260f"


def outcomes(frames: j.SourceFrames, min_fields: int = 1) -> pl.DataFrame:
    return t.classify(j.join_source(frames), min_fields).select("feedback_id", "outcome")


def expected_outcomes(pairs: list[tuple[int, str]]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema={"feedback_id": pl.Int64, "outcome": pl.String}, orient="row")


def test_hmac_pseudonym_matches_a_value_computed_by_openssl() -> None:
    assert pseudonym(42, KEY) == HMAC_OF_42
    assert pseudonym(42, KEY) != hashlib.sha256(b"42").hexdigest()


def test_pseudonyms_are_computed_once_per_distinct_user() -> None:
    mapping = pseudonymize_user_ids(pl.Series([42, 7, 42, None], dtype=pl.Int64), KEY)
    assert_frame_equal(
        mapping,
        pl.DataFrame({"user_id": [7, 42], "analysis_hash": [pseudonym(7, KEY), HMAC_OF_42]}),
    )


def test_a_runs_pseudonym_cache_computes_each_user_once_across_slices() -> None:
    cache = PseudonymCache(KEY)
    first = cache.of(pl.Series([42, 7, None], dtype=pl.Int64))
    second = cache.of(pl.Series([7, 9], dtype=pl.Int64))
    expected = pseudonymize_user_ids(pl.Series([7, 9, 42], dtype=pl.Int64), KEY)
    assert_frame_equal(first.sort("user_id"), expected.filter(pl.col("user_id") != 9))
    assert_frame_equal(second.sort("user_id"), expected)
    assert cache.known.height == 3


# RFC 5869, appendix A, test case 1 (its PRK is what HKDF-Extract makes of the case's salt and IKM).
RFC_5869_PRK = "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
RFC_5869_OKM = "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
# User 42's pseudonym in the month 2025-11, computed with OpenSSL 3.0:
#   openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt mode:EXPAND_ONLY -kdfopt hexkey:<KEY>
#     -kdfopt "info:feedback_assets pseudonym period v1 2025-11" HKDF            (the period key)
#   printf '%s' <HMAC_OF_42> | openssl dgst -sha256 -mac HMAC -macopt hexkey:<period key>
HMAC_OF_42_IN_2025_11 = "95a0923900b01d1792dfd6f7cbd8637d717ff7c22e13c6424fd8190f951b5e3d"


def test_period_keys_follow_rfc_5869() -> None:
    assert hkdf_expand(bytes.fromhex(RFC_5869_PRK), bytes(range(0xF0, 0xFA)), 42).hex() == RFC_5869_OKM


def stable_rows(days: list[str], user_ids: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "partition": [dt.date.fromisoformat(day) for day in days],
            "analysis_hash": [pseudonym(uid, KEY) for uid in user_ids],
        }
    )


def test_a_scoped_pseudonym_matches_a_value_computed_by_openssl() -> None:
    scoped = scoped_pseudonyms(stable_rows(["2025-11-03"], [42]), "month", KEY)
    assert scoped.to_list() == [HMAC_OF_42_IN_2025_11]


@pytest.mark.parametrize(
    ("scope", "same_period", "other_period"),
    [
        ("year", "2025-12-31", "2026-01-01"),
        ("month", "2025-11-30", "2025-12-01"),
        ("day", "2025-11-01", "2025-11-02"),
    ],
)
def test_a_user_keeps_one_pseudonym_within_a_period_and_another_in_the_next(
    scope: PseudonymScope, same_period: str, other_period: str
) -> None:
    days = ["2025-11-01", same_period, other_period, other_period]
    scoped = scoped_pseudonyms(stable_rows(days, [42, 42, 42, 7]), scope, KEY).to_list()
    assert scoped[0] == scoped[1], "one period, one pseudonym"
    assert scoped[2] != scoped[1], "the next period links to nothing before it"
    assert scoped[3] != scoped[2], "two users, two pseudonyms"
    assert not set(scoped) & {pseudonym(42, KEY), pseudonym(7, KEY)}, "the stable pseudonym never leaves"
    assert scoped_pseudonyms(stable_rows(days, [42, 42, 42, 7]), "stable", KEY).to_list() == [
        pseudonym(uid, KEY) for uid in [42, 42, 42, 7]
    ]


def test_orphans_are_rejected_whatever_is_missing() -> None:
    frames = source(
        feedback(
            {"feedback_id": 1},
            {"feedback_id": 2, "user_id": 99},
            {"feedback_id": 3, "analysis_id": 99},
            {"feedback_id": 4, "recommendation_id": "missing"},
        )
    )
    expected = expected_outcomes([(1, "eligible"), (2, "orphan"), (3, "orphan"), (4, "orphan")])
    assert_frame_equal(outcomes(frames), expected)


def test_consent_and_erasure_exclude_before_ratings_are_checked() -> None:
    frames = source(
        feedback(
            {"feedback_id": 1, **own(2), "helpful_rating": 9},
            {"feedback_id": 2, **own(3)},
            {"feedback_id": 3, **own(1)},
        ),
        user_rows=users({"user_id": 1}, {"user_id": 2, "ml_training_consent": False}, {"user_id": 3}),
        **owned_by(1, 2, 3),
        erased=[3],
    )
    assert_frame_equal(outcomes(frames), expected_outcomes([(1, "no_consent"), (2, "erased"), (3, "eligible")]))


@pytest.mark.parametrize(
    ("column", "value", "outcome"),
    [
        ("helpful_rating", 0, "out_of_range"),
        ("helpful_rating", 1, "eligible"),
        ("helpful_rating", 5, "eligible"),
        ("helpful_rating", 6, "out_of_range"),
        ("product_satisfaction", -1, "out_of_range"),
        ("product_satisfaction", 6, "out_of_range"),
        ("routine_completion_pct", -1, "out_of_range"),
        ("routine_completion_pct", 0, "eligible"),
        ("routine_completion_pct", 100, "eligible"),
        ("routine_completion_pct", 101, "out_of_range"),
    ],
)
def test_ratings_out_of_range_are_rejected_never_clipped(column: str, value: int, outcome: str) -> None:
    assert_frame_equal(outcomes(source(feedback({"feedback_id": 1, column: value}))), expected_outcomes([(1, outcome)]))


def test_malformed_rows_are_rejected_first() -> None:
    frames = source(feedback({"feedback_id": 1, "malformed": True, "user_id": 99}))
    assert_frame_equal(outcomes(frames), expected_outcomes([(1, "malformed")]))


@pytest.mark.parametrize(("min_fields", "expected"), [(0, "eligible"), (1, "eligible"), (2, "too_few_fields")])
def test_min_feedback_fields_counts_present_rating_fields(min_fields: int, expected: str) -> None:
    one_field = {"helpful_rating": None, "product_satisfaction": None, "routine_completion_pct": 30}
    frames = source(
        feedback(
            {"feedback_id": 1, **one_field, "would_recommend": None},
            {
                "feedback_id": 2,
                **one_field,
                "routine_completion_pct": None,
                "would_recommend": None,
            },
        )
    )
    none_expected = "eligible" if min_fields == 0 else "too_few_fields"
    assert_frame_equal(outcomes(frames, min_fields), expected_outcomes([(1, expected), (2, none_expected)]))


def test_age_buckets_at_every_boundary() -> None:
    ages = [-1, 0, 17, 18, 24, 25, 34, 35, 49, 50, 120, 121, 300, None]
    buckets = ["", "<18", "<18", "18-25", "18-25", "25-35", "25-35", "35-50", "35-50", "50+", "50+", "", "", ""]
    frame = pl.DataFrame({"age": ages}, schema={"age": pl.Int64})
    result = frame.select(t.age_range(pl.col("age")).fill_null("").alias("age"))
    assert_frame_equal(result, pl.DataFrame({"age": buckets}))


def test_conditions_are_lowercased_trimmed_deduplicated_and_sorted() -> None:
    frame = pl.DataFrame({"c": [" Acne, oily,acne ", None, "", " , ", "Rosacea,ACNE", "Éczema, é"]})
    result = frame.select(t.normalize_conditions(pl.col("c")).alias("c"))
    assert_frame_equal(result, pl.DataFrame({"c": ["acne,oily", "", "", "", "acne,rosacea", "é,éczema"]}))


def test_formula_like_text_gets_a_leading_quote() -> None:
    frame = pl.DataFrame({"x": ["=cmd()", "+1", "-2", "@sum", "\tx", "\rx", "a=b", "", None, "'=kept"]})
    result = frame.select(csv_cells.escape_formula(pl.col("x")).alias("x"))
    expected = ["'=cmd()", "'+1", "'-2", "'@sum", "'\tx", "'\rx", "a=b", "", None, "'=kept"]
    assert_frame_equal(result, pl.DataFrame({"x": expected}))


def test_anonymized_rows_hold_no_identifier() -> None:
    frames = source(
        feedback({"feedback_id": 1}),
        user_rows=users({"user_id": 1, "age": 41, "image_sharing_consent": True}),
        analysis_rows=analyses({"analysis_id": 10, "image_url": "https://img.invalid/a.jpg"}),
    )
    classified = t.classify(j.join_source(frames), 1)
    for include in (False, True):
        pairs = t.anonymize(classified, KEY, include_image_urls=include)
        assert "user_id" not in pairs.columns and "age" not in pairs.columns
        assert pairs["analysis_hash"].to_list() == [pseudonym(1, KEY)]
        assert pairs["age_range"].to_list() == ["35-50"]
        assert pairs["image_url"].to_list() == (["https://img.invalid/a.jpg"] if include else [None])


def test_image_urls_need_the_users_consent() -> None:
    frames = source(
        feedback({"feedback_id": 1}),
        user_rows=users({"user_id": 1, "image_sharing_consent": False}),
        analysis_rows=analyses({"analysis_id": 10, "image_url": "https://img.invalid/a.jpg"}),
    )
    pairs = t.anonymize(t.classify(j.join_source(frames), 1), KEY, include_image_urls=True)
    assert pairs["image_url"].to_list() == [None]


def pipeline(frames: j.SourceFrames, scope: t.DedupeScope) -> pl.DataFrame:
    raw = j.join_source(frames)
    if scope == "first_per_pair":
        raw = j.add_history(raw)
    return t.deduplicate(t.with_dedupe_key(t.anonymize(t.classify(raw, 1), KEY, False), scope))


def kept(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("feedback_id", "kept").sort("feedback_id")


def kept_expected(pairs: list[tuple[int, bool]]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema={"feedback_id": pl.Int64, "kept": pl.Boolean}, orient="row")


def test_exact_scope_keeps_the_smallest_id_of_a_repeated_submission() -> None:
    same = utc("2025-10-25 08:00:00")
    frames = source(
        feedback(
            {"feedback_id": 7, "created_at": same},
            {"feedback_id": 5, "created_at": same},
            {"feedback_id": 9, "created_at": utc("2025-10-25 09:00:00")},
        )
    )
    assert_frame_equal(kept(pipeline(frames, "exact")), kept_expected([(5, True), (7, False), (9, True)]))


def test_dedupe_applies_after_eligibility() -> None:
    same = utc("2025-10-25 08:00:00")
    frames = source(
        feedback({"feedback_id": 5, "created_at": same, "helpful_rating": 9}, {"feedback_id": 7, "created_at": same})
    )
    assert_frame_equal(kept(pipeline(frames, "exact")), kept_expected([(7, True)]))


def test_first_per_pair_gives_the_key_to_the_earliest_row_even_from_history() -> None:
    frames = source(
        feedback(
            {"feedback_id": 3, "created_at": utc("2025-10-24 08:00:00"), "is_history": True},
            {"feedback_id": 4, "created_at": utc("2025-10-25 08:00:00")},
            {"feedback_id": 8, "created_at": utc("2025-10-25 08:00:00"), "recommendation_id": "rec_2"},
            {"feedback_id": 6, "created_at": utc("2025-10-25 08:00:00"), "recommendation_id": "rec_2"},
        ),
        record_rows=records({"recommendation_id": "rec_1"}, {"recommendation_id": "rec_2"}),
    )
    assert_frame_equal(kept(pipeline(frames, "first_per_pair")), kept_expected([(4, False), (6, True), (8, False)]))


def test_first_per_pair_ignores_ineligible_history() -> None:
    frames = source(
        feedback(
            {"feedback_id": 3, "created_at": utc("2025-10-24 08:00:00"), "is_history": True, "helpful_rating": 0},
            {"feedback_id": 4, "created_at": utc("2025-10-25 08:00:00")},
        )
    )
    assert_frame_equal(kept(pipeline(frames, "first_per_pair")), kept_expected([(4, True)]))


def test_with_history_gives_each_day_the_earlier_days_of_a_range() -> None:
    frames = source(
        feedback(
            {"feedback_id": 1, "created_at": utc("2025-10-24 08:00:00")},
            {"feedback_id": 2, "created_at": utc("2025-10-25 08:00:00")},
            {"feedback_id": 3, "created_at": utc("2025-10-26 08:00:00")},
        )
    )
    result = j.add_history(j.join_source(frames)).select("partition", "feedback_id", "is_history")
    d = dt.date.fromisoformat
    expected = pl.DataFrame(
        [
            (d("2025-10-24"), 1, False),
            (d("2025-10-25"), 2, False),
            (d("2025-10-25"), 1, True),
            (d("2025-10-26"), 3, False),
            (d("2025-10-26"), 1, True),
            (d("2025-10-26"), 2, True),
        ],
        schema={"partition": pl.Date, "feedback_id": pl.Int64, "is_history": pl.Boolean},
        orient="row",
    )
    assert_frame_equal(result, expected)
    pairs = t.anonymize(t.classify(j.add_history(j.join_source(frames)), 1), KEY, False)
    deduplicated = t.deduplicate(t.with_dedupe_key(pairs, "first_per_pair"))
    assert_frame_equal(kept(deduplicated), kept_expected([(1, True), (2, False), (3, False)]))


def test_keys_owned_by_an_earlier_day_in_the_state_are_not_exported_again() -> None:
    frames = source(feedback({"feedback_id": 4}, {"feedback_id": 5, "created_at": utc("2025-10-25 13:00:00")}))
    pairs = t.anonymize(t.classify(j.join_source(frames), 1), KEY, False)
    key_of_4, key_of_5 = pairs.select(t.dedupe_key("exact")).to_series().to_list()
    owners = pl.DataFrame({"dedupe_key": [key_of_4, key_of_5], "owner": [dt.date(2025, 10, 24), dt.date(2025, 10, 26)]})
    assert_frame_equal(
        kept(t.deduplicate(t.with_dedupe_key(pairs, "exact"), owners)), kept_expected([(4, False), (5, True)])
    )


def test_training_rows_have_the_contract_columns_formats_and_order() -> None:
    frames = source(
        feedback(
            {"feedback_id": 2, "created_at": utc("2025-10-25 09:00:00"), "recommendation_id": "=rec"},
            {"feedback_id": 1, "created_at": utc("2025-10-25 09:00:00"), "helpful_rating": None},
            {"feedback_id": 3, "created_at": utc("2025-10-25 00:00:00"), "would_recommend": False},
        ),
        analysis_rows=analyses({"analysis_id": 10, "conditions": None}),
        record_rows=records({"recommendation_id": "rec_1", "rules_applied": " a, b "}, {"recommendation_id": "=rec"}),
    )
    rows = csv_cells.training_rows(pipeline(frames, "exact"), csv_cells.CsvFormat(timestamp_precision="microsecond"))
    hashed = pseudonym(1, KEY)
    expected = pl.DataFrame(
        {
            "analysis_hash": [hashed] * 3,
            "recommendation_id": ["rec_1", "'=rec", "rec_1"],
            "helpful_rating": [4, 4, None],
            "product_satisfaction": [5, 5, 5],
            "routine_completion_pct": [80, 80, 80],
            "would_recommend": [False, True, True],
            "conditions": ["", "", ""],
            "rules_applied": ["a, b", "spf_daily", "a, b"],
            "timeframe": ["4w", "4w", "4w"],
            "age_range": ["25-35"] * 3,
            "feedback_created_at": [
                "2025-10-25T00:00:00.000000Z",
                "2025-10-25T09:00:00.000000Z",
                "2025-10-25T09:00:00.000000Z",
            ],
            "analysis_created_at": ["2025-10-24T09:30:00.000000Z"] * 3,
        }
    )
    assert_frame_equal(rows, expected)
    assert tuple(rows.columns) == schemas.TRAINING_COLUMNS

    # At the default precision, day, the times are alike and the cells alone order the rows: the
    # escaped "'=rec" first, then the two rec_1 rows by their next differing cell, helpful_rating
    # (empty first). Ordering by the hidden time would put the 00:00 row (helpful_rating 4) first.
    by_day = csv_cells.training_rows(pipeline(frames, "exact"), csv_cells.CsvFormat())
    assert_frame_equal(
        by_day,
        expected[[1, 2, 0]].with_columns(
            feedback_created_at=pl.lit("2025-10-25T00:00:00.000000Z"),
            analysis_created_at=pl.lit("2025-10-24T00:00:00.000000Z"),
        ),
    )


@pytest.mark.parametrize(
    ("precision", "feedback_time", "analysis_time"),
    [
        ("microsecond", "2025-10-25T13:47:09.123456Z", "2025-10-01T23:59:59.999999Z"),
        ("second", "2025-10-25T13:47:09.000000Z", "2025-10-01T23:59:59.000000Z"),
        ("minute", "2025-10-25T13:47:00.000000Z", "2025-10-01T23:59:00.000000Z"),
        ("hour", "2025-10-25T13:00:00.000000Z", "2025-10-01T23:00:00.000000Z"),
        ("day", "2025-10-25T00:00:00.000000Z", "2025-10-01T00:00:00.000000Z"),
    ],
)
def test_both_exported_times_are_truncated_to_the_precision(
    precision: TimestampPrecision, feedback_time: str, analysis_time: str
) -> None:
    frames = source(
        feedback({"feedback_id": 1, "created_at": utc("2025-10-25 13:47:09.123456")}),
        analysis_rows=analyses({"analysis_id": 10, "analysis_created_at": utc("2025-10-01 23:59:59.999999")}),
    )
    rows = csv_cells.training_rows(pipeline(frames, "exact"), csv_cells.CsvFormat(timestamp_precision=precision))
    assert rows.select("feedback_created_at", "analysis_created_at").row(0) == (feedback_time, analysis_time)


def test_every_row_is_counted_once() -> None:
    same = utc("2025-10-25 08:00:00")
    frames = source(
        feedback(
            {"feedback_id": 1, "created_at": same},
            {"feedback_id": 2, "created_at": same},
            {"feedback_id": 3, "user_id": 9},
            {"feedback_id": 4, "helpful_rating": 0},
            {"feedback_id": 5, **own(2)},
            {
                "feedback_id": 6,
                "helpful_rating": None,
                "product_satisfaction": None,
                "routine_completion_pct": None,
                "would_recommend": None,
            },
        ),
        user_rows=users({"user_id": 1}, {"user_id": 2, "ml_training_consent": False}),
        **owned_by(1, 2),
    )
    classified = t.classify(j.join_source(frames), 1)
    deduplicated = t.deduplicate(t.with_dedupe_key(t.anonymize(classified, KEY, False), "exact"))
    counts = {
        **t.outcome_counts(classified, ["2025-10-25"])["2025-10-25"],
        **t.dedupe_counts(deduplicated, ["2025-10-25"])["2025-10-25"],
    }
    assert counts == {
        "total_feedback_records": 6,
        "anonymized_records": 2,
        "exported_records": 1,
        "deduplicated_records": 1,
        "skipped_records": 1,
        "rejected_records": 2,
        "rejected_malformed": 0,
        "rejected_orphan": 1,
        "rejected_ambiguous": 0,
        "rejected_mismatched": 0,
        "rejected_out_of_range": 1,
        "excluded_records": 1,
        "excluded_no_consent": 1,
        "excluded_erased": 0,
    }
    assert t.unaccounted_rows(counts) == 0


def test_refusing_and_erased_users_are_blanked_before_storage_but_still_counted() -> None:
    frames = source(
        feedback({"feedback_id": 1, **own(1)}, {"feedback_id": 2, **own(2)}, {"feedback_id": 3, **own(3)}),
        user_rows=users({"user_id": 1}, {"user_id": 2, "ml_training_consent": False, "age": 61}, {"user_id": 3}),
        **owned_by(1, 2, 3, conditions="acne", image_url="https://img.invalid/x.jpg"),
        erased=[3],
    )
    raw = j.redact_excluded(j.join_source(frames))
    assert_frame_equal(
        raw.select("feedback_id", "user_id", "age", "conditions", "image_url"),
        pl.DataFrame(
            {
                "feedback_id": [1, 2, 3],
                "user_id": [1, None, None],
                "age": [30, None, None],
                "conditions": ["acne", None, None],
                "image_url": ["https://img.invalid/x.jpg", None, None],
            },
            schema={
                "feedback_id": pl.Int64,
                "user_id": pl.Int64,
                "age": pl.Int64,
                "conditions": pl.String,
                "image_url": pl.String,
            },
        ),
    )
    assert_frame_equal(
        t.classify(raw, 1).select("feedback_id", "outcome"),
        expected_outcomes([(1, "eligible"), (2, "no_consent"), (3, "erased")]),
    )
