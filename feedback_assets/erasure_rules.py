"""What erasing a subject leaves in each kind of file, as pure functions on frames, statistics and
bytes (docs/privacy.md, "Erasure"); erasure.py applies them to the stored and exported files."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from feedback_assets import k_anonymity, transforms
from feedback_assets.schemas import IMAGE_URL_COLUMN
from feedback_assets.settings import SENSITIVE_ATTRIBUTE
from feedback_assets.splits import SplitName
from feedback_assets.training_csv import csv_bytes
from feedback_assets.typed_export import csv_text

_SPLIT_LABEL = "__split"


@dataclass(frozen=True)
class CsvErasure:
    """A training CSV after erasure: its new bytes and what changed."""

    data: bytes
    rows: int
    removed: int
    suppressed: int


@dataclass(frozen=True)
class Suppression:
    """FEEDBACK_K_ANONYMITY_SUPPRESS in effect: groups below `threshold` over these columns are dropped."""

    threshold: int
    quasi_identifiers: tuple[str, ...]


# The pseudonyms of the erased users as a day's file spells them (they differ by day with a
# pseudonym scope other than `stable`).
CsvPseudonyms = Callable[[str], pl.Series]


def is_erased(column: str, erased: pl.Series) -> pl.Expr:
    """True where `column` holds one of `erased`; false, not null, where the column is null."""
    return pl.col(column).is_in(erased.implode()).fill_null(False)


def without_erased(frame: pl.DataFrame, column: str, erased: pl.Series) -> pl.DataFrame:
    """The rows of `frame` whose `column` is not among `erased` (rows with a null there stay)."""
    return frame.filter(~is_erased(column, erased))


def anonymized_stats_after(stats: Mapping[str, int], window_rows_left: int) -> dict[str, int]:
    """anonymized_pairs statistics once `window_rows_left` eligible rows remain; the others are excluded (erased)."""
    # Derived from what the file still holds rather than from what this run removed, so a re-run
    # after a crash between the statistics and the file does not count the same rows twice.
    gone = stats["anonymized_records"] - window_rows_left
    return {
        **stats,
        "anonymized_records": window_rows_left,
        "excluded_records": stats["excluded_records"] + gone,
        "excluded_erased": stats["excluded_erased"] + gone,
    }


def deduplicated_stats_after(stats: Mapping[str, int], remaining: pl.DataFrame, partition: str) -> dict[str, int]:
    """deduplicated_pairs statistics recomputed from the rows of `partition` that remain."""
    return {**stats, **transforms.dedupe_counts(remaining, [partition])[partition]}


def erase_from_csv(data: bytes, pseudonyms: pl.Series, suppression: Suppression | None) -> CsvErasure:
    """The training CSV without the rows of `pseudonyms`, byte for byte as the pipeline writes it.

    The file is its own source: it only ever loses rows, whatever the intermediates hold now. With
    `suppression`, groups that the erasure leaves too small are
    suppressed too, which gives the same rows as suppressing the day's rows afresh.
    """
    rows = pl.read_csv(io.BytesIO(data), infer_schema=False)
    kept = without_erased(rows, "analysis_hash", pseudonyms)
    removed = rows.height - kept.height
    suppressed = 0
    if suppression is not None:
        kept, suppressed = k_anonymity.suppress_small_groups(kept, suppression.threshold, suppression.quasi_identifiers)
    return CsvErasure(csv_bytes(kept), kept.height, removed, suppressed)


@dataclass(frozen=True)
class TypedErasure:
    """A day's typed Parquet after erasure: every split's rows, and what changed."""

    frames: dict[SplitName, pl.DataFrame]
    changed: tuple[SplitName, ...]
    removed: int
    suppressed: int

    @property
    def rows(self) -> int:
        return sum(frame.height for frame in self.frames.values())


def erase_from_typed(
    splits: Mapping[SplitName, pl.DataFrame], pseudonyms: pl.Series, suppression: Suppression | None
) -> TypedErasure:
    """A day's split files without the rows of `pseudonyms`, each in its order. With `suppression`,
    the groups the erasure leaves too small are suppressed over the day's rows of every split, as the
    CSV's rows are: the split files stay the CSV's rows, split."""
    labelled = pl.concat(
        [frame.with_columns(pl.lit(name).alias(_SPLIT_LABEL)) for name, frame in splits.items()], how="vertical"
    )
    kept = labelled.filter(~is_erased("analysis_hash", pseudonyms))
    removed, suppressed = labelled.height - kept.height, 0
    if suppression is not None:
        names = suppression.quasi_identifiers
        # Compared as the CSV shows them: two texts the spreadsheet escape makes one are one group there.
        large = kept.select(csv_text(names)).select(k_anonymity.group_size(names) >= suppression.threshold)
        before = kept.height
        kept = kept.filter(large.to_series())
        suppressed = before - kept.height
    frames = {name: kept.filter(pl.col(_SPLIT_LABEL) == name).drop(_SPLIT_LABEL) for name in splits}
    changed = tuple(name for name in splits if frames[name].height != splits[name].height)
    return TypedErasure(frames, changed, removed, suppressed)


def measured_k_and_l(frame: pl.DataFrame, quasi_identifiers: Sequence[str], typed: bool) -> dict[str, int]:
    """A day's k, l and rows as its manifest records them, from its CSV rows (as text) or typed rows."""
    columns = [*quasi_identifiers, SENSITIVE_ATTRIBUTE]
    cells = frame.select(csv_text(columns)) if typed else frame.select(columns)
    measured = k_anonymity.measure(cells, 0, quasi_identifiers)
    return {"k": measured.smallest_group, "l": measured.l_diversity, "rows": measured.rows}


def counts_from_stats(
    anonymized: Mapping[str, int], deduplicated: Mapping[str, int], rows: int, suppression: bool
) -> dict[str, int] | None:
    """The counts training_csv reports for a day of `rows` exported rows, or None if the statistics
    do not describe such a file."""
    suppressed = deduplicated["exported_records"] - rows
    counts = {**anonymized, **deduplicated, "exported_records": rows, "suppressed_records": suppressed}
    if suppressed < 0 or (suppressed and not suppression) or transforms.unaccounted_rows(counts):
        return None
    return counts


def counts_after_erasure(before: Mapping[str, int], removed: int, suppressed: int) -> dict[str, int]:
    """A manifest's counts once `removed` exported rows are erased and `suppressed` more are suppressed."""
    return {
        **before,
        "exported_records": before["exported_records"] - removed - suppressed,
        "suppressed_records": before.get("suppressed_records", 0) + suppressed,
        "anonymized_records": before["anonymized_records"] - removed,
        "excluded_records": before["excluded_records"] + removed,
        "excluded_erased": before["excluded_erased"] + removed,
    }


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
