"""Consent withdrawn after an export: who must leave the stored files, and blanking the image URLs
of users who withdrew image consent (docs/privacy.md, "Consent withdrawn").

`plan` compares the record of subjects (whose rows each day holds) with what the source says of
those users now; removing a whole user is `erasure.erase`, restricted to the days the record names.
`blank_image_urls` rewrites only the image_url cells of the users' rows, and with `dry_run` only
counts them. No Dagster here.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import polars as pl

from feedback_assets.erasure import (
    IMAGE_CONSENT_WITHDRAWN,
    CsvPseudonyms,
    append_audit_entry,
    is_erased,
)
from feedback_assets.files import reading, rematerialize_command
from feedback_assets.schemas import IMAGE_URL_COLUMN
from feedback_assets.storage import PartitionStore, Storage
from feedback_assets.storage.base import read_text, write_bytes
from feedback_assets.training_csv import csv_bytes, manifest_bytes, manifest_name, training_files

# The files that can hold an image URL, by the column that names whose row it is.
IMAGE_KINDS = {"raw_feedback": "user_id", "anonymized_pairs": "analysis_hash", "deduplicated_pairs": "analysis_hash"}
IMAGE_ROW_KINDS = ("training_csv", *IMAGE_KINDS)


@dataclass(frozen=True)
class Withdrawals:
    """The held users who must leave the files, each as (`partition`, `user_id`) rows: the days the
    record says hold them. `images` are the days whose image URLs of a user must be blanked."""

    requested: pl.DataFrame
    withdrawn: pl.DataFrame
    images: pl.DataFrame

    @property
    def nothing_to_do(self) -> bool:
        return self.requested.is_empty() and self.withdrawn.is_empty() and self.images.is_empty()


def plan(held: pl.DataFrame, consent: pl.DataFrame, requests: pl.Series) -> Withdrawals:
    """Who of `held` (the record: `partition`, `user_id`, `image_url`) the source now says must not be
    exported. `consent` holds the source's `users` rows of them (`read_user_consent`), `requests`
    the ids in erasure_requests.

    A user goes when they asked to be erased, or when their ml_training_consent is not true (false,
    null, unreadable), they have no row in `users`, or more than one (which of them holds is not
    known, so none is trusted). A user who stays but whose image_sharing_consent is not true loses
    the image URLs of the days the record says hold one.
    """
    users = consent.group_by("user_id").agg(
        pl.len().alias("rows"), pl.col("ml_training_consent").first(), pl.col("image_sharing_consent").first()
    )
    status = held.join(users, on="user_id", how="left").with_columns(
        requested=is_erased("user_id", requests),
        exportable=(pl.col("rows") == 1).fill_null(False) & pl.col("ml_training_consent").fill_null(False),
    )
    columns = ["partition", "user_id"]
    return Withdrawals(
        requested=status.filter(pl.col("requested")).select(columns).sort(columns),
        withdrawn=status.filter(~pl.col("requested") & ~pl.col("exportable")).select(columns).sort(columns),
        images=status.filter(
            ~pl.col("requested")
            & pl.col("exportable")
            & pl.col("image_url")
            & ~pl.col("image_sharing_consent").fill_null(False)
        )
        .select(columns)
        .sort(columns),
    )


@dataclass(frozen=True)
class BlankingSummary:
    """What one image-consent withdrawal did, or in a dry run would do: counts and days only."""

    subjects: int
    partitions: list[str]
    # Kind -> day -> image URLs blanked, for every day whose files of that kind change.
    blanked_by_partition: dict[str, dict[str, int]] = field(default_factory=dict)
    dry_run: bool = False
    audit_entry_id: str | None = None

    @property
    def blanked(self) -> dict[str, int]:
        return {kind: sum(days.values()) for kind, days in self.blanked_by_partition.items()}


def blank_in_frame(frame: pl.DataFrame, column: str, whose: pl.Series) -> tuple[pl.DataFrame, int]:
    """`frame` with the image URLs of the rows whose `column` is among `whose` blanked, and how many."""
    hit = is_erased(column, whose) & pl.col(IMAGE_URL_COLUMN).is_not_null()
    blanked = frame.select(hit.sum()).item()
    if not blanked:
        return frame, 0
    kept = pl.when(hit).then(None).otherwise(pl.col(IMAGE_URL_COLUMN)).alias(IMAGE_URL_COLUMN)
    return frame.with_columns(kept), blanked


def blank_in_csv(data: bytes, pseudonyms: pl.Series) -> tuple[bytes, int]:
    """A training CSV with the image URLs of `pseudonyms`' rows blanked, in the pipeline's format;
    a file without an image_url column is returned as it is."""
    rows = pl.read_csv(io.BytesIO(data), infer_schema=False)
    if IMAGE_URL_COLUMN not in rows.columns:
        return data, 0
    blanked_rows, blanked = blank_in_frame(rows, "analysis_hash", pseudonyms)
    return (csv_bytes(blanked_rows), blanked) if blanked else (data, 0)


def blank_image_urls(
    *,
    storage: Storage,
    exports: Storage,
    user_ids: pl.Series,
    pseudonyms: pl.Series,
    csv_pseudonyms: CsvPseudonyms,
    days: Collection[str],
    dry_run: bool = False,
) -> BlankingSummary:
    """Blank the users' image URLs in the stored partitions and CSVs of `days` (their manifests'
    SHA-256 follows); nothing else in the files changes. The caller audits and updates the record."""
    found: dict[str, dict[str, int]] = {kind: {} for kind in IMAGE_ROW_KINDS}
    for kind, column in IMAGE_KINDS.items():
        whose = user_ids if column == "user_id" else pseudonyms
        directory = storage / kind
        for day in sorted(days):
            name = f"{day}.parquet"
            if not directory.exists(name):
                continue
            with reading(
                directory.location(name),
                f"rebuild it with {rematerialize_command(kind, day)}, then run erase_subjects again",
            ):
                frame = directory.scan_parquet([name]).collect()
            if IMAGE_URL_COLUMN not in frame.columns:
                continue
            blanked_frame, blanked = blank_in_frame(frame, column, whose)
            if blanked:
                found[kind][day] = blanked
                if not dry_run:
                    PartitionStore(storage).write(kind, {day: blanked_frame})
    csv_files = training_files(exports)
    for day in sorted(set(days) & set(csv_files)):
        name = csv_files[day]
        data = exports.read_bytes(name)
        with reading(exports.location(name), f"rebuild it with {rematerialize_command('training_csv', day)}"):
            new, blanked = blank_in_csv(data, csv_pseudonyms(day))
        if not blanked:
            continue
        found["training_csv"][day] = blanked
        if not dry_run:
            write_bytes(exports, name, new)
            _restate_manifest(exports, day, name, new, blanked)
    return BlankingSummary(
        subjects=user_ids.n_unique(),
        partitions=sorted({day for by_day in found.values() for day in by_day}),
        blanked_by_partition={kind: dict(sorted(by_day.items())) for kind, by_day in found.items()},
        dry_run=dry_run,
        audit_entry_id=None if dry_run else uuid.uuid4().hex,
    )


def _restate_manifest(exports: Storage, day: str, csv_name: str, data: bytes, blanked: int) -> None:
    """The manifest of a CSV whose image URLs were blanked: same rows and counts, its new SHA-256."""
    name = manifest_name(day)
    if not exports.exists(name):
        return
    with reading(exports.location(name), f"rebuild it with {rematerialize_command('training_csv', day)}"):
        old: dict[str, object] = json.loads(read_text(exports, name))
        row_count = old["row_count"]
        if not isinstance(row_count, int):
            raise ValueError("row_count is not a number")
    facts = {k: v for k, v in old.items() if k not in ("csv", "row_count", "sha256")}
    previously = old.get("image_urls_blanked_after_export", 0)
    facts["image_urls_blanked_after_export"] = (previously if isinstance(previously, int) else 0) + blanked
    write_bytes(exports, name, manifest_bytes(csv_name, data, row_count, facts))


def audit_blanking(
    storage: Storage, at: str, run_id: str, hmac_key_id: str, summary: BlankingSummary
) -> Mapping[str, object]:
    """Append the audit entry of an image-consent withdrawal: counts and days, never a subject."""
    entry = {
        "cause": IMAGE_CONSENT_WITHDRAWN,
        "entry_id": summary.audit_entry_id,
        "at": at,
        "run_id": run_id,
        "hmac_key_id": hmac_key_id,
        "subjects": summary.subjects,
        "partitions": summary.partitions,
        "image_urls_blanked": summary.blanked,
        "image_urls_blanked_by_partition": summary.blanked_by_partition,
    }
    append_audit_entry(storage, entry)
    return entry
