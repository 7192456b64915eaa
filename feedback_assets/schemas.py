"""Every table and frame the pipeline knows, declared once (docs/contract.md, sections 1 and 4).

The source tables as the app defines them; which of their columns the reader takes and the names
they get in the pipeline's frames; the frames' Polars schemas; the CSV's columns. The reader, the
demo-data generator, the transforms and the tests all take their columns from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import polars as pl

UTC_US = pl.Datetime("us", "UTC")

Kind = Literal["bigint", "integer", "smallint", "boolean", "text", "timestamp"]
INTEGER_KINDS: tuple[Kind, ...] = ("bigint", "integer", "smallint")

_DTYPES: Mapping[Kind, pl.DataType] = MappingProxyType(
    {
        "bigint": pl.Int64(),
        "integer": pl.Int32(),
        "smallint": pl.Int16(),
        "boolean": pl.Boolean(),
        "text": pl.String(),
        "timestamp": UTC_US,
    }
)


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = True
    primary_key: bool = False

    @property
    def dtype(self) -> pl.DataType:
        """The column's type as the app means it (a smallint is an Int16)."""
        return _DTYPES[self.kind]

    @property
    def read_dtype(self) -> pl.DataType:
        """The type the reader gives it. Every integer is read as Int64: SQLite lets the app store a
        rating of 70000, which must be rejected as out of range, not lost as an overflow."""
        return pl.Int64() if self.kind in INTEGER_KINDS else self.dtype

    @property
    def postgres_type(self) -> str:
        return "timestamptz" if self.kind == "timestamp" else self.kind

    @property
    def sqlite_type(self) -> str:
        # SQLite has no boolean or timestamp type: 0/1 integers and UTC text (docs/contract.md, section 1).
        return "TEXT" if self.kind in ("text", "timestamp") else "INTEGER"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})


SOURCE_TABLES: Mapping[str, Table] = MappingProxyType(
    {
        table.name: table
        for table in (
            Table(
                "users",
                (
                    Column("id", "bigint", nullable=False, primary_key=True),
                    Column("age", "integer"),
                    Column("ml_training_consent", "boolean", nullable=False),
                    Column("image_sharing_consent", "boolean", nullable=False),
                    Column("created_at", "timestamp", nullable=False),
                ),
            ),
            Table(
                "analyses",
                (
                    Column("id", "bigint", nullable=False, primary_key=True),
                    Column("user_id", "bigint", nullable=False),
                    Column("conditions", "text"),
                    Column("image_url", "text"),
                    Column("created_at", "timestamp", nullable=False),
                ),
            ),
            Table(
                "recommendation_records",
                (
                    Column("id", "text", nullable=False, primary_key=True),
                    Column("analysis_id", "bigint", nullable=False),
                    Column("rules_applied", "text"),
                    Column("timeframe", "text"),
                    Column("created_at", "timestamp", nullable=False),
                ),
            ),
            Table(
                "recommendation_feedback",
                (
                    Column("id", "bigint", nullable=False, primary_key=True),
                    Column("user_id", "bigint", nullable=False),
                    Column("analysis_id", "bigint", nullable=False),
                    Column("recommendation_id", "text", nullable=False),
                    Column("helpful_rating", "smallint"),
                    Column("product_satisfaction", "smallint"),
                    Column("routine_completion_pct", "smallint"),
                    Column("would_recommend", "boolean"),
                    Column("feedback_text", "text"),
                    Column("created_at", "timestamp", nullable=False),
                ),
            ),
            Table(
                "erasure_requests",
                (
                    Column("user_id", "bigint", nullable=False),
                    Column("requested_at", "timestamp", nullable=False),
                ),
            ),
        )
    }
)
FEEDBACK_CREATED_AT_INDEX = ("recommendation_feedback_created_at_idx", "recommendation_feedback", "created_at")


@dataclass(frozen=True)
class Read:
    """What the reader takes from one source table: source column -> the pipeline's column name.

    Only these columns are ever read; feedback_text and everything else the export does not need
    never leaves the database.
    """

    table: str
    columns: Mapping[str, str]

    @property
    def source_columns(self) -> tuple[Column, ...]:
        table = SOURCE_TABLES[self.table]
        return tuple(table.column(name) for name in self.columns)

    @property
    def schema(self) -> pl.Schema:
        """The frame the reader returns, typed; values that do not parse become null."""
        return pl.Schema({self.columns[c.name]: c.read_dtype for c in self.source_columns})


READS: Mapping[str, Read] = MappingProxyType(
    {
        "feedback": Read(
            "recommendation_feedback",
            {
                "id": "feedback_id",
                "user_id": "user_id",
                "analysis_id": "analysis_id",
                "recommendation_id": "recommendation_id",
                "helpful_rating": "helpful_rating",
                "product_satisfaction": "product_satisfaction",
                "routine_completion_pct": "routine_completion_pct",
                "would_recommend": "would_recommend",
                "created_at": "created_at",
            },
        ),
        "users": Read(
            "users",
            {
                "id": "user_id",
                "age": "age",
                "ml_training_consent": "ml_training_consent",
                "image_sharing_consent": "image_sharing_consent",
            },
        ),
        "analyses": Read(
            "analyses",
            {
                "id": "analysis_id",
                # Read only to check that the analysis is the feedback's user's own; the join reduces
                # it to a flag (`source_join.join_source`), so no one else's id is ever stored.
                "user_id": "analysis_user_id",
                "conditions": "conditions",
                "image_url": "image_url",
                "created_at": "analysis_created_at",
            },
        ),
        "records": Read(
            "recommendation_records",
            {
                "id": "recommendation_id",
                "analysis_id": "record_analysis_id",
                "rules_applied": "rules_applied",
                "timeframe": "timeframe",
            },
        ),
        "erasures": Read("erasure_requests", {"user_id": "user_id"}),
    }
)

# The feedback frame also says whether a row is one of the window's own or an earlier row of the
# same pair (`is_history`), whether its stored values parse (`malformed`) and its UTC day.
FEEDBACK_SCHEMA = pl.Schema(
    {**READS["feedback"].schema, "malformed": pl.Boolean(), "is_history": pl.Boolean(), "partition": pl.Date()}
)
USERS_SCHEMA = READS["users"].schema
ANALYSES_SCHEMA = READS["analyses"].schema
RECORDS_SCHEMA = READS["records"].schema
ERASURES_SCHEMA = READS["erasures"].schema
# The window's feedback ids that the source table holds more than once (it has no key to stop that).
REPEATED_IDS_SCHEMA = pl.Schema({"feedback_id": pl.Int64()})

# The persisted dedupe state: which day owns each exported dedupe key.
STATE_SCHEMA = pl.Schema({"dedupe_key": pl.String(), "partition": pl.Date()})

# The training CSV's columns, in order (docs/contract.md, section 4); image_url follows only when enabled.
TRAINING_COLUMNS = (
    "analysis_hash",
    "recommendation_id",
    "helpful_rating",
    "product_satisfaction",
    "routine_completion_pct",
    "would_recommend",
    "conditions",
    "rules_applied",
    "timeframe",
    "age_range",
    "feedback_created_at",
    "analysis_created_at",
)
IMAGE_URL_COLUMN = "image_url"
# Text cells of the CSV: the only ones the formula-injection guard may change.
TEXT_COLUMNS = ("recommendation_id", "conditions", "rules_applied", "timeframe", IMAGE_URL_COLUMN)
