"""The record of subjects: whose rows each stored day holds, so withdrawals are found without
reading the big files (docs/privacy.md, "The record of subjects").

One small Parquet file per day under the storage dir, `subjects/YYYY-MM-DD.parquet`: the distinct
user ids of the day's raw_feedback rows (history rows included) and, per user, whether one of those
rows holds an image URL the export may carry (the user had image_sharing_consent when it was read).
It is personal data, private like raw_feedback, and never leaves the storage dir.

A day's record is a function of the day's raw_feedback file, so a re-run writes the same bytes: the
step that writes raw_feedback writes it right after, and erasure and withdrawal rewrite it as the
files hold it once they are done. No Dagster here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import polars as pl

from feedback_assets.asset_names import AssetName
from feedback_assets.files import concurrently, reading, rematerialize_command
from feedback_assets.storage import Storage
from feedback_assets.storage.base import WRITES, Sink, files_matching, write_parquet

SUBJECTS_DIR = "subjects"
DAY_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.parquet")
# One file per day: the day is its name, so the rows need not repeat it.
RECORD_SCHEMA = pl.Schema({"user_id": pl.Int64(), "image_url": pl.Boolean()})
# The raw_feedback columns a record is made from: a column read of the day's file, not the whole file.
RAW_COLUMNS = ("partition", "user_id", "image_url", "image_sharing_consent")


def subjects_of(raw: pl.DataFrame) -> pl.DataFrame:
    """`partition`, `user_id`, `image_url` of raw_feedback rows: one row per day and user whose id the
    rows keep (refusing and erased users' ids are blanked), true where one of their rows holds an
    image URL with image consent."""
    exportable_image = pl.col("image_url").is_not_null() & pl.col("image_sharing_consent").fill_null(False)
    return (
        raw.filter(pl.col("user_id").is_not_null())
        .group_by("partition", "user_id")
        .agg(exportable_image.any().alias("image_url"))
        .sort("partition", "user_id")
    )


class SubjectRecord:
    """The record's files in the storage dir; writers hold the storage lock like the partitions' writers."""

    def __init__(self, storage: Storage, sink: Sink = WRITES) -> None:
        self.directory = storage / SUBJECTS_DIR
        self.raw_feedback = storage / AssetName.RAW_FEEDBACK
        # Every write goes there: a recording sink makes a dry run.
        self.sink = sink

    def days(self) -> list[str]:
        return days_in(self.directory)

    def _read_day(self, day: str) -> pl.DataFrame:
        name = _file(day)
        with reading(
            self.directory.location(name),
            f"delete it and run erase_subjects again, which makes it anew from raw_feedback {day}",
        ):
            return self.directory.scan_parquet([name]).collect().cast(RECORD_SCHEMA)

    def write(self, raw_parts: Mapping[str, pl.DataFrame]) -> None:
        """The record of each day of `raw_parts`, the days' raw_feedback rows as written."""
        found = _by_day(subjects_of(pl.concat(list(raw_parts.values())))) if raw_parts else {}
        # With a killed step's temporary files removed, as PartitionStore.write removes the partitions'.
        self.sink.prepare(self.directory)
        concurrently(lambda day: self._write(day, found.get(day, pl.DataFrame(schema=RECORD_SCHEMA))), list(raw_parts))

    def replace(self, day: str, record: pl.DataFrame) -> None:
        """Write what the record says of `day` (erasure and withdrawal, once the files hold it)."""
        self.sink.prepare(self.directory)
        self._write(day, record.select(RECORD_SCHEMA.names()).cast(RECORD_SCHEMA).sort("user_id"))

    def erase(
        self, held: pl.DataFrame, gone: pl.DataFrame, blanked: pl.DataFrame, days: Iterable[str]
    ) -> dict[str, int]:
        """Rewrite the record of `days` from `held` (`read`'s rows) once the files hold what it says:
        the users of `gone` (`partition`, `user_id` rows) no longer named, those of `blanked` no longer
        holding an image URL. How many users each day's record lost."""
        keys = ["partition", "user_id"]
        after = (
            held.join(gone, on=keys, how="anti")
            .join(blanked.with_columns(blanked=pl.lit(True)), on=keys, how="left")
            .with_columns(image_url=pl.col("image_url") & ~pl.col("blanked").fill_null(False))
            .drop("blanked")
        )
        removed = {}
        for day in sorted(days):
            record = after.filter(pl.col("partition") == day)
            self.replace(day, record)
            removed[day] = held.filter(pl.col("partition") == day).height - record.height
        return removed

    def _write(self, day: str, record: pl.DataFrame) -> None:
        write_parquet(self.directory, _file(day), record, sink=self.sink)

    def unrecorded_raw_days(self) -> list[str]:
        """Days whose raw_feedback was written before the record existed."""
        recorded = set(self.days())
        return [day for day in days_in(self.raw_feedback) if day not in recorded]

    def derived(self, days: Iterable[str]) -> dict[str, pl.DataFrame]:
        """The record of `days` made from their raw_feedback files, reading only the columns it needs."""

        def derive(day: str) -> pl.DataFrame:
            name = _file(day)
            with reading(
                self.raw_feedback.location(name),
                f"rebuild it with {rematerialize_command(AssetName.RAW_FEEDBACK, day)}",
            ):
                raw = self.raw_feedback.scan_parquet([name]).select(RAW_COLUMNS).collect()
            return _by_day(subjects_of(raw)).get(day, pl.DataFrame(schema=RECORD_SCHEMA))

        wanted = list(days)
        return dict(zip(wanted, concurrently(derive, wanted), strict=True))

    def read(self, extra: Mapping[str, pl.DataFrame] | None = None) -> pl.DataFrame:
        """Every day's record as `partition` (the day as text), `user_id`, `image_url`; `extra` are
        records not written (yet) that count as written."""
        days = [day for day in self.days() if extra is None or day not in extra]
        frames = [self._read_day(day).with_columns(partition=pl.lit(day)) for day in days]
        frames += [record.with_columns(partition=pl.lit(day)) for day, record in (extra or {}).items()]
        if not frames:
            return pl.DataFrame(schema={**RECORD_SCHEMA, "partition": pl.String()})
        return pl.concat(frames).cast(RECORD_SCHEMA)


def _by_day(found: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {
        day.isoformat(): part.select(RECORD_SCHEMA.names())
        for (day,), part in found.partition_by("partition", as_dict=True).items()
    }


def _file(day: str) -> str:
    return f"{day}.parquet"


def days_in(directory: Storage) -> list[str]:
    # Matching the whole name skips temporary files and the statistics beside the partitions.
    return [match.group(1) for _, match in files_matching(directory, DAY_FILE)]
