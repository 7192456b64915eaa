"""The training CSV (docs/contract.md, section 4): a day's rows and counts, and its file and
manifest, each replaced atomically. No Dagster here."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from feedback_assets import csv_cells, k_anonymity, transforms
from feedback_assets.settings import ExportSettings
from feedback_assets.storage import Storage
from feedback_assets.storage.base import files_matching, write_bytes

TRAINING_FILE = re.compile(r"feedback_training_(\d{4})(\d{2})(\d{2})\.csv")


class StatisticsError(RuntimeError):
    """A day's counts do not add up to its rows: something upstream lost or invented a row."""


@dataclass(frozen=True)
class DayExport:
    """What one day's file holds: its rows in CSV order, and the counts its manifest reports."""

    rows: pl.DataFrame
    counts: dict[str, int]


def csv_format_of(settings: ExportSettings) -> csv_cells.CsvFormat:
    return csv_cells.CsvFormat(
        include_image_urls=settings.include_image_urls,
        timestamp_precision=settings.timestamp_precision,
        pseudonym_scope=settings.pseudonym_scope,
        hmac_key=settings.hmac_key,
    )


def export_day(
    partition: str,
    rows: pl.DataFrame,
    upstream_counts: Mapping[str, int],
    *,
    suppress_below: int | None,
    quasi_identifiers: Sequence[str],
) -> DayExport:
    """The day's CSV rows (`csv_cells.training_rows`), small groups suppressed when `suppress_below`
    is a threshold, and its counts: `upstream_counts` (anonymized_pairs' and deduplicated_pairs'
    statistics) with the suppressed rows moved out of exported_records. Fails unless every feedback
    row is counted once."""
    suppressed = 0
    if suppress_below is not None:
        rows, suppressed = k_anonymity.suppress_small_groups(rows, suppress_below, quasi_identifiers)
    counts = {**upstream_counts, "suppressed_records": suppressed}
    counts["exported_records"] -= suppressed
    if counts["exported_records"] != rows.height or transforms.unaccounted_rows(counts):
        raise StatisticsError(
            f"statistics of {partition} do not add up: {counts} with {rows.height} rows to export; "
            f"materialize the whole graph for {partition} again"
        )
    return DayExport(rows, counts)


def csv_name(partition: str) -> str:
    return f"feedback_training_{partition.replace('-', '')}.csv"


def training_files(exports: Storage) -> dict[str, str]:
    """The names of the exported training CSVs by day (YYYY-MM-DD), oldest first; temporary files never match."""
    return {"-".join(match.groups()): name for name, match in files_matching(exports, TRAINING_FILE)}


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


def manifest_name(partition: str) -> str:
    return f"feedback_training_{partition.replace('-', '')}.manifest.json"


def manifest_bytes(csv_name: str, data: bytes, row_count: int, facts: Mapping[str, object]) -> bytes:
    manifest = {"csv": csv_name, "row_count": row_count, "sha256": hashlib.sha256(data).hexdigest(), **facts}
    return json.dumps(manifest, sort_keys=True, indent=2).encode() + b"\n"


def write_training_csv(exports: Storage, partition: str, rows: pl.DataFrame, facts: Mapping[str, object]) -> str:
    """Write the day's CSV, then its manifest (row count, SHA-256 and `facts`), each atomically.

    The manifest comes second: a manifest always describes the CSV beside it, and a reader that
    finds an older manifest beside a newer CSV sees the mismatch through the SHA-256.
    """
    exports.ensure()
    name = csv_name(partition)
    data = csv_bytes(rows)
    write_bytes(exports, name, data)
    write_bytes(exports, manifest_name(partition), manifest_bytes(name, data, rows.height, facts))
    return name
