"""Rows that belong to someone else (mismatched) and ids held twice (ambiguous): docs/contract.md,
section 5, rule 1, on literal frames and on real SQLite and PostgreSQL sources without keys."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import polars as pl
import psycopg2
import pytest
from polars.testing import assert_frame_equal, assert_series_equal

from feedback_assets import source_join as j
from feedback_assets import transforms as t
from feedback_assets.dedupe_state import DedupeStateStore, days_to_rerun, repair_of
from feedback_assets.defs.audit import audit_history
from feedback_assets.defs.checks import no_key_owned_twice
from feedback_assets.resources import resources_for
from feedback_assets.schemas import REPEATED_IDS_SCHEMA
from feedback_assets.settings import parse_source_url
from feedback_assets.source import open_source
from feedback_assets.source.parsing import erasure_ids
from feedback_assets.storage import storage_for
from feedback_assets_tests.crafted_source import HEADER, h, write_crafted_source
from feedback_assets_tests.frames import analyses, feedback, own, owned_by, records, source, users, utc
from feedback_assets_tests.graph import latest_metadata, materialize, selection, settings_for
from feedback_assets_tests.paths import state_file
from feedback_assets_tests.sources import at, rating, write_keyless_source, write_source
from feedback_assets_tests.test_docs import REPO_ROOT, contract_section
from feedback_assets_tests.text_copy import text_erasure_requests, text_read_window

ORDERS = ["first", "second"]
Row = TypeVar("Row")


def outcomes(frames: j.SourceFrames) -> list[tuple[int, str]]:
    classified = t.classify(j.raw_rows(frames, with_history=False), 1)
    return sorted(classified.select("feedback_id", "outcome").iter_rows())


def in_order(rows: list[Row], order: str) -> list[Row]:
    return rows if order == "first" else rows[::-1]


def assert_blanked(raw: pl.DataFrame, feedback_ids: list[int]) -> None:
    """The rows keep no personal value, and no owner's id is stored at all."""
    rows = raw.filter(pl.col("feedback_id").is_in(feedback_ids))
    assert set(rows["feedback_id"].to_list()) == set(feedback_ids)
    assert rows.select(j.PERSONAL_COLUMNS).null_count().row(0) == (rows.height,) * len(j.PERSONAL_COLUMNS)
    assert not {"analysis_user_id", "record_analysis_id"} & set(raw.columns)


def test_feedback_on_another_users_analysis_is_mismatched_and_keeps_nothing_of_theirs() -> None:
    frames = source(
        feedback(
            {"feedback_id": 1, **own(1)},
            {"feedback_id": 2, "user_id": 1, "analysis_id": 20, "recommendation_id": "rec_2"},
        ),
        user_rows=users({"user_id": 1}, {"user_id": 2, "age": 61}),
        **owned_by(1, 2, conditions="rosacea", image_url="https://img.invalid/other.jpg"),
    )
    assert outcomes(frames) == [(1, "eligible"), (2, "mismatched")]
    raw = j.raw_rows(frames, with_history=False)
    assert_blanked(raw, [2])
    assert t.anonymize(t.classify(raw, 1), bytes(32), include_image_urls=True)["feedback_id"].to_list() == [1]


def test_feedback_citing_another_analyses_record_is_mismatched() -> None:
    frames = source(
        feedback({"feedback_id": 1, **own(1), "recommendation_id": "rec_2"}),
        user_rows=users({"user_id": 1}, {"user_id": 2}),
        **owned_by(1, 2),
    )
    assert outcomes(frames) == [(1, "mismatched")]
    assert_blanked(j.raw_rows(frames, with_history=False), [1])


def test_an_analysis_or_record_whose_owner_is_unreadable_is_mismatched() -> None:
    frames = source(
        feedback({"feedback_id": 1}, {"feedback_id": 2, "recommendation_id": "rec_2"}),
        analysis_rows=analyses({"analysis_id": 10, "analysis_user_id": None}),
        record_rows=records({"recommendation_id": "rec_1"}, {"recommendation_id": "rec_2", "record_analysis_id": None}),
    )
    assert outcomes(frames) == [(1, "mismatched"), (2, "mismatched")]


# Each kind of id held twice: which of `source`'s tables, and the id's two rows there, the second
# with a refusing user's or another person's values, so that taking either row would change the
# outcome or leak something.
TWICE: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "user": ("user_rows", [{"user_id": 1, "ml_training_consent": True}, {"user_id": 1, "ml_training_consent": False}]),
    "analysis": (
        "analysis_rows",
        [
            {"analysis_id": 10, "analysis_user_id": 1, "conditions": "acne"},
            {"analysis_id": 10, "analysis_user_id": 2, "conditions": "rosacea", "image_url": "https://img.invalid/x"},
        ],
    ),
    "record": (
        "record_rows",
        [
            {"recommendation_id": "rec_1", "record_analysis_id": 10},
            {"recommendation_id": "rec_1", "record_analysis_id": 20, "rules_applied": "other"},
        ],
    ),
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kind", list(TWICE))
def test_an_id_held_twice_makes_its_feedback_ambiguous_whatever_the_order(kind: str, order: str) -> None:
    # User 3's row refers to nothing held twice and is exported.
    rows: dict[str, list[dict[str, Any]]] = {
        "user_rows": [{"user_id": 1}, {"user_id": 3}],
        "analysis_rows": [{"analysis_id": 10, "analysis_user_id": 1}, {"analysis_id": 30, "analysis_user_id": 3}],
        "record_rows": [
            {"recommendation_id": "rec_1", "record_analysis_id": 10},
            {"recommendation_id": "rec_3", "record_analysis_id": 30},
        ],
    }
    table, twice = TWICE[kind]
    rows[table] = [*in_order(twice, order), *rows[table][1:]]
    frames = source(
        feedback({"feedback_id": 1, **own(1)}, {"feedback_id": 2, **own(3)}),
        user_rows=users(*rows["user_rows"]),
        analysis_rows=analyses(*rows["analysis_rows"]),
        record_rows=records(*rows["record_rows"]),
    )

    assert j.join_source(frames)["feedback_id"].to_list() == [1, 2], "a join multiplied or lost a feedback row"
    assert outcomes(frames) == [(1, "ambiguous"), (2, "eligible")]
    assert_blanked(j.raw_rows(frames, with_history=False), [1])


@pytest.mark.parametrize("order", ORDERS)
def test_a_feedback_id_held_twice_makes_both_rows_ambiguous(order: str) -> None:
    twice = [
        {"feedback_id": 1, "created_at": utc("2025-10-25 08:00:00")},
        {"feedback_id": 1, "created_at": utc("2025-10-26 08:00:00"), "helpful_rating": 1},
    ]
    frames = source(feedback(*in_order(twice, order), {"feedback_id": 2}))
    classified = t.classify(j.raw_rows(frames, with_history=False), 1)
    assert classified.height == 3
    assert sorted(classified.select("feedback_id", "outcome").iter_rows()) == [
        (1, "ambiguous"),
        (1, "ambiguous"),
        (2, "eligible"),
    ]


def test_a_feedback_id_the_reader_found_twice_in_the_table_is_ambiguous() -> None:
    """The other row of the id lies on a day the read did not take: the reader names the id."""
    frames = dataclasses.replace(
        source(feedback({"feedback_id": 5}, {"feedback_id": 6})),
        repeated_ids=pl.DataFrame({"feedback_id": [5, 99]}, schema=REPEATED_IDS_SCHEMA),
    )
    assert outcomes(frames) == [(5, "ambiguous"), (6, "eligible")]


@pytest.mark.parametrize("order", ORDERS)
def test_an_analysis_held_twice_is_ambiguous_even_if_one_of_its_rows_lacks_a_time(order: str) -> None:
    twice: list[dict[str, Any]] = [{"analysis_id": 10}, {"analysis_id": 10, "analysis_created_at": None}]
    frames = source(feedback({"feedback_id": 1}), analysis_rows=analyses(*in_order(twice, order)))
    assert outcomes(frames) == [(1, "ambiguous")]


def test_the_rules_apply_in_the_contracts_order() -> None:
    """malformed, orphan, ambiguous, mismatched, then consent, erasure and the ratings."""
    frames = source(
        feedback(
            {"feedback_id": 1, "user_id": 4, "analysis_id": 40, "recommendation_id": "rec_4", "malformed": True},
            {"feedback_id": 2, "user_id": 4, "analysis_id": 40, "recommendation_id": "missing"},
            {"feedback_id": 3, "user_id": 4, "analysis_id": 20, "recommendation_id": "rec_2"},
            {"feedback_id": 4, "user_id": 5, "analysis_id": 20, "recommendation_id": "rec_2"},
            {"feedback_id": 5, "user_id": 1, "analysis_id": 20, "recommendation_id": "rec_2", "helpful_rating": 9},
            {"feedback_id": 6, "user_id": 6, "analysis_id": 20, "recommendation_id": "rec_2"},
        ),
        user_rows=users(
            {"user_id": 1},
            {"user_id": 2},
            {"user_id": 4},
            {"user_id": 4},
            {"user_id": 5, "ml_training_consent": False},
            {"user_id": 6},
        ),
        **owned_by(1, 2, 4),
        erased=[6],
    )
    assert outcomes(frames) == [
        (1, "malformed"),
        (2, "orphan"),
        (3, "ambiguous"),
        (4, "mismatched"),
        (5, "mismatched"),
        (6, "mismatched"),
    ]


def test_ambiguous_and_mismatched_rows_are_counted_and_quarantined() -> None:
    frames = source(
        feedback({"feedback_id": 1}, {"feedback_id": 2, **own(2)}, {"feedback_id": 3, **own(1), "analysis_id": 20}),
        user_rows=users({"user_id": 1}, {"user_id": 2}, {"user_id": 2}),
        **owned_by(1, 2),
    )
    classified = t.classify(j.raw_rows(frames, with_history=False), 1)
    deduplicated = t.deduplicate(t.with_dedupe_key(t.anonymize(classified, bytes(32), False), "exact"))
    day = ["2025-10-25"]
    counts = {**t.outcome_counts(classified, day)["2025-10-25"], **t.dedupe_counts(deduplicated, day)["2025-10-25"]}
    assert (counts["rejected_ambiguous"], counts["rejected_mismatched"], counts["exported_records"]) == (1, 1, 1)
    assert counts["rejected_records"] == 2
    assert t.unaccounted_rows(counts) == 0
    quarantine = t.rejected_rows(classified)
    assert sorted(quarantine.select("feedback_id", "reason").iter_rows()) == [(2, "ambiguous"), (3, "mismatched")]
    assert t.rejected_counts(quarantine)["rejected_ambiguous"] == 1


def test_first_per_pair_gives_no_key_to_an_ambiguous_earlier_row() -> None:
    """The earlier row's own day rejects it; the later day must not count it as the pair's first."""
    frames = dataclasses.replace(
        source(
            feedback(
                {"feedback_id": 3, "created_at": utc("2025-10-24 08:00:00"), "is_history": True},
                {"feedback_id": 4, "created_at": utc("2025-10-25 08:00:00")},
            )
        ),
        repeated_ids=pl.DataFrame({"feedback_id": [3]}, schema=REPEATED_IDS_SCHEMA),
    )
    raw = j.raw_rows(frames, with_history=True)
    pairs = t.anonymize(t.classify(raw, 1), bytes(32), False)
    kept = t.deduplicate(t.with_dedupe_key(pairs, "first_per_pair")).select("feedback_id", "kept")
    assert_frame_equal(kept, pl.DataFrame({"feedback_id": [4], "kept": [True]}))


# ---- end to end, on SQLite and PostgreSQL sources without keys ----------------------------------

DAY, NEXT = "2025-10-25", "2025-10-26"
OTHER_CONDITIONS = "Rosacea-of-someone-else"
OTHER_IMAGE = "https://img.invalid/someone-else.jpg"


def write_source_with_ids_twice(url: str, order: str) -> None:
    """User 1's feedback, exported once (1001), and every way of belonging to someone else or being
    ambiguous; `order` says which of each id's two rows the tables hold first."""
    write_keyless_source(
        url,
        users=[
            {"id": 1, "age": 30, "ml_training_consent": True, "image_sharing_consent": True},
            {"id": 2, "age": 52, "ml_training_consent": True, "image_sharing_consent": True},
            *in_order(
                [
                    {"id": 3, "age": 40, "ml_training_consent": True, "image_sharing_consent": True},
                    {"id": 3, "age": 41, "ml_training_consent": False, "image_sharing_consent": False},
                ],
                order,
            ),
        ],
        analyses=[
            {"id": 10, "user_id": 1, "conditions": "acne", "created_at": at("2025-10-24 10:00:00")},
            {"id": 20, "user_id": 2, "conditions": OTHER_CONDITIONS, "image_url": OTHER_IMAGE},
            {"id": 30, "user_id": 3, "conditions": "dry"},
            *in_order(
                [
                    {"id": 40, "user_id": 1, "conditions": "acne"},
                    {"id": 40, "user_id": 2, "conditions": OTHER_CONDITIONS, "image_url": OTHER_IMAGE},
                ],
                order,
            ),
        ],
        records=[
            {"id": "rec_a", "analysis_id": 10, "rules_applied": "spf_daily", "timeframe": "4w"},
            {"id": "rec_b", "analysis_id": 20},
            {"id": "rec_c", "analysis_id": 30},
            {"id": "rec_d", "analysis_id": 40},
            *in_order([{"id": "rec_e", "analysis_id": 10}, {"id": "rec_e", "analysis_id": 20}], order),
            {"id": "rec_f", "analysis_id": 10},
        ],
        feedback=[
            rating(1001, 1, 10, "rec_a", f"{DAY} 08:00:00", 4),
            rating(1002, 1, 20, "rec_b", f"{DAY} 09:00:00", 5),
            rating(1003, 1, 10, "rec_b", f"{DAY} 10:00:00", 5),
            rating(1004, 3, 30, "rec_c", f"{DAY} 11:00:00", 5),
            rating(1005, 1, 40, "rec_d", f"{DAY} 12:00:00", 5),
            rating(1006, 1, 10, "rec_e", f"{DAY} 13:00:00", 5),
            *in_order(
                [
                    rating(1007, 1, 10, "rec_f", f"{DAY} 14:00:00", 5),
                    rating(1007, 1, 10, "rec_f", f"{NEXT} 14:00:00", 5),
                ],
                order,
            ),
        ],
    )


EXPECTED_QUARANTINE = [
    (1002, "mismatched"),
    (1003, "mismatched"),
    (1004, "ambiguous"),
    (1005, "ambiguous"),
    (1006, "ambiguous"),
    (1007, "ambiguous"),
]


@pytest.mark.parametrize("order", ORDERS)
def test_rows_of_someone_else_and_ids_held_twice_are_never_exported(
    tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance, order: str
) -> None:
    write_source_with_ids_twice(source_url, order)
    assert materialize(instance, settings_for(tmp_path, source_url, include_image_urls="true"), DAY, NEXT).success

    exported = (tmp_path / "export" / "feedback_training_20251025.csv").read_text()
    assert exported.startswith(HEADER.rstrip("\n"))
    assert exported.count("\n") == 2 and f"{h(1)},rec_a,4," in exported
    for text in (OTHER_CONDITIONS.lower(), OTHER_IMAGE, h(2), h(3)):
        assert text not in exported
    assert (tmp_path / "export" / "feedback_training_20251026.csv").read_text().count("\n") == 1

    storage = tmp_path / "storage"
    quarantine = pl.read_parquet(storage / "rejected_feedback" / f"{DAY}.parquet")
    assert sorted(quarantine.select("feedback_id", "reason").iter_rows()) == EXPECTED_QUARANTINE
    assert pl.read_parquet(storage / "rejected_feedback" / f"{NEXT}.parquet")["reason"].to_list() == ["ambiguous"]

    counts = latest_metadata(instance, "training_csv", DAY)
    assert (counts["rejected_mismatched"], counts["rejected_ambiguous"], counts["exported_records"]) == (2, 4, 1)
    assert counts["total_feedback_records"] == 7
    assert t.unaccounted_rows(counts) == 0
    assert latest_metadata(instance, "rejected_feedback", DAY)["rejected_ambiguous"] == 4

    # raw_feedback, the private intermediate, keeps nothing of the other person, nor their id.
    raw = pl.read_parquet(storage / "raw_feedback")
    assert_blanked(raw, [1002, 1003, 1004, 1005, 1006, 1007])
    assert raw.filter(pl.col("feedback_id") == 1001)["user_id"].to_list() == [1]
    text_columns = raw.select(pl.col(pl.String))
    for name in text_columns.columns:
        assert not text_columns[name].str.contains("someone-else", literal=True).any(), name


def test_the_repeated_ids_query_is_skipped_only_when_the_id_is_a_key(source_url: str) -> None:
    keyed = open_source(parse_source_url(source_url), include_image_urls=False)
    write_source(source_url, users=[], analyses=[], records=[], feedback=[])
    assert keyed.id_is_key()
    write_source_with_ids_twice(source_url, "first")
    keyless = open_source(parse_source_url(source_url), include_image_urls=False)
    assert not keyless.id_is_key()
    frames = keyless.read_window(at(f"{DAY} 00:00:00"), at(f"{NEXT} 00:00:00"), with_history=True)
    assert frames.repeated_ids["feedback_id"].to_list() == [1007]
    assert frames.feedback.filter(pl.col("feedback_id") == 1007).height == 1


def test_repeated_ids_and_erasure_requests_read_as_the_text_copy_reads_them(tmp_path: Path, postgres_url: str) -> None:
    """The two queries that went through the text COPY until the reader moved to ADBC: now fetched
    by psycopg2 on the run's leader session (repeated ids) and on a session of their own (erasure
    requests), each still equal to the oracle, a stored value that is no id included."""
    write_source_with_ids_twice(postgres_url, "first")
    location = parse_source_url(postgres_url)
    source = open_source(location, include_image_urls=False)
    day, next_day = at(f"{DAY} 00:00:00"), at(f"{NEXT} 00:00:00")
    with source.reading_run(day, next_day, with_history=True, scratch_root=storage_for(tmp_path)) as read:
        run = read(day, next_day)
    alone = source.read_window(day, next_day, with_history=True)
    text = text_read_window(location, day, next_day, with_history=True, include_image_urls=False)
    assert text.repeated_ids["feedback_id"].to_list() == [1007]
    for ours in (run, alone):
        assert_frame_equal(ours.repeated_ids.sort("feedback_id"), text.repeated_ids.sort("feedback_id"))

    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE erasure_requests ALTER COLUMN user_id TYPE text")
        cur.execute(
            "INSERT INTO erasure_requests (user_id, requested_at) VALUES (' 7 ', now()), ('no id', now()), ('7', now())"
        )
    conn.close()
    requests = source.read_erasure_requests()
    text_requests = erasure_ids(text_erasure_requests(location))
    assert_series_equal(requests.sort(nulls_last=True), text_requests.sort(nulls_last=True))
    assert requests.null_count() == 1 and requests.drop_nulls().to_list() == [7, 7]


# ---- a day whose state holds a key twice (made before ids held twice were rejected) --------------


def owned_twice(day: str, keys: list[str]) -> dict[str, pl.DataFrame]:
    return {day: pl.DataFrame({"dedupe_key": keys, "partition": [dt.date.fromisoformat(day)] * len(keys)})}


def test_a_key_one_day_holds_twice_is_owned_twice_and_its_repair_says_why(tmp_path: Path) -> None:
    state = DedupeStateStore(storage_for(tmp_path), "exact", "k1")
    state.write({**owned_twice(DAY, ["a" * 64, "a" * 64, "b" * 64]), **owned_twice(NEXT, ["c" * 64])})
    day = dt.date.fromisoformat(DAY)
    for among in ([DAY], [DAY, NEXT], None):
        shared = state.shared_keys(among=among)
        assert shared["dedupe_key"].to_list() == ["a" * 64], among
        assert shared["partitions"].to_list() == [[day, day]], among
    assert state.shared_keys(among=[NEXT]).is_empty()
    assert days_to_rerun(shared) == [DAY]
    repair = repair_of(shared)
    assert repair.startswith(f"backfill {DAY} through {DAY} in one run; {DAY} exported a key twice")
    assert "rejects them as ambiguous" in repair and "remove the duplicate rows" in repair

    # Also owned by a later day: both days are re-run.
    state.write(owned_twice(NEXT, ["a" * 64]))
    shared = state.shared_keys(among=[NEXT])
    assert shared["partitions"].to_list() == [[day, day, day + dt.timedelta(days=1)]]
    assert days_to_rerun(shared) == [DAY, NEXT]


def test_the_check_and_the_audit_fail_on_a_day_holding_a_key_twice(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_crafted_source(url)
    settings = settings_for(tmp_path, url)
    assert materialize(instance, settings, DAY).success
    # What a run before ids held twice were rejected could leave: the day's file holds a key twice.
    state = DedupeStateStore(storage_for(tmp_path / "storage"), "exact", "k1")
    keys = pl.read_parquet(state_file(state, DAY))["dedupe_key"].to_list()
    state.write(owned_twice(DAY, [*keys, keys[0]]))

    # The check alone, for the day: a run of the day's seen_pair_hashes would first write its state anew.
    result = dg.materialize(
        selection(),
        selection=dg.AssetSelection.checks(no_key_owned_twice),
        instance=instance,
        resources=resources_for(settings),
        tags={"dagster/asset_partition_range_start": DAY, "dagster/asset_partition_range_end": DAY},
        raise_on_error=False,
    )
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["keys_owned_twice"].value == 1
    assert check.metadata["days_to_rerun"].value == DAY
    assert "rejects them as ambiguous" in str(check.metadata["repair"].value)
    with pytest.raises(dg.Failure, match=r"1 dedupe key\(s\) are owned twice, by two days or twice by one; backfill"):
        audit_history.execute_in_process(instance=instance, resources=resources_for(settings))

    # The repair: re-running the day writes its state anew, each key once.
    assert materialize(instance, settings, DAY).success
    assert state.shared_keys().is_empty()
    assert audit_history.execute_in_process(instance=instance, resources=resources_for(settings)).success


def test_raw_rows_stored_before_the_rules_are_refused_with_the_command_to_rebuild_them(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_crafted_source(url)
    settings = settings_for(tmp_path, url)
    assert materialize(instance, settings, DAY, assets=("raw_feedback",)).success
    stored = tmp_path / "storage" / "raw_feedback" / f"{DAY}.parquet"
    pl.read_parquet(stored).drop(*j.OWNERSHIP_FLAGS).write_parquet(stored)

    with pytest.raises(dg.Failure, match=r"stored before the ambiguous, mismatched rule\(s\) existed; re-run it: "):
        materialize(instance, settings, DAY, assets=("anonymized_pairs",))
    assert materialize(instance, settings, DAY, assets=("raw_feedback", "anonymized_pairs")).success


def test_the_contract_and_the_readme_name_every_count_in_the_order_the_rules_apply() -> None:
    rules = contract_section(5).split("The remaining rows are eligible")[0]
    counts = [
        *(f"rejected_{reason}" for reason in t.REJECTED_REASONS),
        *(f"excluded_{reason}" for reason in t.EXCLUDED_REASONS),
        "skipped_records",
    ]
    named = re.findall(r"`((?:rejected|excluded)_[a-z_]+|skipped_records)`", rules)
    assert sorted(named) == sorted(counts)
    # The contract's order is classify's: malformed, orphan, ambiguous, mismatched, consent, ...
    assert named[:4] == [f"rejected_{reason}" for reason in t.REJECTED_REASONS[:4]]
    readme = (REPO_ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in counts)
