"""The pipeline's settings (docs/contract.md, section 2): each FEEDBACK_* variable declared once, with
its type, default, check and doc, in the model of when it is read: by a run (`ExportSettings`, from
which the resource's fields are derived), at load (`LoadSettings`) or by the failure sensor."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from feedback_assets.errors import ConfigError
from feedback_assets.settings_fields import (
    DEFAULT_QUASI_IDENTIFIERS,
    MIN_KEY_HEX_DIGITS,
    ExportFormat,
    OneOf,
    Ratio,
    Setting,
    SettingValue,
    Whole,
    declared,
    parse_bool,
    parse_export_formats,
    parse_hmac_key,
    parse_http_url,
    parse_label,
    parse_past_day,
    parse_quasi_identifiers,
    parse_source,
    read,
)
from feedback_assets.settings_fields import SENSITIVE_ATTRIBUTE as SENSITIVE_ATTRIBUTE
from feedback_assets.source_url import SourceLocation
from feedback_assets.source_url import parse_source_url as parse_source_url
from feedback_assets.splits import DEFAULT_SPLIT, Split, parse_split
from feedback_assets.storage import Storage
from feedback_assets.storage.factory import export_output_dir, output_dir

DedupeScope = Literal["exact", "first_per_pair"]
DEDUPE_SCOPES: tuple[DedupeScope, ...] = get_args(DedupeScope)
TimestampPrecision = Literal["microsecond", "second", "minute", "hour", "day"]
TIMESTAMP_PRECISIONS: tuple[TimestampPrecision, ...] = get_args(TimestampPrecision)
PseudonymScope = Literal["stable", "year", "month", "day"]
PSEUDONYM_SCOPES: tuple[PseudonymScope, ...] = get_args(PseudonymScope)

CONTRACT_VERSION = "3"
DEMO_SOURCE_PATH = Path("data/demo_feedback.sqlite")
DEMO_SOURCE_URL = f"sqlite:///{DEMO_SOURCE_PATH}"


def default_storage_dir(env: Mapping[str, str]) -> Path:
    home = env.get("DAGSTER_HOME")
    if not home:
        raise ConfigError("FEEDBACK_STORAGE_DIR is not set and neither is DAGSTER_HOME: set one of them")
    return Path(home) / "storage" / "feedback_assets"


WHOLE_DAYS = "a whole number of days, 1 or more"


# README's cells after the default (a choice's: the other choices); the contract's are the docstrings.
SOURCE_README = "; or `postgresql://user:pw@host:5432/db`"
EXPORT_DIR_README = "; or `s3://bucket/prefix` (also `gs://`, `az://`)"
SUPPRESS_README = " (`true` leaves rows of smaller groups out of the CSVs)"
LOW_RATIO_README = ": the check `feedback_volume` warns on a day with fewer source rows than that times the usual day"
LOOKBACK_README = " (the days, ending yesterday, watched for late and changed rows)"


class _Settings(BaseModel):
    # Each field's docstring is its line in the contract, read by settings_docs.py: pydantic's
    # use_attribute_docstrings would add 0.17 s to every load of the code location to find this source.
    model_config = ConfigDict(frozen=True, defer_build=True)


class ExportSettings(_Settings):
    """The settings of a run."""

    source: Annotated[
        SourceLocation,
        Setting("FEEDBACK_SOURCE_URL", parse_source, DEMO_SOURCE_URL, secret=True, readme=SOURCE_README),
    ]
    """the source, as a SQLAlchemy-style URL: `sqlite:///path/to/file.sqlite` or `postgresql://user:pw@host:port/db`
    (a driver suffix such as `postgresql+psycopg2://` is accepted); any other database is refused. The user part ends
    at the last `@`, so a password may hold `@`, `/`, `:` or `?` as it is (or percent-encoded); no message ever shows
    any part of it, only the host, port and database. A SQLite path is the file exactly as written (`#` and `?`
    included; a leading `~` is the home directory), opened read-only: a missing file is an error, never created, and
    a file that is not a SQLite database is named as such. A port that is not a number fails the runs that read the
    source, never the code location's load"""
    export_dir: Annotated[
        Storage,
        Setting("FEEDBACK_EXPORT_DIR", export_output_dir, "ml/feedback_training", readme=EXPORT_DIR_README),
    ]
    """where the training CSVs and their manifests go: a local directory, or a prefix on object storage,
    `s3://bucket/prefix` (also `gs://`, `az://`), whose credentials and endpoint come from the store's standard
    environment (for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
    `AWS_ALLOW_HTTP`, or an instance role), never from the URL. Any other URL (`https://`, `file://`, ...) and a URL
    with credentials, a query or a fragment are refused before anything is written, since taken as a path it would
    become a local folder named `https:`"""
    hmac_key: Annotated[
        bytes,
        Field(repr=False),
        Setting(
            "FEEDBACK_HMAC_KEY",
            parse_hmac_key,
            None,
            unset="none: required",
            readme=f", at least {MIN_KEY_HEX_DIGITS} hex digits",
            required=True,
            secret=True,
        ),
    ]
    """the pseudonymisation secret: hexadecimal, an even number of digits, at least 64 (32 bytes); a run without a
    valid key stops before reading anything, and the demo command makes a local one"""
    hmac_key_id: Annotated[str, Setting("FEEDBACK_HMAC_KEY_ID", parse_label, "k1")]
    """a short label for the key (letters, digits, `-`, `_`, `.`), recorded in every manifest and materialization"""
    dedupe_scope: Annotated[DedupeScope, Setting("FEEDBACK_DEDUPE_SCOPE", OneOf(DEDUPE_SCOPES), "exact")]
    """`exact` or `first_per_pair` (section 5)"""
    min_feedback_fields: Annotated[
        int, Setting("FEEDBACK_MIN_FEEDBACK_FIELDS", Whole("a whole number from 0 to 4", 0, 4, "from 0 to 4"), "1")
    ]
    """how many of the four rating fields must be present, from 0 to 4"""
    include_image_urls: Annotated[bool, Setting("FEEDBACK_INCLUDE_IMAGE_URLS", parse_bool, "false")]
    """`true` adds the consented `image_url` column (`true`, `1`, `yes` / `false`, `0`, `no`)"""
    storage_dir: Annotated[
        Storage,
        Setting(
            "FEEDBACK_STORAGE_DIR",
            output_dir,
            None,
            unset="$DAGSTER_HOME/storage/feedback_assets",
            readme="; or an object storage prefix",
            fallback=lambda env: str(default_storage_dir(env)),
        ),
    ]
    """where the intermediate partitions, the dedupe state and the erasure audit log go: a local directory or an
    object storage prefix, as for FEEDBACK_EXPORT_DIR"""
    k_anonymity_threshold: Annotated[
        int,
        Setting(
            "FEEDBACK_K_ANONYMITY_THRESHOLD",
            Whole("a whole number of at least 1", 1, within="at least 1"),
            "5",
            readme=" (the smallest group of rows sharing every quasi-identifier)",
        ),
    ]
    """the smallest acceptable group of rows sharing every quasi-identifier, at least 1 (privacy.md, k-anonymity)"""
    suppress_small_groups: Annotated[
        bool, Setting("FEEDBACK_K_ANONYMITY_SUPPRESS", parse_bool, "false", readme=SUPPRESS_README)
    ]
    """`true` leaves rows in groups below the threshold out of each day's file; `false` only warns"""
    quasi_identifiers: Annotated[
        tuple[str, ...],
        Setting(
            "FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS",
            parse_quasi_identifiers,
            ",".join(DEFAULT_QUASI_IDENTIFIERS),
            readme=" (the exported columns an attacker may know of a person)",
        ),
    ]
    """the exported columns an attacker may know of a person, separated by commas: any CSV column but `conditions`,
    the sensitive attribute (privacy.md, k-anonymity)"""
    timestamp_precision: Annotated[
        TimestampPrecision,
        Setting("FEEDBACK_TIMESTAMP_PRECISION", OneOf(TIMESTAMP_PRECISIONS), "day"),
    ]
    """the precision of both exported timestamps: `microsecond`, `second`, `minute`, `hour` or `day` (section 4)"""
    pseudonym_scope: Annotated[
        PseudonymScope,
        Setting("FEEDBACK_PSEUDONYM_SCOPE", OneOf(PSEUDONYM_SCOPES), "stable"),
    ]
    """how long a user keeps one pseudonym in the CSVs: `stable` (for as long as the key), `year`, `month` or `day`
    (section 4)"""
    export_formats: Annotated[
        tuple[ExportFormat, ...],
        Setting("FEEDBACK_EXPORT_FORMATS", parse_export_formats, "csv,parquet", readme=" (or `csv`, `parquet`)"),
    ]
    """what each day is exported as: `csv,parquet` (the CSV and, beside it, typed Parquet split by user), `csv` or
    `parquet` (docs/ml.md). Erasure and consent withdrawal rewrite the Parquet as they do the CSVs"""
    split: Annotated[Split, Setting("FEEDBACK_SPLIT", parse_split, DEFAULT_SPLIT)]
    """the share of users in each split of the typed Parquet, `train=..,validation=..,test=..`: each of the three
    once, every ratio above 0, adding up to 1. A user is in one split for ever, in every pseudonym scope, decided by
    a keyed hash of the stable pseudonym (docs/ml.md). Changing it on an existing export dir is refused"""
    source_retry_seconds: Annotated[
        int,
        Setting(
            "FEEDBACK_SOURCE_RETRY_SECONDS",
            Whole("a whole number of seconds", 0, within="0 or more"),
            "120",
            readme=" (how long transient source faults are tried again)",
        ),
    ]
    """how long, in seconds from the first fault, a read of the source is tried again after a transient fault: a
    refused, reset or dropped connection, a server starting up or shutting down, too many connections, a
    serialization failure or deadlock, a backend terminated by an administrator. Each try is logged with the fault
    and the next try's time, waits double from 1 s to at most 15 s; past the budget the run fails saying how long the
    source was unreachable. A wrong host name, password or database, and a missing table or column, fail at once.
    `0` tries once"""
    volume_low_ratio: Annotated[
        float,
        Setting(
            "FEEDBACK_VOLUME_LOW_RATIO", Ratio(0, 1, "a share of the usual day's rows"), "0.2", readme=LOW_RATIO_README
        ),
    ]
    """the check `feedback_volume` warns when a day has fewer source feedback rows than this share of the median of
    the 14 earlier days that had feedback (quiet until 7 such days exist); a number above 0 and below 1"""
    volume_high_ratio: Annotated[
        float,
        Setting(
            "FEEDBACK_VOLUME_HIGH_RATIO",
            Ratio(1, None, "a multiple of the usual day's rows"),
            "5",
            readme=": ... and on a day with more source rows than that times the usual day",
        ),
    ]
    """... and when it has more than this multiple of that median; a number above 1"""
    lookback_days: Annotated[
        int,
        Setting("FEEDBACK_LOOKBACK_DAYS", Whole(WHOLE_DAYS, 1, within="1 or more days"), "35", readme=LOOKBACK_README),
    ]
    """how many days, ending yesterday (UTC), are watched for late and changed rows (section 7), a whole number from
    1: the sensor `feedback_source_changes` observes them, and `raw_feedback` records the fingerprint of each of its
    days among them. Older days are never re-exported by the sensor"""


class LoadSettings(_Settings):
    """The settings read when the code location loads: they shape its definitions."""

    partitions_start: Annotated[
        str,
        Setting(
            "FEEDBACK_PARTITIONS_START",
            parse_past_day,
            "2025-01-01",
            readme="; read when the code location loads, not per run",
        ),
    ]
    """the first day of the daily partitions, `YYYY-MM-DD`, before today. Unlike the others it is read when the code
    location loads (Dagster needs the partitions to load the definitions), so changing it means reloading the code
    location; a bad value leaves the default in place and fails every export run with a message naming the setting,
    never the load. Days before it are not offered, whatever was materialized for them"""
    backfill_days_per_run: Annotated[
        int | None,
        Setting(
            "FEEDBACK_BACKFILL_DAYS_PER_RUN",
            Whole(WHOLE_DAYS, 1),
            None,
            unset="unset: a backfill is one run",
            readme="; `N`: backfills fan out over runs of N days (read at load)",
        ),
    ]
    """the most days one run of a backfill takes, a whole number from 1. Unset, every asset has
    `BackfillPolicy.single_run()` and a backfill of any range is one run; set,
    `BackfillPolicy.multi_run(max_partitions_per_run=N)`, and a backfill fans out over runs of N days that the run
    coordinator may run side by side (the dedupe steps still one at a time, through the `feedback_dedupe_state`
    pool). Read when the code location loads, like FEEDBACK_PARTITIONS_START. `dagster asset materialize
    --partition-range` needs the single-run policy, so with it set, ranges are launched as backfills (UI or
    GraphQL)"""
    source_check_minutes: Annotated[
        int,
        Setting(
            "FEEDBACK_SOURCE_CHECK_MINUTES",
            Whole("a whole number of minutes, 1 or more", 1, within="1 or more minutes"),
            "60",
            readme=" (how often the sensor `feedback_source_changes` looks; read at load)",
        ),
    ]
    """how often, in minutes, the sensor `feedback_source_changes` observes the watched days, a whole number from 1.
    It is the sensor's interval, so it is read when the code location loads; a bad value does not stop the load: the
    sensor checks every 60 minutes and each of its ticks fails with a message naming the variable"""


class AlertSettings(_Settings):
    """The settings of the failure sensor, read by the daemon at each tick."""

    alert_webhook_url: Annotated[
        str | None,
        Setting("FEEDBACK_ALERT_WEBHOOK_URL", parse_http_url, None, unset="none: alerts are only logged", secret=True),
    ]
    """where the sensor `feedback_run_failed` posts a JSON alert when any run of the code location fails (the named
    jobs, and runs from the asset pages and backfills, whose `job` is `assets`): `source`, `status`, `run_id`, `job`,
    `days`, `failed_step`, `reason` (the project's failure message, or only the error's type for any other error) and
    `run_page`. Read by the daemon when the sensor runs; never logged (a webhook URL may hold a token). Unset, the
    alert is one `feedback_assets ALERT:` line in the sensor's log"""
    ui_url: Annotated[
        str,
        Setting("FEEDBACK_UI_URL", parse_http_url, "http://127.0.0.1:3000", readme=" (the alert's link to the run)"),
    ]
    """the Dagster UI's address, for the alert's link to the run"""


MODELS: tuple[type[_Settings], ...] = (ExportSettings, LoadSettings, AlertSettings)
SETTINGS: tuple[Setting, ...] = tuple(setting for model in MODELS for setting in declared(model).values())
# The benchmarks start from the contract's default.
DEFAULT_LOOKBACK_DAYS = int(declared(ExportSettings)["lookback_days"].default or 0)


def settings_from(values: Mapping[str, SettingValue | None], env: Mapping[str, str] | None = None) -> ExportSettings:
    """A run's settings from explicit values keyed by variable name (None: not given), falling back
    to the environment, then to the defaults; the first wrong one raises its ConfigError."""
    return read(ExportSettings, values, env)


def check_separate(export_dir: Storage, storage_dir: Storage) -> None:
    """The storage dir holds raw personal rows (user ids, ages): it must never be, hold or lie inside
    the export dir that the ML team is given."""
    if export_dir.overlaps(storage_dir):
        raise ConfigError(
            f"FEEDBACK_EXPORT_DIR ({export_dir}) and FEEDBACK_STORAGE_DIR ({storage_dir}) must be separate "
            "directories, neither inside the other: the storage dir holds raw personal rows that must never sit "
            "among the files given to the ML team; point one of them elsewhere"
        )


def check_output_dirs(settings: ExportSettings) -> list[str]:
    """Fail on a directory setting that cannot be used safely; the warnings worth logging."""
    check_separate(settings.export_dir, settings.storage_dir)
    directories = {"FEEDBACK_EXPORT_DIR": settings.export_dir, "FEEDBACK_STORAGE_DIR": settings.storage_dir}
    for setting, directory in directories.items():
        directory.check_writable(setting)
    warnings = [directory.permissions_warning(setting) for setting, directory in directories.items()]
    return [warning for warning in warnings if warning is not None]
