"""The dataset card (issue 25; docs/ml.md): README.md at the export root, in the Hugging Face
dataset-card format, so `datasets.load_dataset(EXPORT_DIR)` finds the three splits, and a person
finds the schema, the privacy settings in force and the counts. A pure function of its facts: no
Dagster, nothing read or written here.

The YAML header is written by hand rather than with PyYAML, which the package does not depend on:
every value is a name, a number or a JSON string, and JSON strings are YAML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from feedback_assets.schemas import IMAGE_URL_COLUMN
from feedback_assets.splits import SPLIT_NAMES, Split, SplitName
from feedback_assets.typed_export import PARQUET_DIR, typed_schema

CARD_NAME: Final = "README.md"

# What each column means (docs/contract.md, section 4), for the card's schema table.
COLUMN_MEANINGS: Final[Mapping[str, str]] = {
    "analysis_hash": "the user's pseudonym (64 hex characters), kept for the pseudonym scope below",
    "recommendation_id": "the recommendation the feedback is about, as in the app",
    "helpful_rating": "how helpful the user found it, 1 to 5",
    "product_satisfaction": "satisfaction with the products, 1 to 5",
    "routine_completion_pct": "how much of the routine the user completed, 0 to 100",
    "would_recommend": "whether the user would recommend it",
    "conditions": "the analysis' skin conditions, lower-cased, sorted, joined with `,`",
    "rules_applied": "the recommendation rules that fired",
    "timeframe": "the recommendation's timeframe",
    "age_range": "`<18`, `18-25`, `25-35`, `35-50` or `50+`",
    "feedback_created_at": "when the feedback was given, UTC, truncated to the timestamp precision",
    "analysis_created_at": "when the analysis was made, UTC, truncated to the timestamp precision",
    IMAGE_URL_COLUMN: "the analysis' image, only for users who consented to sharing it",
}


def hf_dtype(dtype: pl.DataType) -> str:
    """The `datasets` feature type of a typed Parquet column."""
    if isinstance(dtype, pl.Datetime):
        zone = f", tz={dtype.time_zone}" if dtype.time_zone else ""
        return f"timestamp[{dtype.time_unit}{zone}]"
    names = {pl.String: "string", pl.Boolean: "bool", pl.Int16: "int16", pl.Int32: "int32", pl.Int64: "int64"}
    return names[dtype.base_type()]


@dataclass(frozen=True)
class CardFacts:
    """What the card says: the settings in force and the rows of each day's split files."""

    include_image_urls: bool
    timestamp_precision: str
    pseudonym_scope: str
    hmac_key_id: str
    k_anonymity_threshold: int
    suppress_small_groups: bool
    split: Split
    # Day (YYYY-MM-DD) -> rows of each split's file that day.
    rows_per_day: Mapping[str, Mapping[SplitName, int]]
    # The smallest group and the fewest distinct `conditions` in a group last measured (privacy.md), if ever.
    measured_k: int | None = None
    measured_l: int | None = None
    # FEEDBACK_EXPORT_FORMATS: the card speaks of the CSVs only where they are written.
    export_formats: tuple[str, ...] = ("csv", "parquet")

    def rows_per_split(self) -> dict[SplitName, int]:
        return {name: sum(day.get(name, 0) for day in self.rows_per_day.values()) for name in SPLIT_NAMES}

    @property
    def days(self) -> list[str]:
        return sorted(self.rows_per_day)


def _quoted(text: str) -> str:
    return json.dumps(text)


def front_matter(facts: CardFacts) -> list[str]:
    """The YAML header: the license placeholder, one `default` config whose `data_files` give each
    split its glob, and the features."""
    lines = [
        "---",
        "license: other",
        f"pretty_name: {_quoted('Skincare recommendation feedback, pseudonymised')}",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for name in SPLIT_NAMES:
        lines += [f"  - split: {name}", f"    path: {_quoted(f'{PARQUET_DIR}/{name}/*.parquet')}"]
    lines += ["dataset_info:", "  features:"]
    for column, dtype in typed_schema(facts.include_image_urls).items():
        lines += [f"  - name: {column}", f"    dtype: {_quoted(hf_dtype(dtype))}"]
    # No `splits` here: `datasets` wants each split's size in Arrow bytes beside its rows, and ignores
    # the field without them; the rows per split are in the card's text.
    return [*lines, "---"]


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _measured(value: int | None) -> str:
    return "not measured yet" if value is None else str(value)


def card_text(facts: CardFacts) -> str:
    """README.md of the export dir: front matter, then the layout, schema, privacy, counts and loading."""
    days = facts.days
    span = f"{days[0]} to {days[-1]}" if days else "no days yet"
    per_split = facts.rows_per_split()
    schema = typed_schema(facts.include_image_urls)
    csv = "csv" in facts.export_formats
    split_text = ", ".join(f"`{name}` {ratio:g}" for name, ratio in facts.split.ratios.items())
    lines = [
        *front_matter(facts),
        "",
        "# Skincare recommendation feedback",
        "",
        "Pseudonymised, de-duplicated feedback on the app's skincare recommendations, one row per kept",
        "feedback. Written by the `feedback_assets` pipeline; do not edit: every run and every erasure",
        "writes this card again.",
        "",
        f"Days: {span}. Rows: {sum(per_split.values())}.",
        "",
        "## Layout",
        "",
        *(["- `feedback_training_YYYYMMDD.csv`: the day's rows, every cell as text (with its manifest)."] * csv),
        f"- `{PARQUET_DIR}/<split>/feedback_training_YYYYMMDD.parquet`: the day's rows, typed, split by user.",
        "",
        "## Splits",
        "",
        f"Each user is in one split for as long as the key (id {facts.hmac_key_id}), by a keyed hash of their",
        f"stable pseudonym: {split_text} of the users. No user is in two splits, in any day, run or pseudonym scope.",
        "",
        *_table(["split", "rows"], list(per_split.items())),
        "",
        "## Schema",
        "",
        *_table(["column", "type", "meaning"], [(c, hf_dtype(t), COLUMN_MEANINGS[c]) for c, t in schema.items()]),
        "",
        "Empty text is null, as the CSV's empty cell; text that the CSV escapes against spreadsheet",
        "formulas (a leading `'`) is unescaped here.",
        "",
        "## Privacy settings in force",
        "",
        *_table(
            ["setting", "value"],
            [
                ("timestamp precision", facts.timestamp_precision),
                ("pseudonym scope", facts.pseudonym_scope),
                ("key id", facts.hmac_key_id),
                ("k-anonymity threshold", facts.k_anonymity_threshold),
                ("small groups suppressed", "yes" if facts.suppress_small_groups else "no (only warned)"),
                ("last measured k", _measured(facts.measured_k)),
                ("last measured l", _measured(facts.measured_l)),
            ],
        ),
        "",
        "## Rows per day",
        "",
        *_table(
            ["day", *SPLIT_NAMES],
            [(day, *(facts.rows_per_day[day].get(name, 0) for name in SPLIT_NAMES)) for day in days],
        ),
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        'dataset = load_dataset("EXPORT_DIR")  # a DatasetDict: train, validation, test',
        "",
        "import polars as pl",
        f'train = pl.scan_parquet("EXPORT_DIR/{PARQUET_DIR}/train/*.parquet").collect()',
        "",
        "import pandas as pd",
        f'train = pd.read_parquet("EXPORT_DIR/{PARQUET_DIR}/train")',
        "```",
        "",
    ]
    return "\n".join(lines)
