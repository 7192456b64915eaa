"""The dedupe state under re-runs, late source changes, lost files and a growing history
(docs/contract.md, section 6)."""

from __future__ import annotations

import datetime as dt
import os
import random
import sqlite3
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feedback_assets.dedupe_state import DedupeStateError, DedupeStateStore
from feedback_assets.defs.assets import rejected_feedback
from feedback_assets.defs.audit import audit_history
from feedback_assets.defs.checks import k_anonymity_of_exports
from feedback_assets.demo.database import write_demo_source
from feedback_assets.resources import FeedbackSettings, resources_for
from feedback_assets.storage import PartitionStore, storage_for
from feedback_assets_tests.graph import latest_metadata, materialize, selection, settings_for
from feedback_assets_tests.paths import index_file, on_disk, state_file
from feedback_assets_tests.sources import write_source
from feedback_assets_tests.test_erasure import erase_pseudonym_a

DAYS = ["2025-10-20", "2025-10-21", "2025-10-22", "2025-10-23", "2025-10-24"]
SCOPES = ["exact", "first_per_pair"]


def state_of(tmp_path: Path, scope: str) -> DedupeStateStore:
    return DedupeStateStore(storage_for(tmp_path / "storage"), scope, "k1")


def csv_bytes(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((tmp_path / "export").glob("*.csv"))}


def demo_source(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(url, end_date=dt.date.fromisoformat(DAYS[-1]), days=7, rows_per_day=40, seed=5)
    return url


@pytest.mark.parametrize("scope", SCOPES)
def test_rerunning_a_day_changes_neither_its_file_nor_the_state(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, scope: str
) -> None:
    settings = settings_for(tmp_path, demo_source(tmp_path), dedupe_scope=scope)
    assert materialize(instance, settings, DAYS[0], DAYS[-1]).success
    files, state = csv_bytes(tmp_path), state_of(tmp_path, scope).all_keys().sort("dedupe_key")
    exported_before = latest_metadata(instance, "training_csv", DAYS[2])["exported_records"]

    assert materialize(instance, settings, DAYS[2]).success

    assert csv_bytes(tmp_path) == files
    assert_frame_equal(state_of(tmp_path, scope).all_keys().sort("dedupe_key"), state)
    assert latest_metadata(instance, "training_csv", DAYS[2])["exported_records"] == exported_before
    assert int(exported_before) > 0


@pytest.mark.parametrize("scope", SCOPES)
def test_the_state_holds_each_exported_key_once(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, scope: str
) -> None:
    settings = settings_for(tmp_path, demo_source(tmp_path), dedupe_scope=scope)
    assert materialize(instance, settings, DAYS[0], DAYS[-1]).success
    assert materialize(instance, settings, DAYS[1], DAYS[3]).success
    assert materialize(instance, settings, DAYS[4]).success

    keys = state_of(tmp_path, scope).all_keys()
    exported = sum(int(latest_metadata(instance, "training_csv", d)["exported_records"]) for d in DAYS)
    assert exported > 0
    assert keys.height == keys["dedupe_key"].n_unique() == exported
    assert state_of(tmp_path, scope).partitions() == DAYS
    seen = latest_metadata(instance, "seen_pair_hashes", DAYS[4])
    assert seen["keys_total"] == exported


def test_a_lost_state_file_stops_the_next_run_with_the_rebuild_command(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    settings = settings_for(tmp_path, demo_source(tmp_path))
    assert materialize(instance, settings, DAYS[0], DAYS[1]).success
    state_file(state_of(tmp_path, "exact"), DAYS[0]).unlink()

    with pytest.raises(dg.Failure) as raised:
        materialize(instance, settings, DAYS[2])
    message = str(raised.value.description)
    assert message.startswith(f"the dedupe state of {DAYS[0]} is missing from ")
    assert (
        f"rebuild it by materializing deduplicated_pairs and seen_pair_hashes for {DAYS[0]} "
        "(dagster asset materialize -m feedback_assets.definitions --select deduplicated_pairs,seen_pair_hashes "
        f"--partition-range {DAYS[0]}...{DAYS[0]})"
    ) in message
    assert not (tmp_path / "export" / f"feedback_training_{DAYS[2].replace('-', '')}.csv").exists()

    assert materialize(instance, settings, DAYS[0], assets=("deduplicated_pairs", "seen_pair_hashes")).success
    assert materialize(instance, settings, DAYS[2]).success


def test_an_unreadable_state_file_is_named(tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance) -> None:
    settings = settings_for(tmp_path, demo_source(tmp_path))
    assert materialize(instance, settings, DAYS[0]).success
    state_file(state_of(tmp_path, "exact"), DAYS[0]).write_bytes(b"not parquet")

    with pytest.raises(dg.Failure, match=r"the dedupe state under .* cannot be read"):
        materialize(instance, settings, DAYS[1])


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_a_late_row_for_an_earlier_day_reports_the_later_day_until_it_is_rerun(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    """first_per_pair: day 22 exported the pair; a row for day 20 arrives late and takes it over."""
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    pair = {"user_id": 1, "analysis_id": 10, "recommendation_id": "rec_a", "helpful_rating": 4}
    write_source(
        url,
        users=[{"id": 1, "age": 30, "ml_training_consent": True, "image_sharing_consent": False}],
        analyses=[{"id": 10, "user_id": 1, "conditions": "dry"}],
        records=[{"id": "rec_a", "analysis_id": 10}],
        feedback=[{"id": 2, **pair, "created_at": at("2025-10-22 10:00:00")}],
    )
    # Microseconds, so the late row's time identifies it in the files.
    settings = settings_for(tmp_path, url, dedupe_scope="first_per_pair", timestamp_precision="microsecond")
    assert materialize(instance, settings, DAYS[0], DAYS[2]).success
    assert latest_metadata(instance, "training_csv", DAYS[2])["exported_records"] == 1
    # Nothing to re-run yet: no blank row for it.
    assert "later_days_to_rerun" not in latest_metadata(instance, "deduplicated_pairs", DAYS[0])

    with sqlite3.connect(tmp_path / "source.sqlite") as conn:
        conn.execute(
            "INSERT INTO recommendation_feedback (id, user_id, analysis_id, recommendation_id, helpful_rating, "
            "created_at) VALUES (1, 1, 10, 'rec_a', 5, '2025-10-20 09:00:00.000000')"
        )

    result = materialize_allowing_failure(instance, settings, DAYS[0])
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "no_key_owned_twice")
    assert not check.passed
    assert check.metadata["days_to_rerun"].value == DAYS[2]
    assert latest_metadata(instance, "deduplicated_pairs", DAYS[0])["later_days_to_rerun"] == DAYS[2]
    # The blocking check kept day 20's file from exporting a key day 22's file still holds.
    assert "2025-10-20T09" not in (tmp_path / "export" / "feedback_training_20251020.csv").read_text()
    # A run of an unrelated day does not see it; the weekly audit of the whole state does.
    result = materialize_allowing_failure(instance, settings, DAYS[1])
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "no_key_owned_twice")
    assert check.passed
    with pytest.raises(dg.Failure, match=rf"1 dedupe key\(s\) are owned by two days; .* through {DAYS[2]}"):
        audit_history.execute_in_process(instance=instance, resources=resources_for(settings))

    assert materialize(instance, settings, DAYS[0], DAYS[2]).success
    assert "2025-10-20T09" in (tmp_path / "export" / "feedback_training_20251020.csv").read_text()
    assert (tmp_path / "export" / "feedback_training_20251022.csv").read_text().count("\n") == 1
    assert state_of(tmp_path, "first_per_pair").shared_keys().is_empty()
    assert audit_history.execute_in_process(instance=instance, resources=resources_for(settings)).success


def materialize_allowing_failure(
    instance: dg.DagsterInstance, settings: FeedbackSettings, day: str
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [d for d in selection() if d is not k_anonymity_of_exports and d is not rejected_feedback],
        instance=instance,
        resources=resources_for(settings),
        partition_key=day,
        raise_on_error=False,
    )


def test_state_files_hold_only_keys_and_days(tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance) -> None:
    settings = settings_for(tmp_path, demo_source(tmp_path))
    assert materialize(instance, settings, DAYS[0]).success
    frame = pl.read_parquet(state_file(state_of(tmp_path, "exact"), DAYS[0]))
    # Besides the key and its day, only the key's own first 15 hex digits, as the lookup index.
    assert frame.schema == pl.Schema({"dedupe_key": pl.String, "partition": pl.Date, "key_prefix": pl.Int64})
    assert frame["dedupe_key"].str.len_chars().unique().to_list() == [64]
    assert frame["key_prefix"].to_list() == [int(key[:15], 16) for key in frame["dedupe_key"].to_list()]


def test_state_written_before_the_key_prefix_is_upgraded_and_found(tmp_path: Path) -> None:
    state = DedupeStateStore(storage_for(tmp_path), "exact", "k1")
    on_disk(state.directory).mkdir(parents=True)
    keys = ["a" * 64, "b" * 64, "0" * 63 + "1"]
    day = dt.date(2025, 10, 20)
    pl.DataFrame({"dedupe_key": keys, "partition": [day] * 3}).write_parquet(state_file(state, "2025-10-20"))
    found = state.owners(pl.Series(["b" * 64, "c" * 64]), excluding=())
    assert_frame_equal(found, pl.DataFrame({"dedupe_key": ["b" * 64], "partition": [day]}))
    assert "key_prefix" in pl.read_parquet_schema(state_file(state, "2025-10-20"))
    assert state.shared_keys().is_empty()
    state.write({"2025-10-21": pl.DataFrame({"dedupe_key": ["b" * 64], "partition": [day + dt.timedelta(days=1)]})})
    shared = state.shared_keys(among=["2025-10-21"])
    assert shared["dedupe_key"].to_list() == ["b" * 64]
    assert shared["partitions"].to_list() == [[day, day + dt.timedelta(days=1)]]
    assert_frame_equal(state.shared_keys(), shared)


def test_a_key_shared_between_two_days_of_a_run_is_found_once_whatever_the_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("feedback_assets.dedupe_state.SHARED_BATCH_DAYS", 1)
    state = DedupeStateStore(storage_for(tmp_path), "exact", "k1")
    days = [dt.date(2025, 10, 20), dt.date(2025, 10, 21), dt.date(2025, 10, 22)]
    state.write(
        {
            d.isoformat(): pl.DataFrame({"dedupe_key": ["a" * 64, f"{i}" * 64], "partition": [d] * 2})
            for i, d in enumerate(days)
        }
    )
    for among in ([d.isoformat() for d in days], [days[1].isoformat()]):
        shared = state.shared_keys(among=among)
        assert shared["dedupe_key"].to_list() == ["a" * 64]
        assert shared["partitions"].to_list() == [days]
    assert_frame_equal(state.shared_keys(among=[d.isoformat() for d in days]), state.shared_keys())


def test_keys_that_share_only_their_prefix_are_not_shared_and_a_shared_key_is_found_from_either_side(
    tmp_path: Path,
) -> None:
    """The run's check looks at key prefixes first: a prefix held twice (on two days, or twice on one)
    must still be settled by the whole keys, and a key held by a day outside the run found."""
    state = DedupeStateStore(storage_for(tmp_path), "exact", "k1")
    twins = ["a" * 15 + digit * 49 for digit in "012"]
    shared_key = "b" * 64
    days = ["2025-10-20", "2025-10-21", "2025-10-22"]
    state.write({**owned(days[0], [twins[0], shared_key]), **owned(days[1], twins[1:]), **owned(days[2], [shared_key])})
    both = [dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[2])]
    for among, expected in (
        (days, [shared_key]),
        ([days[0]], [shared_key]),
        ([days[2]], [shared_key]),
        ([days[1]], []),
        ([days[0], days[1]], [shared_key]),
    ):
        shared = state.shared_keys(among=among)
        assert shared["dedupe_key"].to_list() == expected, among
        assert shared["partitions"].to_list() == [both] * len(expected)
    assert_frame_equal(state.shared_keys(among=days), state.shared_keys())


def owned(day: str, keys: list[str]) -> dict[str, pl.DataFrame]:
    return {day: pl.DataFrame({"dedupe_key": keys, "partition": [dt.date.fromisoformat(day)] * len(keys)})}


def hex_keys(rng: random.Random, n: int) -> list[str]:
    return [f"{rng.getrandbits(256):064x}" for _ in range(n)]


def owners_from_the_files(state: DedupeStateStore, keys: list[str], excluding: set[str]) -> pl.DataFrame:
    """What a lookup must return, read from every day file without the index."""
    files = [state_file(state, day) for day in state.partitions() if day not in excluding]
    if not files:
        return pl.DataFrame(schema={"dedupe_key": pl.String, "partition": pl.Date})
    return (
        pl.read_parquet(files, columns=["dedupe_key", "partition"])
        .filter(pl.col("dedupe_key").is_in(keys))
        .sort("dedupe_key", "partition")
    )


def test_lookups_through_the_index_find_exactly_what_the_day_files_hold(tmp_path: Path) -> None:
    """The index stands in only for day files it read as they are: a day rewritten since, a key
    removed, a new day and a damaged index are all found as the files say."""
    rng = random.Random(8)
    # No rebuild by the writes here: the index is the one made after the first six days.
    state = DedupeStateStore(storage_for(tmp_path), "exact", "k1", index_stale_days=1000)
    first = dt.date(2025, 10, 1)
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range(8)]
    keys = {day: hex_keys(rng, 50) for day in days}
    for day in days[:6]:
        state.write(owned(day, keys[day]))
    assert not index_file(state).exists()
    state.rebuild_index()
    assert state.partitions() == days[:6]

    moved = hex_keys(rng, 1)[0]
    # Day 2 rewritten with a key no index has seen; day 3 loses one of its keys; day 7 is new.
    state.write(owned(days[2], [moved]))
    state.write(owned(days[3], keys[days[3]][1:]))
    state.write(owned(days[6], [keys[days[0]][0]]))
    probes = [moved, keys[days[3]][0], keys[days[3]][1], keys[days[0]][0], keys[days[5]][7], *hex_keys(rng, 3)]

    def check(excluding: set[str]) -> None:
        found = state.owners(pl.Series(probes), excluding=excluding).sort("dedupe_key", "partition")
        assert_frame_equal(found, owners_from_the_files(state, probes, excluding))

    for excluding in (set(), {days[0]}, {days[2], days[6]}):
        check(excluding)
    assert set(state.owners(pl.Series([moved]), excluding=())["partition"].to_list()) == {dt.date(2025, 10, 3)}
    assert state.owners(pl.Series([keys[days[3]][0]]), excluding=()).is_empty()
    index_file(state).write_bytes(b"PAR1 damaged")
    check(set())
    # A write that leaves more days than the limit unread makes it anew from the files.
    limited = DedupeStateStore(storage_for(tmp_path), "exact", "k1", index_stale_days=2)
    limited.write(owned(days[4], [keys[days[4]][0]]))
    assert pl.read_parquet(index_file(state))["day"].drop_nulls().to_list() == days[:7]
    assert limited.owners(pl.Series([keys[days[4]][0], keys[days[4]][1]]), excluding=()).height == 1
    check(set())


def test_a_rebuild_reads_only_the_days_the_index_does_not_hold_as_they_are(tmp_path: Path) -> None:
    """Each rebuild of a year's run would otherwise reread every day so far. A day file whose version
    is unchanged is taken from the index unread (here its bytes are made unreadable behind an
    unchanged version, which a read would fail on); a day replaced since is read again."""
    rng = random.Random(20)
    state = DedupeStateStore(storage_for(tmp_path), "exact", "k1", index_stale_days=1000)
    days = ["2025-10-01", "2025-10-02", "2025-10-03"]
    keys = {day: hex_keys(rng, 30) for day in days}
    for day in days[:2]:
        state.write(owned(day, keys[day]))
    state.rebuild_index()

    unread = state_file(state, days[0])
    before = unread.stat()
    with unread.open("r+b") as file:
        file.write(b"X" * before.st_size)
    os.utime(unread, ns=(before.st_atime_ns, before.st_mtime_ns))
    replacement = hex_keys(rng, 1)
    state.write(owned(days[1], replacement))
    state.write(owned(days[2], keys[days[2]]))
    state.rebuild_index()

    index = pl.read_parquet(index_file(state))
    prefixes = index.filter(pl.col("day").is_null()).group_by("partition").agg(pl.col("key_prefix").sort())
    expected = {
        dt.date.fromisoformat(day): sorted(int(key[:15], 16) for key in day_keys)
        for day, day_keys in {days[0]: keys[days[0]], days[1]: replacement, days[2]: keys[days[2]]}.items()
    }
    assert dict(zip(prefixes["partition"].to_list(), prefixes["key_prefix"].to_list(), strict=True)) == expected
    assert index["day"].drop_nulls().to_list() == days


def test_a_rebuild_names_a_damaged_day_file_and_leaves_no_file_of_its_own(tmp_path: Path) -> None:
    state = DedupeStateStore(storage_for(tmp_path), "exact", "k1", index_stale_days=1000)
    days = ["2025-10-01", "2025-10-02", "2025-10-03"]
    for day, keys in zip(days, hex_keys(random.Random(21), 3), strict=True):
        state.write(owned(day, [keys]))
    state.rebuild_index()
    state_file(state, days[1]).write_bytes(b"PAR1 damaged")
    with pytest.raises(DedupeStateError, match=rf"delete \S+{days[1]}\.parquet and rebuild it"):
        state.rebuild_index()
    assert [path.name for path in index_file(state).parent.iterdir()] == ["prefixes.parquet"]


def test_erasure_leaves_no_erased_key_prefix_in_the_index(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    # Never rebuilt by a write here, so only erasure itself can clean it.
    state = DedupeStateStore(storage_for(storage), "exact", "k1", index_stale_days=1000)
    erased_key, kept_key = "9" * 64, "2" * 64
    state.write(owned("2025-10-25", [erased_key, kept_key]))
    state.rebuild_index()
    prefixes = pl.read_parquet(index_file(state))["key_prefix"].drop_nulls().to_list()
    assert int("9" * 15, 16) in prefixes
    PartitionStore(storage_for(storage)).write(
        "deduplicated_pairs",
        {
            "2025-10-25": owned("2025-10-25", [erased_key, kept_key])["2025-10-25"].with_columns(
                analysis_hash=pl.Series(["a" * 64, "b" * 64])
            )
        },
    )
    erase_pseudonym_a(storage, tmp_path / "export", state, "r", dry_run=False)
    assert pl.read_parquet(index_file(state))["key_prefix"].drop_nulls().to_list() == [int("2" * 15, 16)]
