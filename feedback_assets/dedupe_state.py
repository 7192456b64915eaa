"""The persisted dedupe state (`seen_pair_hashes`): which partition owns each exported dedupe key.

One Parquet file per owning partition, holding only that partition's keys: a key is stored once,
so the state grows with the number of distinct keys, and a run replaces exactly its own days'
files, so runs on different days never overwrite each other's state. Files are per dedupe scope
and per HMAC key id, because keys made under another scope or key mean nothing here.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from itertools import pairwise
from typing import BinaryIO, NoReturn

import polars as pl

from feedback_assets.asset_names import AssetName
from feedback_assets.files import OBJECT_STORE_ERRORS, concurrently, first_line_of
from feedback_assets.schemas import STATE_SCHEMA
from feedback_assets.storage import Storage
from feedback_assets.storage.base import WRITES, Sink, streamed, write_parquet

# Each key is stored with its first 15 hex digits as an integer: a lookup reads that 8-byte column
# of every day instead of the 64-character keys, then the keys of the few days that may match
# (docs/decisions.md, "An index of the state": 60 ms against 180 ms for a day against a year).
PREFIX_DIGITS = 15
STORED_SCHEMA = pl.Schema({**STATE_SCHEMA, "key_prefix": pl.Int64()})


# A run's days are checked this many at a time, so the check's memory does not grow with the run.
SHARED_BATCH_DAYS = 31

# Reading the prefixes day file by day file costs about 0.3 ms a file on a local disk (a GET each on
# object storage), which outgrows the prefixes themselves: two years of days, 0.29 s a lookup, against
# 0.075 s for the same prefixes in one file. So the prefixes of every day are also kept in one index
# file, with each day file's version when it was read; a lookup takes from it the days whose files
# are unchanged and reads the rest directly, and once more than INDEX_STALE_DAYS days are read
# directly the index is rebuilt (docs/decisions.md, "An index of the state").
INDEX_STALE_DAYS = 31
INDEX_SCHEMA = pl.Schema({"key_prefix": pl.Int64(), "partition": pl.Date(), "day": pl.String(), "version": pl.String()})
# In a directory of its own: `partitions()` lists only the files directly in the state's directory.
INDEX_DIR, INDEX_FILE = "index", "prefixes.parquet"


def _as_index(rows: pl.LazyFrame) -> pl.LazyFrame:
    return rows.select(INDEX_SCHEMA.names()).cast(INDEX_SCHEMA)


def key_prefix(keys: pl.Expr) -> pl.Expr:
    return keys.str.slice(0, PREFIX_DIGITS).str.to_integer(base=16).alias("key_prefix")


def days_to_rerun(shared: pl.DataFrame) -> list[str]:
    """The days of `shared_keys()` rows that must be re-run: every owner but the earliest of a key,
    and a day that holds a key twice (it is listed twice)."""
    return sorted({day.isoformat() for days in shared["partitions"].to_list() for day in days[1:]})


def days_holding_a_key_twice(shared: pl.DataFrame) -> list[str]:
    """The days of `shared_keys()` rows whose own file holds a key more than once."""
    return sorted({a.isoformat() for days in shared["partitions"].to_list() for a, b in pairwise(days) if a == b})


def repair_of(shared: pl.DataFrame) -> str:
    """What fixes the keys of `shared_keys()` (none: an empty text), for the check and the audit alike."""
    days = days_to_rerun(shared)
    if not days:
        return ""
    repair = f"backfill {days[0]} through {days[-1]} in one run"
    twice = days_holding_a_key_twice(shared)
    if twice:
        # Only rows that share a feedback id, or whose user, analysis or record id the source holds
        # twice, give one day the same key twice; since contract version 3 they are rejected.
        repair += (
            f"; {', '.join(twice)} exported a key twice, from source rows whose ids occur twice: the re-run "
            "rejects them as ambiguous (rejected_feedback lists their feedback ids); the app team should "
            "remove the duplicate rows"
        )
    return repair


class DedupeStateError(RuntimeError):
    """The dedupe state a run needs is missing or unreadable; the message says how to rebuild it."""


class _OldFormat(Exception):
    """A state file written before the key prefix existed, found by a read that must not upgrade it."""


def _rebuild_hint(partitions: Iterable[str]) -> str:
    days = sorted(partitions)
    span = days[0] if len(days) == 1 else f"{days[0]}...{days[-1]}"
    return (
        f"rebuild it by materializing deduplicated_pairs and seen_pair_hashes for {span} "
        f"(dagster asset materialize -m feedback_assets.definitions "
        f"--select deduplicated_pairs,seen_pair_hashes --partition-range {days[0]}...{days[-1]})"
    )


class DedupeStateStore:
    def __init__(self, storage: Storage, scope: str, key_id: str, index_stale_days: int = INDEX_STALE_DAYS) -> None:
        self.directory = storage / AssetName.SEEN_PAIR_HASHES / f"scope={scope}" / f"key_id={key_id}"
        self.index = self.directory / INDEX_DIR
        self.index_stale_days = index_stale_days
        # Every write, deletion and temporary-file removal goes there: a recording sink makes a dry run.
        self.sink: Sink = WRITES

    def through(self, sink: Sink) -> DedupeStateStore:
        """The same state, its changes going to `sink`."""
        store = copy.copy(self)
        store.sink = sink
        return store

    @staticmethod
    def file(partition: str) -> str:
        """The name of a day's file in `directory`."""
        return f"{partition}.parquet"

    def partitions(self) -> list[str]:
        return [name.removesuffix(".parquet") for name in self.directory.names() if name.endswith(".parquet")]

    def has_index(self) -> bool:
        return self.index.exists(INDEX_FILE)

    def _scan(self, days: Collection[str]) -> pl.LazyFrame:
        return self.directory.scan_parquet([self.file(day) for day in days], schema=STORED_SCHEMA)

    def verify(self, materialized: Collection[str], excluding: Collection[str] = ()) -> None:
        """Fail if a day Dagster records as materialized has no state file here: reading on without
        it would silently forget that day's keys and export them again."""
        present = set(self.partitions())
        missing = sorted(set(materialized) - present - set(excluding))
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise DedupeStateError(
                f"the dedupe state of {shown} is missing from {self.directory} although seen_pair_hashes "
                f"was materialized for it (deleted, or made under another dedupe scope or key id); "
                + _rebuild_hint(missing)
            )

    def _scan_all(self) -> pl.LazyFrame | None:
        days = self.partitions()
        return self._scan(days) if days else None

    def _upgrade(self) -> None:
        """Give state files written before the key prefix existed their prefix column."""
        for partition in self.partitions():
            if "key_prefix" not in self.directory.parquet_columns(self.file(partition)):
                self.write({partition: self.directory.scan_parquet([self.file(partition)]).collect()})

    def _collect(self, frame: pl.LazyFrame, upgrade: bool = True) -> pl.DataFrame:
        # Streaming: the state grows with every exported key; a lookup reads it in batches, so its
        # memory does not grow with it.
        try:
            try:
                return frame.collect(engine="streaming")
            except pl.exceptions.ColumnNotFoundError:
                if not upgrade:
                    raise _OldFormat from None
                # State written before the key prefix existed: upgraded once, then read again.
                self._upgrade()
                return frame.collect(engine="streaming")
        except (pl.exceptions.ComputeError, pl.exceptions.ColumnNotFoundError, *OBJECT_STORE_ERRORS) as exc:
            self._raise_unreadable(exc)

    def _raise_unreadable(self, exc: BaseException) -> NoReturn:
        damaged = self._damaged_files()
        which = ", ".join(damaged) if damaged else "the damaged day's file"
        raise DedupeStateError(
            f"the dedupe state under {self.directory} cannot be read ({type(exc).__name__}: "
            f"{first_line_of(exc)}); delete {which} and " + _rebuild_hint(self.partitions())
        ) from None

    def _damaged_files(self) -> list[str]:
        """Where the state files are that cannot be read on their own: looked for only once a read has failed."""
        damaged = []
        for partition in self.partitions():
            try:
                self.directory.scan_parquet([self.file(partition)]).collect()
            except (pl.exceptions.PolarsError, *OBJECT_STORE_ERRORS):
                damaged.append(self.directory.location(self.file(partition)))
        return damaged

    def owners(self, keys: pl.Series, excluding: Collection[str], upgrade: bool = True) -> pl.DataFrame:
        """The partitions outside `excluding` that own any of `keys`: the key prefixes find the few
        days that may hold one, and only those days' keys are read."""
        if keys.is_empty():
            return STATE_SCHEMA.to_frame()
        prefixes = keys.to_frame("dedupe_key").select(key_prefix(pl.col("dedupe_key")))["key_prefix"]
        return self._owners_among(self._candidate_days(prefixes, excluding, upgrade), keys)

    def _owners_among(self, days: list[str], keys: pl.Series) -> pl.DataFrame:
        if not days:
            return STATE_SCHEMA.to_frame()
        found = self._scan(days)
        return self._collect(found.filter(pl.col("dedupe_key").is_in(keys.implode())).select(STATE_SCHEMA.names()))

    def _candidate_days(self, prefixes: pl.Series, excluding: Collection[str], upgrade: bool = True) -> list[str]:
        """The days outside `excluding` whose files hold any of `prefixes`: from the index for the
        days whose files it read as they are now, from the files themselves for the others."""
        skip = set(excluding)
        current = {day: version for day, version in self._versions().items() if day not in skip}
        if not current:
            return []
        indexed, index_versions = self._read_index(prefixes)
        covered = {day for day, version in current.items() if index_versions.get(day) == version}
        # Unique before Python sees them: a run's own keys match millions of the index's rows.
        found = {day.isoformat() for day in indexed["partition"].unique().to_list()} & covered
        unread = sorted(set(current) - covered)
        if unread:
            direct = self._collect(
                self._scan(unread).filter(pl.col("key_prefix").is_in(prefixes.implode())).select("partition").unique(),
                upgrade,
            )
            found |= {day.isoformat() for day in direct["partition"].to_list()}
        return sorted(found)

    def _versions(self) -> dict[str, str]:
        return {name.removesuffix(".parquet"): v for name, v in self.directory.versions(".parquet").items()}

    def _read_index(self, prefixes: pl.Series | None) -> tuple[pl.DataFrame, dict[str, str]]:
        """The index's rows for `prefixes` (none when None) and the day versions it was built from.

        The index only stands in for files it can be checked against, so an index that is missing or
        cannot be read is no index: every day is read from its file, and the next write rebuilds it.
        """
        rows = INDEX_SCHEMA.to_frame().select("key_prefix", "partition")
        try:
            if not self.has_index():
                return rows, {}
            index = self.index.scan_parquet([INDEX_FILE], schema=INDEX_SCHEMA)
            days = index.select("day", "version").filter(pl.col("day").is_not_null()).collect()
            if prefixes is not None:
                wanted = pl.col("key_prefix").is_in(prefixes.implode())
                rows = index.select("key_prefix", "partition").filter(wanted).collect(engine="streaming")
        except (pl.exceptions.PolarsError, *OBJECT_STORE_ERRORS):
            return rows.clear(), {}
        return rows, dict(zip(days["day"].to_list(), days["version"].to_list(), strict=True))

    def rebuild_index(self) -> None:
        """Write the index anew for the day files as they are now (none: no index).

        Each file's version is taken before its prefixes are read, so a file replaced meanwhile is
        recorded with a version it no longer has, and lookups read it directly: never a stale day.
        The rows of days the index already holds at their current version are taken from it; only
        the other days' files are read, so a backfill's rebuilds do not each reread every day so
        far, a GET each on object storage. Both are streamed into the new file, never whole in
        memory: at 20 million keys a rebuild held in memory took 1.2 GiB (docs/benchmarks.md,
        lesson 20).
        """
        current = self._versions()
        if not current:
            self.sink.delete(self.index, INDEX_FILE)
            return
        days = sorted(current)
        listed = pl.LazyFrame({"day": days, "version": [current[day] for day in days]})
        self.sink.prepare(self.index)

        # Inside the write, so a sink that only records it reads nothing.
        def write(handle: BinaryIO) -> None:
            # The index as it is now, whatever another writer renames over it meanwhile: the rows
            # taken over must be those of the versions compared.
            with self.index.pinned_parquet(INDEX_FILE, INDEX_SCHEMA) as old:
                indexed = self._index_versions(old)
                kept = [dt.date.fromisoformat(day) for day in days if indexed.get(day) == current[day]]
                parts = [self._scan_prefixes([day for day in days if indexed.get(day) != current[day]])]
                if old is not None and kept:
                    wanted = pl.col("partition").is_in(pl.Series(kept, dtype=pl.Date()).implode())
                    parts.append(old.filter(pl.col("day").is_null() & wanted).select("key_prefix", "partition"))
                streamed(_as_index(pl.concat([*parts, listed], how="diagonal")))(handle)

        try:
            self.sink.write(self.index, INDEX_FILE, write)
            return
        except (pl.exceptions.PolarsError, *OBJECT_STORE_ERRORS):
            pass
        # The old index damaged past its footer (it is only a cache), or a day file without its
        # prefixes or damaged: made from every day's file, as a lookup reads them, or the damage named.
        try:
            self._upgrade()
            whole = pl.concat([self._scan_prefixes(days), listed], how="diagonal")
            self.sink.write(self.index, INDEX_FILE, streamed(_as_index(whole)))
        except (pl.exceptions.PolarsError, *OBJECT_STORE_ERRORS) as exc:
            self._raise_unreadable(exc)

    def _scan_prefixes(self, days: list[str]) -> pl.LazyFrame:
        if not days:
            return INDEX_SCHEMA.to_frame().lazy().select("key_prefix", "partition")
        return self._scan(days).select("key_prefix", "partition")

    @staticmethod
    def _index_versions(index: pl.LazyFrame | None) -> dict[str, str]:
        """The day versions an index was built from; none when there is none or it cannot be read."""
        if index is None:
            return {}
        try:
            days = index.select("day", "version").drop_nulls("day").collect()
        except pl.exceptions.PolarsError:
            return {}
        return dict(zip(days["day"].to_list(), days["version"].to_list(), strict=True))

    def write(self, owned: Mapping[str, pl.DataFrame | pl.LazyFrame], rebuild: bool = False) -> None:
        """Replace the state of each given partition with the keys it now owns; rebuild the index once
        more than `index_stale_days` days are not in it as they are, or if any with `rebuild` (keys gone)."""
        self.sink.prepare(self.directory)
        concurrently(lambda day: self._write_day(*day), owned.items())
        if rebuild and self.has_index():
            self.rebuild_index()
            return
        _, index_versions = self._read_index(None)
        stale = sum(index_versions.get(day) != version for day, version in self._versions().items())
        if stale > self.index_stale_days:
            self.rebuild_index()

    def _write_day(self, partition: str, owned: pl.DataFrame | pl.LazyFrame) -> None:
        data = (
            owned.lazy().select(STATE_SCHEMA.names()).with_columns(key_prefix(pl.col("dedupe_key"))).sort("dedupe_key")
        )
        write_parquet(self.directory, self.file(partition), data, sink=self.sink)

    def erase(self, keys: pl.Series) -> dict[str, int]:
        """Remove `keys` from the day files owning them, the only ones read whole and rewritten (left
        empty, a file stays: a missing one is lost state), and the index; rows removed by day."""
        try:
            owned = self.owners(keys.unique(), excluding=(), upgrade=False)
        except _OldFormat:
            # No prefixes to look in, and adding them is a write no dry run may make: read every key.
            owned = self._owners_among(self.partitions(), keys.unique())
        gone = {day.isoformat(): n for day, n in owned.group_by("partition").len().iter_rows()}
        if gone:
            kept = ~pl.col("dedupe_key").is_in(keys.implode())
            self.write({day: self.directory.scan_parquet([self.file(day)]).filter(kept) for day in gone}, rebuild=True)
        return gone

    def all_keys(self) -> pl.DataFrame:
        scan = self._scan_all()
        return self._collect(scan.select(STATE_SCHEMA.names())) if scan is not None else STATE_SCHEMA.to_frame()

    def _shared_with(self, days: list[str]) -> pl.DataFrame:
        """The keys of `days` that another day (of the run or not), a second day among them or a
        second row of the same day owns too, with each owning day and how many times its file holds
        the key: rows of `dedupe_key`, `partition`, `copies`."""
        owned = self._scan(days)
        # A key can only be shared if its prefix is: prefixes first (8 bytes a key, not 64), then
        # the whole keys of the few prefixes seen twice here or held by another day.
        prefixes = self._collect(owned.select("key_prefix"))["key_prefix"]
        candidates = [prefixes.filter(prefixes.is_duplicated())]
        elsewhere = self._candidate_days(prefixes, excluding=days)
        if elsewhere:
            held = self._scan(elsewhere).filter(pl.col("key_prefix").is_in(prefixes.implode()))
            candidates.append(self._collect(held.select("key_prefix"))["key_prefix"])
        suspects = pl.concat(candidates).unique()
        if suspects.is_empty():
            return STATE_SCHEMA.to_frame().with_columns(copies=pl.lit(0, pl.UInt32))
        mine = self._collect(owned.filter(pl.col("key_prefix").is_in(suspects.implode())).select(STATE_SCHEMA.names()))
        # The days outside `days` that may own one of these keys are `elsewhere`, found above.
        others = self._owners_among(elsewhere, mine["dedupe_key"])
        twice_here = mine.filter(pl.col("dedupe_key").is_duplicated()).select("dedupe_key")
        shared = pl.concat([others.select("dedupe_key"), twice_here]).unique()
        found = pl.concat([mine.join(shared, on="dedupe_key", how="semi"), others])
        # Counted here, since several batches may find the same day's rows: `shared_keys` keeps each once.
        return found.group_by(STATE_SCHEMA.names()).agg(pl.len().alias("copies"))

    def key_count(self) -> int:
        """How many keys the whole state holds, counted without loading them."""
        scan = self._scan_all()
        return int(self._collect(scan.select(pl.len())).item()) if scan is not None else 0

    def shared_keys(self, among: Collection[str] | None = None) -> pl.DataFrame:
        """Keys owned more than once, by two partitions or twice by one: `dedupe_key`, `partitions`
        (sorted dates, a day listed once per time its file holds the key).

        With `among` (a run's days), only the keys those days own are looked at: what a run can have
        made shared, found through the key prefixes like `owners`.
        """
        empty = pl.DataFrame(schema={"dedupe_key": pl.String, "partitions": pl.List(pl.Date)})
        if among is None:
            scan = self._scan_all()
            if scan is None:
                return empty
            repeated = scan.group_by("key_prefix").len().filter(pl.col("len") > 1).select("key_prefix")
            rows = scan.join(repeated, on="key_prefix", how="semi").select(STATE_SCHEMA.names())
        else:
            days = [day for day in self.partitions() if day in set(among)]
            found = [self._shared_with(days[i : i + SHARED_BATCH_DAYS]) for i in range(0, len(days), SHARED_BATCH_DAYS)]
            if not found:
                return empty
            # A day listed once per time its file holds the key, as the whole-state read lists it.
            counted = pl.concat(found).unique()
            rows = counted.select("dedupe_key", pl.col("partition").repeat_by("copies")).explode("partition").lazy()
        shared = (
            rows.group_by("dedupe_key")
            .agg(pl.col("partition").sort().alias("partitions"))
            .filter(pl.col("partitions").list.len() > 1)
            .sort("dedupe_key")
        )
        return self._collect(shared)
