"""The training CSV's cells (docs/contract.md, section 4) as pure Polars functions: the settings that
shape them, the spreadsheet escape, the truncated times, the file's order, and, for the typed export
(docs/ml.md), the sources each row carries beside its cells. No Dagster here; nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from feedback_assets.pseudonyms import scoped_pseudonyms
from feedback_assets.schemas import IMAGE_URL_COLUMN, TEXT_COLUMNS, TRAINING_COLUMNS
from feedback_assets.settings import PseudonymScope, TimestampPrecision
from feedback_assets.transforms import TIMESTAMP_FORMAT, nul_free

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def starts_like_formula(text: pl.Expr) -> pl.Expr:
    """Whether a spreadsheet would run the text as a formula (null for null)."""
    return pl.any_horizontal(text.str.starts_with(prefix) for prefix in FORMULA_PREFIXES)


def escape_formula(text: pl.Expr) -> pl.Expr:
    """Prefix a quote to text a spreadsheet would run as a formula (OWASP CSV injection advice)."""
    return quoted_if(text, starts_like_formula(text))


def quoted_if(text: pl.Expr, formula: pl.Expr) -> pl.Expr:
    """`escape_formula` of text whose `starts_like_formula` is already known."""
    return pl.when(formula).then(pl.lit("'") + text).otherwise(text)


TRUNCATIONS: dict[TimestampPrecision, str | None] = {
    "microsecond": None,
    "second": "1s",
    "minute": "1m",
    "hour": "1h",
    "day": "1d",
}


@dataclass(frozen=True)
class CsvFormat:
    """The settings that shape the CSV's cells (docs/contract.md, section 4)."""

    include_image_urls: bool = False
    timestamp_precision: TimestampPrecision = "day"
    pseudonym_scope: PseudonymScope = "stable"
    hmac_key: bytes = field(default=b"", repr=False)

    @property
    def columns(self) -> list[str]:
        return [*TRAINING_COLUMNS, IMAGE_URL_COLUMN] if self.include_image_urls else list(TRAINING_COLUMNS)


def truncated_time(timestamp: pl.Expr, precision: TimestampPrecision) -> pl.Expr:
    """A timestamp truncated to `precision`, as a timestamp."""
    every = TRUNCATIONS[precision]
    return timestamp if every is None else timestamp.dt.truncate(every)


def exported_time(timestamp: pl.Expr, precision: TimestampPrecision) -> pl.Expr:
    """A timestamp truncated to `precision`, in the CSV's text form (always six fractional digits)."""
    return time_text(truncated_time(timestamp, precision))


def time_text(truncated: pl.Expr) -> pl.Expr:
    """`exported_time` of a timestamp already truncated."""
    return truncated.dt.strftime(TIMESTAMP_FORMAT)


def sort_by_cells(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows ordered by what the file shows and nothing else: feedback_created_at as exported,
    recommendation_id, analysis_hash, then the other columns in order, each compared as its cell's
    text (an empty cell first). Rows that tie are equal in every cell, so any order of them gives the
    same bytes; and no hidden value, such as the time before truncation, leaks through a row's place."""
    return rows.sort(_cell_order(rows.columns))


def _cell_order(columns: Sequence[str]) -> list[pl.Expr]:
    leading = ["feedback_created_at", "recommendation_id", "analysis_hash"]
    order = [*leading, *(name for name in columns if name not in leading)]
    return [pl.col(name).cast(pl.String).fill_null("") for name in order]


# Beside the cells, for the typed export (docs/ml.md): each row's split, drawn from the stable
# pseudonym that a scoped `analysis_hash` no longer is; each text before the spreadsheet escape, and
# whether the escape changed it; and each time as truncated before it became text (parsing the text
# back cost 0.04 CPU seconds per 33 days). A small split rather than the 64-character pseudonym, and
# flags rather than the texts in the slice's sort: the sort's keys and the columns it carries cost
# CPU seconds and memory on the path every day takes.
SPLIT_COLUMN = "__split"
EXPORTED_TIMES = ("feedback_created_at", "analysis_created_at")

# The split of each stable pseudonym, in their order: how the typed export draws (day_files.DayFormats).
SplitsOf = Callable[[pl.Series], pl.Series]


def escaped(name: str) -> str:
    return f"__escaped_{name}"


def unescaped(name: str) -> str:
    return f"__unescaped_{name}"


def untexted(name: str) -> str:
    return f"__untexted_{name}"


def escape_columns(csv_format: CsvFormat) -> list[str]:
    """Whether the escape changed each text. They order rows that tie on every cell: a text the escape
    changed and one that already read so are one cell. Nothing else of `source_columns` needs to:
    rows equal in every cell have one stable pseudonym, so one split, and the same times."""
    return [escaped(name) for name in csv_format.columns if name in TEXT_COLUMNS]


def source_columns(csv_format: CsvFormat) -> list[str]:
    """The columns `splits` adds after the cells: the split, `escape_columns`, each text before the
    escape, each time as truncated."""
    texts = [unescaped(name) for name in csv_format.columns if name in TEXT_COLUMNS]
    return [SPLIT_COLUMN, *escape_columns(csv_format), *texts, *(untexted(name) for name in EXPORTED_TIMES)]


def _cells(deduplicated: pl.DataFrame, csv_format: CsvFormat, splits: SplitsOf | None = None) -> pl.DataFrame:
    """The kept rows' cells as the file shows them, in the CSV's columns, after their `partition`;
    with `splits`, followed by `source_columns`."""
    columns = csv_format.columns
    text = [name for name in columns if name in TEXT_COLUMNS]
    kept = deduplicated.filter(pl.col("kept"))
    texts = nul_free(kept, text)
    pseudonyms = scoped_pseudonyms(kept, csv_format.pseudonym_scope, csv_format.hmac_key)
    if splits is None:
        # Every expression of one with_columns sees the input: the times and texts here are the sources'.
        return kept.with_columns(
            pseudonyms,
            *(exported_time(pl.col(name), csv_format.timestamp_precision) for name in EXPORTED_TIMES),
            *(escape_formula(cells).alias(name) for name, cells in texts.items()),
        ).select("partition", *columns)
    # The sources first, then the cells made from them: each text's formula test and each time's
    # truncation done once for both (33 days: 0.38 to 0.32 CPU seconds).
    sources = kept.with_columns(
        splits(kept["analysis_hash"]).alias(SPLIT_COLUMN),
        *(starts_like_formula(c).alias(escaped(n)) for n, c in texts.items()),
        *(c.alias(unescaped(n)) for n, c in texts.items()),
        *(truncated_time(pl.col(n), csv_format.timestamp_precision).alias(untexted(n)) for n in EXPORTED_TIMES),
        pseudonyms,
    )
    return sources.with_columns(
        *(time_text(pl.col(untexted(name))).alias(name) for name in EXPORTED_TIMES),
        *(quoted_if(pl.col(unescaped(name)), pl.col(escaped(name))).alias(name) for name in texts),
    ).select("partition", *columns, *source_columns(csv_format))


def training_rows(deduplicated: pl.DataFrame, csv_format: CsvFormat) -> pl.DataFrame:
    """The exported rows in the CSV's column order, formats and sort order (docs/contract.md, section 4).

    Deduplication happened before, on the full-precision times; only the exported cells are truncated.
    """
    return sort_by_cells(_cells(deduplicated, csv_format).drop("partition"))


def training_rows_by_day(
    deduplicated: pl.DataFrame, csv_format: CsvFormat, days: Sequence[str], *, splits: SplitsOf | None = None
) -> dict[str, pl.DataFrame]:
    """`training_rows` of each of `days` (YYYY-MM-DD), made in one pass over all their rows: a
    slice's days formatted and sorted together cost a fraction of one call per day. With `splits`,
    each row also carries `source_columns`, its split drawn for the whole slice at once; rows that
    tie on every cell are then ordered by their escapes too, so the typed file's order is fixed while
    the CSV's bytes stay the same."""
    cells = _cells(deduplicated, csv_format, splits)
    hidden = [pl.col(name).fill_null(False) for name in escape_columns(csv_format)] if splits is not None else []
    ordered = cells.sort([pl.col("partition"), *_cell_order(csv_format.columns), *hidden])
    parts = {key.isoformat(): part for (key,), part in ordered.partition_by("partition", as_dict=True).items()}
    empty = ordered.clear().drop("partition")
    return {day: parts[day].drop("partition") if day in parts else empty for day in days}
