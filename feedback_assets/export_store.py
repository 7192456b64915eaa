"""The export dir's training CSVs and their manifests as erasure and withdrawal change them: each
day's file loses rows or image URLs, and its manifest is restated to match (docs/privacy.md). Every
change goes to the store's sink, so a dry run is this same code with a recording sink. No Dagster here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping

import polars as pl

from feedback_assets.asset_names import AssetName
from feedback_assets.erasure_rules import (
    CsvErasure,
    CsvPseudonyms,
    Suppression,
    blank_in_csv,
    counts_after_erasure,
    erase_from_csv,
    is_erased,
)
from feedback_assets.files import reading, rematerialize_command
from feedback_assets.storage import Storage
from feedback_assets.storage.base import WRITES, Sink, read_text, write_bytes
from feedback_assets.training_csv import manifest_bytes, manifest_name, training_files

# The counts training_csv reports for a day of so many exported rows, from the intermediates'
# statistics as erasure leaves them; None when they do not describe such a file.
CountsOf = Callable[[str, int], dict[str, int] | None]


def _rebuild(day: str) -> str:
    return f"rebuild it with {rematerialize_command(AssetName.TRAINING_CSV, day)}"


def _repair(day: str) -> str:
    return f"{_rebuild(day)}, then run erase_subjects again"


def _rewritten_manifest(
    old: Mapping[str, object], csv_name: str, erasure: CsvErasure, stats_counts: dict[str, int] | None
) -> bytes | None:
    """The manifest for the erased CSV, or None when nothing in it changes."""
    counts = stats_counts
    if counts is None and isinstance(old.get("counts"), dict):
        # The intermediates are gone or describe another file: adjust the counts the manifest had.
        counts = counts_after_erasure(old["counts"], erasure.removed, erasure.suppressed)  # type: ignore[arg-type]
    if not erasure.removed and counts == old.get("counts"):
        return None
    facts = {k: v for k, v in old.items() if k not in ("csv", "row_count", "sha256")}
    if counts is not None:
        facts["counts"] = counts
    if erasure.removed:
        previously = old.get("erased_after_export", 0)
        facts["erased_after_export"] = (previously if isinstance(previously, int) else 0) + erasure.removed
    return manifest_bytes(csv_name, erasure.data, erasure.rows, facts)


class TrainingExports:
    def __init__(self, exports: Storage, sink: Sink = WRITES) -> None:
        self.exports = exports
        self.sink = sink

    def _holds(self, name: str, day: str, pseudonyms: pl.Series) -> bool:
        """Whether the day's CSV holds a row of `pseudonyms`, from a scan of that one column."""
        with reading(self.exports.location(name), _repair(day)):
            scan = self.exports.scan_csv([name]).select(is_erased("analysis_hash", pseudonyms).sum())
            return bool(scan.collect().item())

    def erase(
        self,
        pseudonyms: CsvPseudonyms,
        suppression: Suppression | None,
        counts_of: CountsOf,
        days: Collection[str] | None = None,
        restated: Collection[str] = (),
    ) -> dict[str, int]:
        """Remove the rows of `pseudonyms(day)` from the CSVs of `days` (None: every day) and restate
        their manifests, and those of the `restated` days, whose statistics changed although their
        CSV may not have (an erased duplicate): rows removed by changed day, 0 for a day whose
        manifest alone changes. A CSV holding none of the rows is only scanned for one column."""
        removed: dict[str, int] = {}
        for day, name in training_files(self.exports).items():
            if days is not None and day not in days and day not in restated:
                continue
            if day not in restated and not self._holds(name, day, pseudonyms(day)):
                continue
            data = self.exports.read_bytes(name)
            with reading(self.exports.location(name), _repair(day)):
                erasure = erase_from_csv(data, pseudonyms(day), suppression)
            if erasure.removed:
                write_bytes(self.exports, name, erasure.data, sink=self.sink)
                removed[day] = erasure.removed
            elif day in restated:
                # The file stays as it is, whatever suppression would make of it now; only its counts change.
                erasure = CsvErasure(data, erasure.rows + erasure.suppressed, removed=0, suppressed=0)
            else:
                continue
            manifest = manifest_name(day)
            if self.exports.exists(manifest):
                with reading(self.exports.location(manifest), _repair(day)):
                    written = json.loads(read_text(self.exports, manifest))
                rewritten = _rewritten_manifest(written, name, erasure, counts_of(day, erasure.rows))
                if rewritten is not None:
                    write_bytes(self.exports, manifest, rewritten, sink=self.sink)
                    # A day whose manifest alone changes is still a changed day of training_csv.
                    removed.setdefault(day, 0)
        return removed

    def blank_image_urls(self, pseudonyms: CsvPseudonyms, days: Collection[str]) -> dict[str, int]:
        """Blank the image URLs of `pseudonyms(day)`'s rows in the CSVs of `days`, their manifests'
        SHA-256 following; image URLs blanked by changed day."""
        csv_files, blanked_by_day = training_files(self.exports), {}
        for day in sorted(set(days) & set(csv_files)):
            name = csv_files[day]
            data = self.exports.read_bytes(name)
            with reading(self.exports.location(name), _rebuild(day)):
                new, blanked = blank_in_csv(data, pseudonyms(day))
            if blanked:
                blanked_by_day[day] = blanked
                write_bytes(self.exports, name, new, sink=self.sink)
                self._restate_manifest(day, name, new, blanked)
        return blanked_by_day

    def _restate_manifest(self, day: str, csv_name: str, data: bytes, blanked: int) -> None:
        """The manifest of a CSV whose image URLs were blanked: same rows and counts, its new SHA-256."""
        name = manifest_name(day)
        if not self.exports.exists(name):
            return
        with reading(self.exports.location(name), _rebuild(day)):
            old: dict[str, object] = json.loads(read_text(self.exports, name))
            row_count = old["row_count"]
            if not isinstance(row_count, int):
                raise ValueError("row_count is not a number")
        facts = {k: v for k, v in old.items() if k not in ("csv", "row_count", "sha256")}
        previously = old.get("image_urls_blanked_after_export", 0)
        facts["image_urls_blanked_after_export"] = (previously if isinstance(previously, int) else 0) + blanked
        write_bytes(self.exports, name, manifest_bytes(csv_name, data, row_count, facts), sink=self.sink)
