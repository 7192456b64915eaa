"""Writing the training CSV (CONTRACT section 4): one file per day, replaced atomically."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from feedback_assets.files import write_bytes_atomically

EXPORT_DIR_MODE = 0o750
EXPORT_FILE_MODE = 0o640


def csv_path(export_dir: Path, partition: str) -> Path:
    return export_dir / f"feedback_training_{partition.replace('-', '')}.csv"


def csv_bytes(rows: pl.DataFrame) -> bytes:
    """UTF-8, header row, RFC 4180 quoting; empty text is written as an empty cell."""
    buffer = io.BytesIO()
    blank_text = [
        pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c)
        for c, t in rows.schema.items()
        if t == pl.String
    ]
    rows.with_columns(blank_text).write_csv(buffer, quote_style="necessary", line_terminator="\n")
    return buffer.getvalue()


def write_training_csv(export_dir: Path, partition: str, rows: pl.DataFrame) -> Path:
    export_dir.mkdir(parents=True, exist_ok=True, mode=EXPORT_DIR_MODE)
    path = csv_path(export_dir, partition)
    write_bytes_atomically(path, csv_bytes(rows), EXPORT_FILE_MODE)
    return path
