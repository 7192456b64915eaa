"""Writing the training CSV (CONTRACT section 4): one file per day, replaced atomically."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from feedback_assets.files import ensure_dir, write_bytes_atomically

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


def manifest_path(export_dir: Path, partition: str) -> Path:
    return export_dir / f"feedback_training_{partition.replace('-', '')}.manifest.json"


def manifest_bytes(csv_name: str, data: bytes, row_count: int, facts: Mapping[str, object]) -> bytes:
    manifest = {"csv": csv_name, "row_count": row_count, "sha256": hashlib.sha256(data).hexdigest(), **facts}
    return json.dumps(manifest, sort_keys=True, indent=2).encode() + b"\n"


def write_training_csv(export_dir: Path, partition: str, rows: pl.DataFrame, facts: Mapping[str, object]) -> Path:
    """Write the day's CSV, then its manifest (row count, SHA-256 and `facts`), each atomically.

    The manifest comes second: a manifest always describes the CSV beside it, and a reader that
    finds an older manifest beside a newer CSV sees the mismatch through the SHA-256.
    """
    ensure_dir(export_dir, EXPORT_DIR_MODE)
    path = csv_path(export_dir, partition)
    data = csv_bytes(rows)
    write_bytes_atomically(path, data, EXPORT_FILE_MODE)
    write_bytes_atomically(
        manifest_path(export_dir, partition), manifest_bytes(path.name, data, rows.height, facts), EXPORT_FILE_MODE
    )
    return path
