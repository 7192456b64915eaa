"""Consent withdrawn after an export: who must leave the stored files, and blanking the image URLs
of users who withdrew image consent (docs/privacy.md, "Consent withdrawn").

`plan` compares the record of subjects (whose rows each day holds) with what the source says of
those users now; removing a whole user is `erasure.erase`, restricted to the days the record names.
`blank_image_urls` has the partition store and the export store rewrite only the image_url cells of
the users' rows; a dry run is the same code with a recording sink. No Dagster here.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import polars as pl

from feedback_assets.asset_names import AssetName
from feedback_assets.erasure import IMAGE_CONSENT_WITHDRAWN, append_audit_entry
from feedback_assets.erasure_rules import CsvPseudonyms, blank_in_frame, is_erased
from feedback_assets.erasure_rules import blank_in_csv as blank_in_csv
from feedback_assets.export_store import TrainingExports
from feedback_assets.schemas import IMAGE_URL_COLUMN
from feedback_assets.settings import ExportSettings
from feedback_assets.storage import PartitionStore, Storage
from feedback_assets.storage.base import WRITES, Recording, Sink

# The files that can hold an image URL, by the column that names whose row it is.
IMAGE_KINDS = {
    AssetName.RAW_FEEDBACK: "user_id",
    AssetName.ANONYMIZED_PAIRS: "analysis_hash",
    AssetName.DEDUPLICATED_PAIRS: "analysis_hash",
}
IMAGE_ROW_KINDS = (AssetName.TRAINING_CSV, *IMAGE_KINDS)


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


def blank_image_urls(
    *,
    storage: Storage,
    exports: Storage,
    user_ids: pl.Series,
    pseudonyms: pl.Series,
    csv_pseudonyms: CsvPseudonyms,
    days: Collection[str],
    dry_run: bool = False,
    settings: ExportSettings | None = None,
) -> BlankingSummary:
    """Blank the users' image URLs in the stored partitions, CSVs and typed files of `days` (their
    manifests' SHA-256 follows; with `settings`, the card and release.json are restated); nothing else
    in the files changes. The caller audits and updates the record. A dry run is the same code with a
    recording sink."""
    sink: Sink = Recording() if dry_run else WRITES
    store = PartitionStore(storage, sink)
    found: dict[str, dict[str, int]] = {}
    for kind, column in IMAGE_KINDS.items():
        whose = user_ids if column == "user_id" else pseudonyms

        def blank(frame: pl.DataFrame, column: str = column, whose: pl.Series = whose) -> tuple[pl.DataFrame, int]:
            return blank_in_frame(frame, column, whose) if IMAGE_URL_COLUMN in frame.columns else (frame, 0)

        found[kind] = store.update(kind, days, blank)
    found[AssetName.TRAINING_CSV] = TrainingExports(exports, sink, settings).blank_image_urls(csv_pseudonyms, days)
    by_partition: dict[str, dict[str, int]] = {kind: dict(sorted(found[kind].items())) for kind in IMAGE_ROW_KINDS}
    return BlankingSummary(
        subjects=user_ids.n_unique(),
        partitions=sorted({day for by_day in by_partition.values() for day in by_day}),
        blanked_by_partition=by_partition,
        dry_run=dry_run,
        audit_entry_id=None if dry_run else uuid.uuid4().hex,
    )


def audit_blanking(
    storage: Storage, at: str, run_id: str, hmac_key_id: str, summary: BlankingSummary, sink: Sink = WRITES
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
    append_audit_entry(storage, entry, sink)
    return entry
