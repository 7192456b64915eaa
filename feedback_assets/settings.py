"""The pipeline's settings (docs/contract.md, section 2), validated before anything is read or written."""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar, get_args

from feedback_assets import object_storage
from feedback_assets.errors import ConfigError
from feedback_assets.files import OBJECT_STORE_ERRORS, StoragePath
from feedback_assets.object_storage import SCHEMES, ObjectPath
from feedback_assets.schemas import TRAINING_COLUMNS
from feedback_assets.source_url import SourceLocation, expand_home, parse_source_url

DedupeScope = Literal["exact", "first_per_pair"]
DEDUPE_SCOPES: tuple[DedupeScope, ...] = get_args(DedupeScope)


class DedupeScopeChoice(enum.StrEnum):
    """The scopes as a resource field's choices (Dagster's config takes an Enum, not a Literal)."""

    exact = "exact"
    first_per_pair = "first_per_pair"


TimestampPrecision = Literal["microsecond", "second", "minute", "hour", "day"]
TIMESTAMP_PRECISIONS: tuple[TimestampPrecision, ...] = get_args(TimestampPrecision)


class TimestampPrecisionChoice(enum.StrEnum):
    microsecond = "microsecond"
    second = "second"
    minute = "minute"
    hour = "hour"
    day = "day"


PseudonymScope = Literal["stable", "year", "month", "day"]
PSEUDONYM_SCOPES: tuple[PseudonymScope, ...] = get_args(PseudonymScope)


class PseudonymScopeChoice(enum.StrEnum):
    stable = "stable"
    year = "year"
    month = "month"
    day = "day"


# Exported columns an attacker may know of a person; `conditions` is the sensitive attribute that
# l-diversity measures within their groups, so it cannot be one of them (docs/privacy.md).
SENSITIVE_ATTRIBUTE = "conditions"
QUASI_IDENTIFIER_CHOICES = tuple(name for name in TRAINING_COLUMNS if name != SENSITIVE_ATTRIBUTE)
DEFAULT_QUASI_IDENTIFIERS = ("age_range", "feedback_created_at", "analysis_created_at")


DEFAULT_PARTITIONS_START = "2025-01-01"
MIN_KEY_HEX_DIGITS = 64
CONTRACT_VERSION = "3"

DEMO_SOURCE_PATH = Path("data/demo_feedback.sqlite")
DEFAULT_EXPORT_DIR = Path("ml/feedback_training")


@dataclass(frozen=True)
class Setting:
    """One environment variable the pipeline reads, with its default as docs/contract.md states it."""

    variable: str
    default: str


SETTINGS: tuple[Setting, ...] = (
    Setting("FEEDBACK_SOURCE_URL", f"sqlite:///{DEMO_SOURCE_PATH}"),
    Setting("FEEDBACK_EXPORT_DIR", str(DEFAULT_EXPORT_DIR)),
    Setting("FEEDBACK_HMAC_KEY", "none: required"),
    Setting("FEEDBACK_HMAC_KEY_ID", "k1"),
    Setting("FEEDBACK_DEDUPE_SCOPE", "exact"),
    Setting("FEEDBACK_MIN_FEEDBACK_FIELDS", "1"),
    Setting("FEEDBACK_INCLUDE_IMAGE_URLS", "false"),
    Setting("FEEDBACK_STORAGE_DIR", "$DAGSTER_HOME/storage/feedback_assets"),
    Setting("FEEDBACK_K_ANONYMITY_THRESHOLD", "5"),
    Setting("FEEDBACK_K_ANONYMITY_SUPPRESS", "false"),
    Setting("FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS", ",".join(DEFAULT_QUASI_IDENTIFIERS)),
    Setting("FEEDBACK_TIMESTAMP_PRECISION", "day"),
    Setting("FEEDBACK_PSEUDONYM_SCOPE", "stable"),
    Setting("FEEDBACK_SOURCE_RETRY_SECONDS", "120"),
    Setting("FEEDBACK_PARTITIONS_START", "2025-01-01"),
    Setting("FEEDBACK_BACKFILL_DAYS_PER_RUN", "unset: a backfill is one run"),
    Setting("FEEDBACK_ALERT_WEBHOOK_URL", "none: alerts are only logged"),
    Setting("FEEDBACK_UI_URL", "http://127.0.0.1:3000"),
    Setting("FEEDBACK_VOLUME_LOW_RATIO", "0.2"),
    Setting("FEEDBACK_VOLUME_HIGH_RATIO", "5"),
    Setting("FEEDBACK_LOOKBACK_DAYS", "35"),
    Setting("FEEDBACK_SOURCE_CHECK_MINUTES", "60"),
)
DEFAULT_LOOKBACK_DAYS = 35
DEFAULT_SOURCE_CHECK_MINUTES = 60


@dataclass(frozen=True)
class ExportSettings:
    source: SourceLocation
    export_dir: StoragePath
    storage_dir: StoragePath
    hmac_key: bytes = field(repr=False)
    hmac_key_id: str
    dedupe_scope: DedupeScope
    min_feedback_fields: int
    include_image_urls: bool
    k_anonymity_threshold: int = 5
    suppress_small_groups: bool = False
    quasi_identifiers: tuple[str, ...] = DEFAULT_QUASI_IDENTIFIERS
    timestamp_precision: TimestampPrecision = "day"
    pseudonym_scope: PseudonymScope = "stable"
    source_retry_seconds: int = 120
    volume_low_ratio: float = 0.2
    volume_high_ratio: float = 5.0
    lookback_days: int = DEFAULT_LOOKBACK_DAYS


def parse_hmac_key(raw: str | None) -> bytes:
    """Decode the pseudonymisation key; the message never echoes any part of it."""
    hint = (
        "set FEEDBACK_HMAC_KEY to at least 64 hex digits, "
        "e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`"
    )
    if raw is None or not raw.strip():
        raise ConfigError(f"FEEDBACK_HMAC_KEY is not set: {hint}")
    text = raw.strip()
    if any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ConfigError(f"FEEDBACK_HMAC_KEY is not hexadecimal: {hint}")
    if len(text) < MIN_KEY_HEX_DIGITS:
        raise ConfigError(f"FEEDBACK_HMAC_KEY has {len(text)} hex digits, fewer than {MIN_KEY_HEX_DIGITS}: {hint}")
    if len(text) % 2:
        raise ConfigError(f"FEEDBACK_HMAC_KEY has an odd number of hex digits: {hint}")
    return bytes.fromhex(text)


# A resource field gives a typed value, the environment gives text; both are checked the same way.
SettingValue = str | int | bool | float


def _whole_number(raw: SettingValue) -> int:
    if isinstance(raw, bool | float):
        raise ValueError(raw)
    return raw if isinstance(raw, int) else int(raw.strip())


def parse_bool(name: str, raw: SettingValue) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def parse_min_fields(raw: SettingValue) -> int:
    try:
        value = _whole_number(raw)
    except ValueError:
        raise ConfigError(f"FEEDBACK_MIN_FEEDBACK_FIELDS must be a whole number from 0 to 4, not {raw!r}") from None
    if not 0 <= value <= 4:
        raise ConfigError(f"FEEDBACK_MIN_FEEDBACK_FIELDS must be from 0 to 4, not {value}")
    return value


def parse_retry_seconds(raw: SettingValue) -> int:
    try:
        value = _whole_number(raw)
    except ValueError:
        raise ConfigError(f"FEEDBACK_SOURCE_RETRY_SECONDS must be a whole number of seconds, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"FEEDBACK_SOURCE_RETRY_SECONDS must be 0 or more, not {value}")
    return value


def parse_ratio(name: str, raw: SettingValue, *, above_one: bool) -> float:
    """A day's volume bound, as a multiple of the usual day: the low one below 1, the high one above."""
    try:
        if isinstance(raw, bool):
            raise ValueError(raw)
        value = float(raw.strip() if isinstance(raw, str) else raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if above_one and not value > 1:
        raise ConfigError(f"{name} must be more than 1 (a multiple of the usual day's rows), not {value:g}")
    if not above_one and not 0 < value < 1:
        raise ConfigError(
            f"{name} must be more than 0 and less than 1 (a share of the usual day's rows), not {value:g}"
        )
    return value


def parse_threshold(raw: SettingValue) -> int:
    try:
        value = _whole_number(raw)
    except ValueError:
        raise ConfigError(f"FEEDBACK_K_ANONYMITY_THRESHOLD must be a whole number of at least 1, not {raw!r}") from None
    if value < 1:
        raise ConfigError(f"FEEDBACK_K_ANONYMITY_THRESHOLD must be at least 1, not {value}")
    return value


def _at_least_one(name: str, unit: str, raw: SettingValue) -> int:
    try:
        value = _whole_number(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of {unit}, 1 or more, not {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be 1 or more {unit}, not {value}")
    return value


def parse_lookback_days(raw: SettingValue) -> int:
    return _at_least_one("FEEDBACK_LOOKBACK_DAYS", "days", raw)


def parse_source_check_minutes(raw: SettingValue) -> int:
    return _at_least_one("FEEDBACK_SOURCE_CHECK_MINUTES", "minutes", raw)


Choice = TypeVar("Choice", bound=str)


def _one_of(name: str, raw: str, choices: tuple[Choice, ...]) -> Choice:
    value = str(raw).strip()
    for choice in choices:
        if value == choice:
            return choice
    raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")


def parse_scope(raw: str) -> DedupeScope:
    return _one_of("FEEDBACK_DEDUPE_SCOPE", raw, DEDUPE_SCOPES)


def parse_precision(raw: str) -> TimestampPrecision:
    return _one_of("FEEDBACK_TIMESTAMP_PRECISION", raw, TIMESTAMP_PRECISIONS)


def parse_pseudonym_scope(raw: str) -> PseudonymScope:
    return _one_of("FEEDBACK_PSEUDONYM_SCOPE", raw, PSEUDONYM_SCOPES)


def parse_quasi_identifiers(raw: str) -> tuple[str, ...]:
    """A comma-separated list of exported columns, each once, in the order given."""
    names = tuple(name.strip() for name in str(raw).split(",") if name.strip())
    if not names:
        raise ConfigError(
            "FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS names no column; "
            f"give exported columns separated by commas, e.g. {','.join(DEFAULT_QUASI_IDENTIFIERS)}"
        )
    if SENSITIVE_ATTRIBUTE in names:
        raise ConfigError(
            f"FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS cannot include {SENSITIVE_ATTRIBUTE!r}: it is the sensitive "
            "attribute whose diversity is measured within the groups"
        )
    unknown = [name for name in names if name not in QUASI_IDENTIFIER_CHOICES]
    if unknown:
        raise ConfigError(
            f"FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS names {', '.join(map(repr, unknown))}, which the CSV does not "
            f"have; choose from {', '.join(QUASI_IDENTIFIER_CHOICES)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError("FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS names a column twice")
    return names


URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def output_dir(name: str, raw: str) -> StoragePath:
    """A directory setting: a local path, or a prefix on object storage (`s3://bucket/prefix`,
    `gs://...`, `az://...`). Any other URL is refused: taken as a path, `https://host/x` would quietly
    become a folder named `https:` in the working directory, and the user would believe the files
    went there. Credentials never go in the URL: they come from the environment."""
    if not URL_SCHEME.match(raw):
        try:
            return Path(expand_home(raw))
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    scheme, _, rest = raw.partition("://")
    supported = ", ".join(f"{s}://" for s in SCHEMES)
    if scheme.lower() not in SCHEMES:
        raise ConfigError(
            f"{name} is a {scheme}:// URL, which is not supported, so nothing was written: give a path on "
            f"this machine or an object storage URL ({supported})"
        )
    if any(c in rest for c in "@?#"):
        raise ConfigError(
            f"{name} must be a plain {scheme.lower()}://bucket/prefix URL, without credentials, query or "
            "fragment: credentials and endpoints come from the environment (AWS_*, GOOGLE_*, AZURE_*)"
        )
    try:
        return ObjectPath.parse(f"{scheme.lower()}://{rest}")
    except ValueError:
        raise ConfigError(f"{name} names no bucket: give it as {scheme.lower()}://bucket/prefix") from None


def default_storage_dir(env: Mapping[str, str]) -> Path:
    home = env.get("DAGSTER_HOME")
    if not home:
        raise ConfigError("FEEDBACK_STORAGE_DIR is not set and neither is DAGSTER_HOME: set one of them")
    return Path(home) / "storage" / "feedback_assets"


def settings_from(values: Mapping[str, SettingValue | None], env: Mapping[str, str] | None = None) -> ExportSettings:
    """Build settings from explicit values keyed by variable name (None: not given), falling back
    to the environment, then to the defaults of docs/contract.md."""
    environ = os.environ if env is None else env

    def pick(name: str, default: SettingValue) -> SettingValue:
        given = values.get(name)
        if given is not None and given != "":
            return given
        return environ.get(name) or default

    def text(name: str, default: str) -> str:
        return str(pick(name, default)).strip()

    source = parse_source_url(text("FEEDBACK_SOURCE_URL", f"sqlite:///{DEMO_SOURCE_PATH}"))
    given_key = values.get("FEEDBACK_HMAC_KEY")
    key = parse_hmac_key(str(given_key) if given_key is not None else environ.get("FEEDBACK_HMAC_KEY"))
    key_id = text("FEEDBACK_HMAC_KEY_ID", "k1")
    if not key_id or not all(c.isalnum() or c in "-_." for c in key_id):
        raise ConfigError("FEEDBACK_HMAC_KEY_ID must be a short label of letters, digits, '-', '_' or '.'")
    storage = text("FEEDBACK_STORAGE_DIR", "")
    return ExportSettings(
        source=source,
        export_dir=output_dir("FEEDBACK_EXPORT_DIR", text("FEEDBACK_EXPORT_DIR", str(DEFAULT_EXPORT_DIR))),
        storage_dir=output_dir("FEEDBACK_STORAGE_DIR", storage) if storage else default_storage_dir(environ),
        hmac_key=key,
        hmac_key_id=key_id,
        dedupe_scope=parse_scope(text("FEEDBACK_DEDUPE_SCOPE", "exact")),
        min_feedback_fields=parse_min_fields(pick("FEEDBACK_MIN_FEEDBACK_FIELDS", 1)),
        include_image_urls=parse_bool("FEEDBACK_INCLUDE_IMAGE_URLS", pick("FEEDBACK_INCLUDE_IMAGE_URLS", False)),
        k_anonymity_threshold=parse_threshold(pick("FEEDBACK_K_ANONYMITY_THRESHOLD", 5)),
        suppress_small_groups=parse_bool("FEEDBACK_K_ANONYMITY_SUPPRESS", pick("FEEDBACK_K_ANONYMITY_SUPPRESS", False)),
        quasi_identifiers=parse_quasi_identifiers(
            text("FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS", ",".join(DEFAULT_QUASI_IDENTIFIERS))
        ),
        timestamp_precision=parse_precision(text("FEEDBACK_TIMESTAMP_PRECISION", "day")),
        pseudonym_scope=parse_pseudonym_scope(text("FEEDBACK_PSEUDONYM_SCOPE", "stable")),
        source_retry_seconds=parse_retry_seconds(pick("FEEDBACK_SOURCE_RETRY_SECONDS", 120)),
        volume_low_ratio=parse_ratio(
            "FEEDBACK_VOLUME_LOW_RATIO", pick("FEEDBACK_VOLUME_LOW_RATIO", "0.2"), above_one=False
        ),
        volume_high_ratio=parse_ratio(
            "FEEDBACK_VOLUME_HIGH_RATIO", pick("FEEDBACK_VOLUME_HIGH_RATIO", "5"), above_one=True
        ),
        lookback_days=parse_lookback_days(pick("FEEDBACK_LOOKBACK_DAYS", DEFAULT_LOOKBACK_DAYS)),
    )


def check_writable(directory: StoragePath, setting: str) -> None:
    """Fail, naming the setting, if `directory` could not be created or written by this user; on
    object storage, if the bucket cannot be listed with the environment's credentials."""
    if isinstance(directory, ObjectPath):
        try:
            directory.is_dir()
        except OBJECT_STORE_ERRORS as exc:
            raise ConfigError(
                f"{setting}: {directory} cannot be reached ({object_storage.reason(exc)}); check that the bucket "
                "exists and that the credentials and endpoint in the environment (AWS_*, GOOGLE_*, AZURE_*) can list it"
            ) from None
        return
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{setting}: {directory} cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{setting}: {directory} cannot be written: {existing} is not writable by this user")


def check_separate(export_dir: StoragePath, storage_dir: StoragePath) -> None:
    """The storage dir holds raw personal rows (user ids, ages): it must never be, hold or lie inside
    the export dir that the ML team is given."""
    if isinstance(export_dir, Path) and isinstance(storage_dir, Path):
        export, storage = export_dir.resolve(), storage_dir.resolve()
        overlap = export == storage or export.is_relative_to(storage) or storage.is_relative_to(export)
    elif isinstance(export_dir, ObjectPath) and isinstance(storage_dir, ObjectPath):
        export_url, storage_url = f"{export_dir}/", f"{storage_dir}/"
        overlap = export_url.startswith(storage_url) or storage_url.startswith(export_url)
    else:
        overlap = False
    if overlap:
        raise ConfigError(
            f"FEEDBACK_EXPORT_DIR ({export_dir}) and FEEDBACK_STORAGE_DIR ({storage_dir}) must be separate "
            "directories, neither inside the other: the storage dir holds raw personal rows that must never sit "
            "among the files given to the ML team; point one of them elsewhere"
        )


def check_permissions(directory: StoragePath, setting: str) -> str | None:
    """Refuse an existing directory anyone on the machine may write (they could plant or replace
    files the pipeline reads back); a group-writable one, as Kubernetes volumes with fsGroup are, is
    only worth a warning, which is returned."""
    if not isinstance(directory, Path) or not directory.is_dir():
        return None
    mode = directory.stat().st_mode
    if mode & 0o002:
        raise ConfigError(
            f"{setting}: {directory} is writable by every user of this machine; fix it with "
            f"`chmod o-w {directory}` and run again"
        )
    if mode & 0o020:
        return (
            f"{setting}: {directory} is writable by its group; fine for a Kubernetes volume with fsGroup, "
            f"otherwise `chmod g-w {directory}`"
        )
    return None


def check_output_dirs(settings: ExportSettings) -> list[str]:
    """Fail on a directory setting that cannot be used safely; the warnings worth logging."""
    check_separate(settings.export_dir, settings.storage_dir)
    check_writable(settings.export_dir, "FEEDBACK_EXPORT_DIR")
    check_writable(settings.storage_dir, "FEEDBACK_STORAGE_DIR")
    warnings = [
        check_permissions(settings.export_dir, "FEEDBACK_EXPORT_DIR"),
        check_permissions(settings.storage_dir, "FEEDBACK_STORAGE_DIR"),
    ]
    return [warning for warning in warnings if warning is not None]
