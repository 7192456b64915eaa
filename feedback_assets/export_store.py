"""The export dir's training CSVs, typed Parquet files and manifests as erasure and withdrawal change
them: each day's files lose rows or image URLs, its manifest is restated to match, and then the dataset
card and release.json (docs/privacy.md, docs/ml.md). Every change goes to the store's sink, so a dry run
is this same code with a recording sink. No Dagster here.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Collection, Mapping

import polars as pl

from feedback_assets.asset_names import AssetName
from feedback_assets.day_files import MANIFEST_PARQUET, MANIFEST_SPLIT_COUNTS
from feedback_assets.erasure_rules import (
    CsvErasure,
    CsvPseudonyms,
    Suppression,
    TypedErasure,
    blank_in_csv,
    blank_in_frame,
    counts_after_erasure,
    erase_from_csv,
    erase_from_typed,
    is_erased,
    measured_k_and_l,
)
from feedback_assets.export_release import MANIFEST_K_ANONYMITY, restate_release
from feedback_assets.files import reading, rematerialize_command
from feedback_assets.schemas import IMAGE_URL_COLUMN
from feedback_assets.settings import ExportSettings
from feedback_assets.splits import SplitName
from feedback_assets.storage import Storage
from feedback_assets.storage.base import WRITES, Sink, read_text, write_bytes
from feedback_assets.training_csv import manifest_name, training_files
from feedback_assets.typed_export import typed_bytes, typed_files

# The counts training_csv reports for a day of so many exported rows, from the intermediates'
# statistics as erasure leaves them; None when they do not describe such a file.
CountsOf = Callable[[str, int], dict[str, int] | None]


def _rebuild(day: str) -> str:
    return f"rebuild it with {rematerialize_command(AssetName.TRAINING_CSV, day)}"


def _repair(day: str) -> str:
    return f"{_rebuild(day)}, then run erase_subjects again"


def _restated(
    old: Mapping[str, object],
    csv_name: str | None,
    csv: CsvErasure | None,
    typed: TypedErasure | None,
    stats_counts: dict[str, int] | None,
    typed_sha256: Mapping[SplitName, str] | None = None,
) -> dict[str, object] | None:
    """The manifest of the erased day (`csv` and `typed` the files that changed, at least one, and
    `typed_sha256` the SHA-256 of each typed file rewritten, by split), or None when nothing in it changes."""
    erasure: CsvErasure | TypedErasure | None = csv if csv is not None else typed
    if erasure is None:
        return None
    counts = stats_counts
    if counts is None and isinstance(old.get("counts"), dict):
        # The intermediates are gone or describe another file: adjust the counts the manifest had.
        counts = counts_after_erasure(old["counts"], erasure.removed, erasure.suppressed)  # type: ignore[arg-type]
    if not erasure.removed and typed is None and counts == old.get("counts"):
        return None
    manifest = dict(old)
    if counts is not None:
        manifest["counts"] = counts
    if erasure.removed:
        previously = old.get("erased_after_export", 0)
        manifest["erased_after_export"] = (previously if isinstance(previously, int) else 0) + erasure.removed
    if csv is not None:
        manifest.update(csv=csv_name, row_count=csv.rows, sha256=hashlib.sha256(csv.data).hexdigest())
    if typed is not None:
        if csv is None and old.get("csv") is None:
            manifest["row_count"] = typed.rows
        manifest[MANIFEST_SPLIT_COUNTS] = {name: frame.height for name, frame in typed.frames.items()}
        listed = old.get(MANIFEST_PARQUET)
        if isinstance(listed, list):
            manifest[MANIFEST_PARQUET] = [
                {**_with_sha256(entry, typed_sha256 or {}), "rows": typed.frames[entry["split"]].height}
                for entry in listed
            ]
    return manifest


def _with_sha256(entry: Mapping[str, object], typed_sha256: Mapping[SplitName, str]) -> dict[str, object]:
    """A manifest's entry of a typed file, with the SHA-256 of the file as rewritten if it was."""
    rewritten = next((sha256 for split, sha256 in typed_sha256.items() if split == entry.get("split")), None)
    return {**entry, "sha256": rewritten} if rewritten is not None else dict(entry)


def _manifest_bytes(manifest: Mapping[str, object]) -> bytes:
    return json.dumps(manifest, sort_keys=True, indent=2).encode() + b"\n"


class TrainingExports:
    """The export dir's day files. With `settings`, an erasure or withdrawal that changes a day also
    restates the day's measured k and l, the dataset card and release.json (export_release.py)."""

    def __init__(self, exports: Storage, sink: Sink = WRITES, settings: ExportSettings | None = None) -> None:
        self.exports = exports
        self.sink = sink
        self.settings = settings

    def _holds(self, names: list[str], day: str, pseudonyms: pl.Series, parquet: bool = False) -> bool:
        """Whether the day's CSV (or typed files) hold a row of `pseudonyms`, from a scan of that one column."""
        with reading(self.exports.location(names[0]), _repair(day)):
            scan = self.exports.scan_parquet(names) if parquet else self.exports.scan_csv(names)
            return bool(scan.select(is_erased("analysis_hash", pseudonyms).sum()).collect().item())

    def _read_typed(self, day: str, files: Mapping[SplitName, str]) -> dict[SplitName, pl.DataFrame]:
        with reading(self.exports.location(next(iter(files.values()))), _repair(day)):
            return {split: pl.read_parquet(io.BytesIO(self.exports.read_bytes(name))) for split, name in files.items()}

    def _erase_csv(
        self, day: str, name: str | None, pseudonyms: pl.Series, suppression: Suppression | None, restated: bool
    ) -> CsvErasure | None:
        """The day's CSV without the rows, written; None when it neither changes nor is restated."""
        if name is None or (not restated and not self._holds([name], day, pseudonyms)):
            return None
        data = self.exports.read_bytes(name)
        with reading(self.exports.location(name), _repair(day)):
            erasure = erase_from_csv(data, pseudonyms, suppression)
        if erasure.removed:
            write_bytes(self.exports, name, erasure.data, sink=self.sink)
            return erasure
        if restated:
            # The file stays as it is, whatever suppression would make of it now; only its counts change.
            return CsvErasure(data, erasure.rows + erasure.suppressed, removed=0, suppressed=0)
        return None

    def _write_typed(self, name: str, frame: pl.DataFrame) -> str:
        """Write a typed file through the sink; the SHA-256 of its bytes, for its manifest."""
        data = typed_bytes(frame)
        write_bytes(self.exports, name, data, sink=self.sink)
        return hashlib.sha256(data).hexdigest()

    def _erase_typed(
        self, day: str, files: Mapping[SplitName, str], pseudonyms: pl.Series, suppression: Suppression | None
    ) -> tuple[TypedErasure, dict[SplitName, str]] | None:
        """The day's typed files without the rows, those that change written, with the SHA-256 of each
        by split; None when none holds one."""
        if not files or not self._holds(list(files.values()), day, pseudonyms, parquet=True):
            return None
        erasure = erase_from_typed(self._read_typed(day, files), pseudonyms, suppression)
        written = {
            split: self._write_typed(name, erasure.frames[split])
            for split, name in files.items()
            if split in erasure.changed
        }
        return erasure, written

    def _measured(self, csv: CsvErasure | None, typed: TypedErasure | None) -> dict[str, int] | None:
        """The day's k, l and rows after the erasure, when the settings name the quasi-identifiers."""
        if self.settings is None:
            return None
        names = self.settings.quasi_identifiers
        if typed is not None:
            return measured_k_and_l(pl.concat(list(typed.frames.values()), how="vertical"), names, typed=True)
        if csv is not None:
            return measured_k_and_l(pl.read_csv(io.BytesIO(csv.data), infer_schema=False), names, typed=False)
        return None

    def erase(
        self,
        pseudonyms: CsvPseudonyms,
        suppression: Suppression | None,
        counts_of: CountsOf,
        days: Collection[str] | None = None,
        restated: Collection[str] = (),
    ) -> dict[str, int]:
        """Remove the rows of `pseudonyms(day)` from the CSVs and typed files of `days` (None: every day)
        and restate their manifests, and those of the `restated` days, whose statistics changed although
        their files may not have (an erased duplicate): rows removed by changed day, 0 for a day whose
        manifest alone changes. A file holding none of the rows is only scanned for one column. With
        settings, the card and release.json follow once anything changed."""
        csv_files, typed = training_files(self.exports), typed_files(self.exports)
        removed: dict[str, int] = {}
        for day in sorted(csv_files.keys() | typed.keys()):
            if days is not None and day not in days and day not in restated:
                continue
            csv_name = csv_files.get(day)
            csv = self._erase_csv(day, csv_name, pseudonyms(day), suppression, day in restated)
            typed_written = self._erase_typed(day, typed.get(day, {}), pseudonyms(day), suppression)
            typed_erasure, typed_sha256 = typed_written if typed_written is not None else (None, {})
            changed = csv if csv is not None else typed_erasure
            if changed is None:
                continue
            gone = changed.removed
            if gone:
                removed[day] = gone
            manifest = manifest_name(day)
            if not self.exports.exists(manifest):
                continue
            with reading(self.exports.location(manifest), _repair(day)):
                written = json.loads(read_text(self.exports, manifest))
            rewritten = _restated(written, csv_name, csv, typed_erasure, counts_of(day, changed.rows), typed_sha256)
            if rewritten is not None:
                if (gone or typed_erasure is not None) and (measured := self._measured(csv, typed_erasure)):
                    rewritten[MANIFEST_K_ANONYMITY] = measured
                write_bytes(self.exports, manifest, _manifest_bytes(rewritten), sink=self.sink)
                # A day whose manifest alone changes is still a changed day of training_csv.
                removed.setdefault(day, 0)
        if removed:
            self._restate_release()
        return removed

    def _restate_release(self) -> None:
        if self.settings is not None:
            restate_release(self.exports, self.settings, self.sink)

    def _blank_typed(
        self, day: str, files: Mapping[SplitName, str], pseudonyms: pl.Series
    ) -> tuple[int, dict[SplitName, str]]:
        """Blank the image URLs of `pseudonyms`' rows in the day's typed files; how many, and the
        SHA-256 of each file rewritten, by split."""
        if not files or not self._holds(list(files.values()), day, pseudonyms, parquet=True):
            return 0, {}
        blanked = 0
        written: dict[SplitName, str] = {}
        for split, frame in self._read_typed(day, files).items():
            if IMAGE_URL_COLUMN not in frame.columns:
                continue
            new, found = blank_in_frame(frame, "analysis_hash", pseudonyms)
            if found:
                written[split] = self._write_typed(files[split], new)
                blanked += found
        return blanked, written

    def blank_image_urls(self, pseudonyms: CsvPseudonyms, days: Collection[str]) -> dict[str, int]:
        """Blank the image URLs of `pseudonyms(day)`'s rows in the CSVs and typed files of `days`, their
        manifests' SHA-256 following; image URLs blanked by changed day."""
        csv_files, typed = training_files(self.exports), typed_files(self.exports)
        blanked_by_day: dict[str, int] = {}
        for day in sorted(set(days) & (csv_files.keys() | typed.keys())):
            name, blanked = csv_files.get(day), 0
            new: bytes | None = None
            if name is not None:
                data = self.exports.read_bytes(name)
                with reading(self.exports.location(name), _rebuild(day)):
                    new, blanked = blank_in_csv(data, pseudonyms(day))
                if blanked:
                    write_bytes(self.exports, name, new, sink=self.sink)
            typed_blanked, typed_sha256 = self._blank_typed(day, typed.get(day, {}), pseudonyms(day))
            if blanked or typed_blanked:
                blanked_by_day[day] = blanked or typed_blanked
                self._restate_manifest(
                    day, name if blanked else None, new if blanked else None, blanked_by_day[day], typed_sha256
                )
        if blanked_by_day:
            self._restate_release()
        return blanked_by_day

    def _restate_manifest(
        self, day: str, csv_name: str | None, data: bytes | None, blanked: int, typed_sha256: Mapping[SplitName, str]
    ) -> None:
        """The manifest of a day whose image URLs were blanked: same rows and counts, the new SHA-256 of
        its CSV and of each typed file rewritten."""
        name = manifest_name(day)
        if not self.exports.exists(name):
            return
        with reading(self.exports.location(name), _rebuild(day)):
            old: dict[str, object] = json.loads(read_text(self.exports, name))
            if not isinstance(old["row_count"], int):
                raise ValueError("row_count is not a number")
        manifest = dict(old)
        if csv_name is not None and data is not None:
            manifest.update(csv=csv_name, sha256=hashlib.sha256(data).hexdigest())
        listed = old.get(MANIFEST_PARQUET)
        if isinstance(listed, list):
            manifest[MANIFEST_PARQUET] = [_with_sha256(entry, typed_sha256) for entry in listed]
        previously = old.get("image_urls_blanked_after_export", 0)
        manifest["image_urls_blanked_after_export"] = (previously if isinstance(previously, int) else 0) + blanked
        write_bytes(self.exports, name, _manifest_bytes(manifest), sink=self.sink)
