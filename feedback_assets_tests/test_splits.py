"""The user-disjoint split (issue 25): FEEDBACK_SPLIT's checks, and a user in one split whatever the
rows' order, days and pseudonym scope."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import random
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_series_equal

from feedback_assets.errors import ConfigError
from feedback_assets.pseudonyms import hkdf_expand, period_key, pseudonym, scoped_pseudonyms
from feedback_assets.settings import PSEUDONYM_SCOPES
from feedback_assets.splits import (
    DEFAULT_SPLIT,
    SPLIT_DTYPE,
    SPLIT_NAMES,
    Split,
    SplitDraws,
    assign_splits,
    parse_split,
    split_counts,
    split_key,
    user_draws,
)
from feedback_assets_tests.frames import KEY

OTHER_KEY = bytes.fromhex("fedcba9876543210" * 4)


def stable(*user_ids: int, key: bytes = KEY) -> pl.Series:
    return pl.Series([pseudonym(uid, key) for uid in user_ids], dtype=pl.String)


def test_the_default_split_is_eighty_ten_ten() -> None:
    assert parse_split("FEEDBACK_SPLIT", DEFAULT_SPLIT) == Split(0.8, 0.1, 0.1)


def test_the_splits_may_come_in_any_order_with_spaces_and_read_back_from_their_text() -> None:
    split = parse_split("FEEDBACK_SPLIT", " test = 0.2 , train=0.7,validation=0.1 ")
    assert split == Split(train=0.7, validation=0.1, test=0.2)
    assert parse_split("FEEDBACK_SPLIT", str(split)) == split
    assert str(parse_split("FEEDBACK_SPLIT", DEFAULT_SPLIT)) == DEFAULT_SPLIT


def test_ratios_within_a_billionth_of_one_are_accepted() -> None:
    assert parse_split("FEEDBACK_SPLIT", "train=0.8000000005,validation=0.1,test=0.1").train == 0.8000000005


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "FEEDBACK_SPLIT must be name=ratio pairs, not ''"),
        ("train=0.8,validation=0.1,test", "FEEDBACK_SPLIT must be name=ratio pairs, not 'test'"),
        ("train=0.8,dev=0.1,test=0.1", "FEEDBACK_SPLIT names 'dev', which is not a split"),
        ("Train=0.8,validation=0.1,test=0.1", "FEEDBACK_SPLIT names 'Train', which is not a split"),
        ("train=0.8,train=0.1,test=0.1", "FEEDBACK_SPLIT names train twice"),
        ("train=0.9,test=0.1", "FEEDBACK_SPLIT gives no ratio for validation"),
        ("train=0.8,validation=a tenth,test=0.1", "the ratio of validation must be a number, not 'a tenth'"),
        ("train=1,validation=0,test=0", "the ratio of validation must be more than 0"),
        ("train=1.2,validation=-0.1,test=-0.1", "the ratio of validation must be more than 0"),
        ("train=nan,validation=0.1,test=0.1", "the ratio of train must be more than 0"),
        ("train=0.8,validation=0.1,test=0.2", "FEEDBACK_SPLIT: the ratios add up to 1.1, not 1"),
        ("train=0.8,validation=0.1,test=0.1000001", "the ratios add up to"),
    ],
)
def test_a_wrong_split_is_refused_saying_what_to_give(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        parse_split("FEEDBACK_SPLIT", text)
    assert "give each of train, validation, test once as name=ratio" in str(raised.value)


def test_a_user_is_in_the_same_split_in_every_row_and_in_any_order() -> None:
    users = [uid % 50 for uid in range(1, 400)]
    pseudonyms = stable(*users)
    splits = assign_splits(pseudonyms, Split(0.5, 0.25, 0.25), KEY)
    assert splits.dtype == SPLIT_DTYPE and splits.name == "split" and splits.len() == len(users)
    per_user = pl.DataFrame({"user": users, "split": splits}).group_by("user").agg(pl.col("split").n_unique())
    assert per_user["split"].max() == 1
    reversed_splits = assign_splits(pseudonyms.reverse(), Split(0.5, 0.25, 0.25), KEY)
    assert reversed_splits.reverse().to_list() == splits.to_list()
    assert set(splits.cast(pl.String).to_list()) == set(SPLIT_NAMES)


def test_the_draw_has_a_key_of_its_own_so_it_is_no_pseudonym_of_any_scope() -> None:
    pseudonyms = stable(*range(200))
    period_keys = [period_key(KEY, label) for label in ("2025", "2025-11", "2025-11-01")]
    assert split_key(KEY) not in (KEY, split_key(OTHER_KEY), *period_keys)
    assert split_key(KEY) == hkdf_expand(KEY, b"feedback_assets split v1")
    draws = user_draws(pseudonyms, KEY)
    assert draws.height == 200 and draws["draw"].n_unique() == 200
    assert draws["draw"].min() >= 0 and draws["draw"].max() < 1  # type: ignore[operator]
    other = user_draws(pseudonyms, OTHER_KEY)
    assert draws.join(other, on="stable_pseudonym").filter(pl.col("draw") == pl.col("draw_right")).is_empty()


def test_draws_kept_over_a_runs_days_give_the_same_splits_computing_each_user_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Days written on threads share the run's draws: every day's splits are those drawn afresh."""
    days = [stable(*(uid % 300 for uid in range(day * 37, day * 37 + 120))) for day in range(20)]
    split = Split(0.5, 0.25, 0.25)
    afresh = [assign_splits(day, split, KEY) for day in days]
    hmacs: list[str] = []
    real = hmac.digest

    def counted(key: bytes, message: bytes, digest: str) -> bytes:
        hmacs.append(message.decode())
        return real(key, message, digest)

    monkeypatch.setattr(hmac, "digest", counted)
    known = SplitDraws(KEY)
    with ThreadPoolExecutor(max_workers=4) as pool:
        kept = list(pool.map(lambda day: assign_splits(day, split, KEY, known), days))
    for fresh, shared in zip(afresh, kept, strict=True):
        assert_series_equal(shared, fresh)
    assert sorted(hmacs) == sorted(set(pl.concat(days).to_list())) and len(hmacs) == 300


def test_a_day_without_rows_has_no_splits() -> None:
    splits = assign_splits(pl.Series([], dtype=pl.String), Split(0.8, 0.1, 0.1), KEY)
    assert splits.len() == 0 and splits.dtype == SPLIT_DTYPE


def test_a_row_without_a_stable_pseudonym_has_no_split() -> None:
    with pytest.raises(ValueError, match="without a stable pseudonym"):
        assign_splits(pl.Series(["a", None], dtype=pl.String), Split(0.8, 0.1, 0.1), KEY)


@pytest.mark.parametrize("split", [Split(0.8, 0.1, 0.1), Split(0.5, 0.3, 0.2), Split(0.98, 0.01, 0.01)])
def test_the_shares_of_100k_users_follow_the_ratios(split: Split) -> None:
    splits = assign_splits(stable(*range(100_000)), split, KEY)
    counts = split_counts(splits)
    assert sum(counts.values()) == 100_000
    for name, ratio in split.ratios.items():
        # The standard deviation of a share of 100k draws is at most 0.0016: five of them.
        assert abs(counts[name] / 100_000 - ratio) < 0.008, (name, counts)


def test_split_counts_name_every_split() -> None:
    assert split_counts(pl.Series(["test", "test"], dtype=SPLIT_DTYPE)) == {"train": 0, "validation": 0, "test": 2}


FIRST_DAY = dt.date(2025, 12, 20)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(1, 40), st.integers(0, 45)), min_size=1, max_size=120),
    order=st.randoms(use_true_random=False),
    split=st.sampled_from([Split(0.8, 0.1, 0.1), Split(0.34, 0.33, 0.33)]),
)
def test_no_user_is_in_two_splits_across_shuffled_days_and_every_pseudonym_scope(
    rows: list[tuple[int, int]], order: random.Random, split: Split
) -> None:
    """Backfills in any order, a day at a time or all at once, in every scope: each user in one split."""
    frame = pl.DataFrame(
        {
            "user": [uid for uid, _ in rows],
            "partition": [FIRST_DAY + dt.timedelta(days=offset) for _, offset in rows],
        }
    ).with_columns(analysis_hash=pl.col("user").map_elements(lambda uid: pseudonym(uid, KEY), pl.String))
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=order.randrange(2**32))
    exported = []
    for scope in PSEUDONYM_SCOPES:
        for (_day,), day_rows in shuffled.partition_by("partition", as_dict=True).items():
            exported.append(
                day_rows.select(
                    "user",
                    scoped_pseudonyms(day_rows, scope, KEY).alias("exported_pseudonym"),
                    assign_splits(day_rows["analysis_hash"], split, KEY),
                )
            )
    exported.append(
        shuffled.select(
            "user",
            pl.lit(None, pl.String).alias("exported_pseudonym"),
            assign_splits(shuffled["analysis_hash"], split, KEY),
        )
    )
    every_file = pl.concat(exported)
    assert every_file.group_by("user").agg(pl.col("split").n_unique())["split"].max() == 1
    by_exported = every_file.drop_nulls("exported_pseudonym").group_by("exported_pseudonym")
    assert by_exported.agg(pl.col("split").n_unique())["split"].max() == 1
    alone = {uid: assign_splits(stable(uid), split, KEY)[0] for uid in set(frame["user"].to_list())}
    assert all(alone[uid] == name for uid, name in every_file.select("user", "split").iter_rows())


def test_a_draw_is_the_first_53_bits_of_the_hmac_of_the_stable_pseudonym_under_the_split_key() -> None:
    """The rule docs/ml.md states, computed here with the standard library alone."""
    pseudonyms = stable(3, 1, 2)
    draws = dict(user_draws(pseudonyms, KEY).iter_rows())
    for text in pseudonyms.to_list():
        digest = hmac.new(hkdf_expand(KEY, b"feedback_assets split v1"), text.encode(), hashlib.sha256).digest()
        assert draws[text] == (int.from_bytes(digest[:8], "big") >> 11) / 2**53
