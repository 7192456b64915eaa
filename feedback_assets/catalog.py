"""What the Dagster UI shows about each asset before its first run: kinds, owner, the `pii` tag,
the code version and the column schema with a description of every column.

The intermediates' column types are not written out by hand: they are the schemas the pipeline's
own transforms give for empty, typed source frames, so a change to a transform changes the page
too. The CSV's columns are declared with the types the contract gives them (docs/contract.md,
section 4), since in the file every cell is text.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypedDict

import dagster as dg
import polars as pl

from feedback_assets import source_join, transforms
from feedback_assets.dedupe_state import key_prefix
from feedback_assets.schemas import (
    ANALYSES_SCHEMA,
    ERASURES_SCHEMA,
    FEEDBACK_SCHEMA,
    IMAGE_URL_COLUMN,
    RECORDS_SCHEMA,
    STATE_SCHEMA,
    TRAINING_COLUMNS,
    USERS_SCHEMA,
)
from feedback_assets.settings import CONTRACT_VERSION, ExportSettings
from feedback_assets.settings_fields import ConfigError, read_setting

OWNERS = ["team:data-engineering"]

# Bump with any change to what an asset's files hold for the same source; the contract version
# changes with the CSV's form. Dagster marks every partition materialized under an older version.
CODE_VERSION = f"contract-{CONTRACT_VERSION}.0"

# The `pii` tag says what personal data an asset's files hold, so a privacy review can find them
# from the catalog. rejected_feedback holds feedback ids and reasons only.
PII_IDENTIFIED = {"pii": "identified"}
PII_PSEUDONYMISED = {"pii": "pseudonymised"}

COLUMN_DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "feedback_id": "The feedback row's id in recommendation_feedback.",
        "user_id": "The app's user id: direct identifier, never exported.",
        "analysis_id": "The skin analysis the feedback refers to.",
        "recommendation_id": "The recommendation record the feedback rates, as in the source.",
        "helpful_rating": "How helpful the recommendation was, 1 to 5; empty when not given.",
        "product_satisfaction": "Satisfaction with the recommended products, 1 to 5; empty when not given.",
        "routine_completion_pct": "Share of the routine the user completed, 0 to 100; empty when not given.",
        "would_recommend": "Whether the user would recommend it; empty when not given.",
        "created_at": "When the feedback was given, UTC, full precision.",
        "malformed": "A stored value of the row did not parse (rejected as malformed).",
        "is_history": "An earlier row of a pair of this day's rows, read for first_per_pair; never exported.",
        "partition": "The UTC day the feedback belongs to: the partition key.",
        "age": "The user's age in years: personal data, never exported (age_range is).",
        "ml_training_consent": "Whether the user agreed to their feedback training models.",
        "image_sharing_consent": "Whether the user agreed to share their analysis images.",
        "conditions": "Skin conditions of the analysis; normalised after anonymized_pairs: lower-cased, "
        "trimmed, de-duplicated, sorted, joined with ','. The sensitive attribute of l-diversity.",
        "image_url": "The analysis image's URL: read only with FEEDBACK_INCLUDE_IMAGE_URLS and kept only for "
        "users with image_sharing_consent.",
        "analysis_created_at": "When the skin analysis was made, UTC.",
        "rules_applied": "The recommender's rules that produced the recommendation, trimmed.",
        "timeframe": "The recommendation's timeframe, as in the source.",
        "user_found": "The feedback's user exists in users (else rejected as orphan).",
        "analysis_found": "The feedback's analysis exists in analyses (else rejected as orphan).",
        "record_found": "The feedback's recommendation record exists (else rejected as orphan).",
        "erasure_requested": "The user is in erasure_requests: personal fields blanked, row excluded.",
        "ambiguous": "The feedback's user, analysis, record or own id is held by more than one source row "
        "(rejected as ambiguous; personal fields blanked).",
        "mismatched": "The feedback's analysis belongs to another user or its record to another analysis "
        "(rejected as mismatched; personal fields blanked).",
        "outcome": "The first rule of the contract's section 5 the row fails, or eligible.",
        "reason": "Why the row was rejected: malformed, orphan, ambiguous, mismatched or out_of_range.",
        "analysis_hash": "The user's pseudonym: keyed HMAC-SHA256 of the user id, 64 hex characters; in the "
        "CSV per FEEDBACK_PSEUDONYM_SCOPE.",
        "age_range": "The age as a bucket: <18, 18-25, 25-35, 35-50, 50+; empty when missing or out of range.",
        "feedback_created_at": "When the feedback was given, UTC; in the CSV truncated to "
        "FEEDBACK_TIMESTAMP_PRECISION (default day).",
        "dedupe_key": "SHA-256 of what makes two rows the same (FEEDBACK_DEDUPE_SCOPE); holds the pseudonym, "
        "never the user id.",
        "key_prefix": "The dedupe key's first hex digits as an integer: an index that lets a lookup read only "
        "the days that may hold a key.",
        "kept": "Whether the row is exported: the first of its dedupe key, which no earlier day owns.",
    }
)

# The CSV's cells are text; these are the values they stand for (docs/contract.md, section 4).
CSV_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "analysis_hash": "string (64 hex)",
        "recommendation_id": "string",
        "helpful_rating": "integer 1-5",
        "product_satisfaction": "integer 1-5",
        "routine_completion_pct": "integer 0-100",
        "would_recommend": "boolean",
        "conditions": "string (labels joined by ',')",
        "rules_applied": "string",
        "timeframe": "string",
        "age_range": "category",
        "feedback_created_at": "timestamp (UTC, ISO 8601)",
        "analysis_created_at": "timestamp (UTC, ISO 8601)",
        IMAGE_URL_COLUMN: "string (URL)",
    }
)


def table_schema(schema: pl.Schema) -> dg.TableSchema:
    """A frame's columns with their Polars types and descriptions, as Dagster shows them."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(dtype), description=COLUMN_DESCRIPTIONS.get(name))
            for name, dtype in schema.items()
        ]
    )


def csv_schema(columns: tuple[str, ...] = TRAINING_COLUMNS) -> dg.TableSchema:
    """The training CSV's columns in file order, typed as the contract reads them."""
    return dg.TableSchema(
        columns=[dg.TableColumn(name, CSV_TYPES[name], description=COLUMN_DESCRIPTIONS[name]) for name in columns]
    )


def _empty(schema: pl.Schema) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def _intermediate_schemas() -> dict[str, pl.Schema]:
    """Each intermediate's stored columns, from the transforms themselves run on no rows."""
    frames = source_join.SourceFrames(
        feedback=_empty(FEEDBACK_SCHEMA),
        users=_empty(USERS_SCHEMA),
        analyses=_empty(ANALYSES_SCHEMA),
        records=_empty(RECORDS_SCHEMA),
        erasures=_empty(ERASURES_SCHEMA),
    )
    raw = source_join.raw_rows(frames, with_history=False)
    classified = transforms.classify(raw, 1)
    pairs = transforms.anonymize(classified, bytes(32), include_image_urls=True)
    deduplicated = transforms.deduplicate(transforms.with_dedupe_key(pairs, "exact"))
    return {
        "raw_feedback": raw.schema,
        "rejected_feedback": transforms.rejected_rows(classified).schema,
        "anonymized_pairs": pairs.schema,
        "deduplicated_pairs": deduplicated.schema,
        "seen_pair_hashes": _empty(STATE_SCHEMA).with_columns(key_prefix(pl.col("dedupe_key"))).schema,
    }


INTERMEDIATE_SCHEMAS: Mapping[str, pl.Schema] = MappingProxyType(_intermediate_schemas())


def source_kind(env: Mapping[str, str] | None = None) -> str:
    """The kind of the source database, for raw_feedback's icon; read when the code location loads.

    A URL that does not parse is left to the run, which fails with the setting's name in its message.
    """
    try:
        dialect: str = read_setting(ExportSettings, "source", env).dialect
    except ConfigError:
        return "sql"
    return "postgres" if dialect == "postgresql" else dialect


class AssetPage(TypedDict):
    """The keyword arguments of `dg.asset` and `dg.AssetSpec` that make an asset's catalog page."""

    kinds: set[str]
    owners: list[str]
    tags: dict[str, str]
    code_version: str
    metadata: dict[str, Any]


def page(name: str, kinds: set[str], tags: Mapping[str, str], schema: dg.TableSchema | None = None) -> AssetPage:
    """An asset's page: its kinds, owner, tags, code version and declared column schema."""
    return AssetPage(
        kinds=kinds,
        owners=list(OWNERS),
        tags=dict(tags),
        code_version=CODE_VERSION,
        metadata={"dagster/column_schema": schema or table_schema(INTERMEDIATE_SCHEMAS[name])},
    )
