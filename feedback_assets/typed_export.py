"""The typed Parquet of a day (issue 25; docs/ml.md): the CSV's rows with their cells as proper types,
one file per day and split, `parquet/<split>/feedback_training_YYYYMMDD.parquet`. No Dagster here.

Made from the frame the CSV writer writes (`csv_cells.training_rows`, or a CSV read back as text),
so the Parquet holds what the CSV says and nothing more: the same rows in the same order, the
timestamps as truncated, empty text as empty (null) as the CSV shows it, and the spreadsheet escape
taken off.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from typing import Final

import polars as pl

from feedback_assets.csv_cells import EXPORTED_TIMES, FORMULA_PREFIXES, escape_formula
from feedback_assets.schemas import IMAGE_URL_COLUMN, TEXT_COLUMNS, TRAINING_COLUMNS, UTC_US
from feedback_assets.splits import SPLIT_NAMES, SplitName
from feedback_assets.storage import Storage
from feedback_assets.storage.base import files_matching, write_bytes
from feedback_assets.transforms import TIMESTAMP_FORMAT

# The export is for the ML team's disk and downloads, read many times: zstd, unlike the intermediates' LZ4.
TYPED_COMPRESSION: Final = "zstd"
# Level 1, not Polars' default: 33 days of the benchmark year's train files encoded in 0.18 CPU seconds
# against 0.28, and 10.0 MB against 10.2 (the 64-character pseudonyms, which no level compresses,
# are three quarters of the bytes).
TYPED_COMPRESSION_LEVEL: Final = 1
# No column statistics: a file is one day of one split, one row group, so its name and folder already
# say what a reader filtering on the day or split would skip, and the statistics were a quarter of
# the encoding (33 days' files of every split: 0.23 CPU seconds without them against 0.32).
TYPED_STATISTICS: Final = False
PARQUET_DIR: Final = "parquet"
TYPED_FILE: Final = re.compile(r"feedback_training_(\d{4})(\d{2})(\d{2})\.parquet")

# The columns' types as the app means them (schemas.py: the ratings are smallints), times in UTC.
TYPED_SCHEMA: Final = pl.Schema(
    {
        "analysis_hash": pl.String(),
        "recommendation_id": pl.String(),
        "helpful_rating": pl.Int16(),
        "product_satisfaction": pl.Int16(),
        "routine_completion_pct": pl.Int16(),
        "would_recommend": pl.Boolean(),
        "conditions": pl.String(),
        "rules_applied": pl.String(),
        "timeframe": pl.String(),
        "age_range": pl.String(),
        "feedback_created_at": UTC_US,
        "analysis_created_at": UTC_US,
    }
)
TYPED_IMAGE_SCHEMA: Final = pl.Schema({**TYPED_SCHEMA, IMAGE_URL_COLUMN: pl.String()})


def typed_schema(include_image_urls: bool) -> pl.Schema:
    return TYPED_IMAGE_SCHEMA if include_image_urls else TYPED_SCHEMA


def unescape_formula(text: pl.Expr) -> pl.Expr:
    """The text before `csv_cells.escape_formula`: a leading `'` before a formula's first character
    removed. A source text that itself began with `'` and such a character reads the same in the CSV,
    and loses its `'` here too, unless the cells are taken before the escape (docs/ml.md, "Types")."""
    escaped = pl.any_horizontal(text.str.starts_with("'" + prefix) for prefix in FORMULA_PREFIXES)
    return pl.when(escaped).then(text.str.slice(1)).otherwise(text)


def _as_text(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.String)


def _typed(name: str, dtype: pl.DataType, escaped: bool, given: pl.DataType) -> pl.Expr:
    """One column of the CSV's frame, typed; the cells are parsed strictly, so a cell the CSV could not
    hold in this type fails rather than becoming null. A column the frame already holds as numbers or
    booleans (as `csv_cells.training_rows` makes them) or as times (as `day_files.typed_day` takes
    them) is cast, not written out and parsed again."""
    if dtype != pl.String and given != pl.String:
        return pl.col(name).cast(dtype, strict=True).alias(name)
    if name in TEXT_COLUMNS and escaped:
        cells = unescape_formula(pl.col(name))
    elif dtype == pl.String:
        cells = pl.col(name)
    elif dtype == pl.Boolean:
        return (
            _as_text(name)
            .replace({"": None})
            .replace_strict({"true": True, "false": False}, return_dtype=pl.Boolean)
            .alias(name)
        )
    elif name in EXPORTED_TIMES:
        return _as_text(name).replace({"": None}).str.strptime(UTC_US, TIMESTAMP_FORMAT, strict=True).alias(name)
    else:
        return _as_text(name).replace({"": None}).cast(dtype, strict=True).alias(name)
    # A missing value and an empty text are one empty cell in the CSV (docs/contract.md, section 4).
    return pl.when(cells == "").then(None).otherwise(cells).cast(pl.String).alias(name)


def typed_rows(csv_rows: pl.DataFrame, *, escaped: bool = True) -> pl.DataFrame:
    """The typed frame of a day's CSV rows: integers, a boolean, UTC datetimes, text without the
    spreadsheet escape; the same rows in the same order. `csv_rows` has the CSV's 12 columns (13 with
    `image_url`) in its order, typed as `csv_cells.training_rows` makes them (or with the times as
    truncated timestamps, as `day_files.typed_day` gives them) or all text.
    `escaped=False` takes cells the escape has not been applied to, whose text is then exact."""
    columns = list(csv_rows.columns)
    expected = [*TRAINING_COLUMNS, IMAGE_URL_COLUMN][: len(columns)]
    if columns != expected or len(columns) not in (len(TRAINING_COLUMNS), len(TRAINING_COLUMNS) + 1):
        raise ValueError(f"not the training CSV's columns: {columns}")
    schema = typed_schema(IMAGE_URL_COLUMN in columns)
    return csv_rows.select(_typed(name, dtype, escaped, csv_rows.schema[name]) for name, dtype in schema.items())


def csv_text(names: Sequence[str]) -> list[pl.Expr]:
    """Typed columns `names` as the CSV spells their cells, the inverse of `typed_rows` (a missing
    value stays missing): a measure over a day exported as Parquet alone groups its rows as it would
    the CSV's."""
    spelled = []
    for name in names:
        column = pl.col(name)
        if name in EXPORTED_TIMES:
            column = column.dt.strftime(TIMESTAMP_FORMAT)
        elif name in TEXT_COLUMNS:
            column = escape_formula(column)
        spelled.append(column.cast(pl.String).alias(name))
    return spelled


def parquet_name(split: SplitName, partition: str) -> str:
    """The day's file of one split, relative to the export dir: parquet/<split>/feedback_training_YYYYMMDD.parquet."""
    return f"{PARQUET_DIR}/{split}/feedback_training_{partition.replace('-', '')}.parquet"


def write_typed_parquet(exports: Storage, name: str, typed: pl.DataFrame) -> str:
    """Write one typed file atomically (a reader sees the old file or the whole new one), zstd, its
    directory made with the export dir's mode; the SHA-256 of what was written, for the manifest."""
    folder, _, file_name = name.rpartition("/")
    directory = exports / folder if folder else exports
    directory.ensure()
    data = typed_bytes(typed)
    write_bytes(directory, file_name, data)
    return hashlib.sha256(data).hexdigest()


def typed_bytes(typed: pl.DataFrame) -> bytes:
    """A typed file's bytes, encoded in memory (a day's split is small): Polars' writer reports a full
    or read-only disk only as the text of a ComputeError, while a plain write raises the OSError the
    storage explains."""
    buffer = io.BytesIO()
    typed.write_parquet(
        buffer,
        compression=TYPED_COMPRESSION,
        compression_level=TYPED_COMPRESSION_LEVEL,
        statistics=TYPED_STATISTICS,
    )
    return buffer.getvalue()


def typed_files(exports: Storage) -> dict[str, dict[SplitName, str]]:
    """The typed files by day (YYYY-MM-DD), oldest first, each split's name relative to `exports`;
    temporary files never match."""
    found: dict[str, dict[SplitName, str]] = {}
    for split in SPLIT_NAMES:
        for name, match in files_matching(exports / PARQUET_DIR / split, TYPED_FILE):
            found.setdefault("-".join(match.groups()), {})[split] = f"{PARQUET_DIR}/{split}/{name}"
    return dict(sorted(found.items()))


def split_frames(typed: pl.DataFrame, splits: pl.Series, names: Sequence[SplitName]) -> dict[SplitName, pl.DataFrame]:
    """The typed rows of each split of `names`, each in the day's order; a split without rows gets an
    empty frame, so every split has its file for every day."""
    return {name: typed.filter(splits == name) for name in names}
