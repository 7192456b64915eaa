"""Settings are validated before anything is read or written, with messages that say what to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedback_assets.settings import SETTINGS, AlertSettings, ConfigError, settings_from
from feedback_assets.settings_fields import read_leniently
from feedback_assets.splits import Split
from feedback_assets.storage import LocalStorage, ObjectStorage
from feedback_assets.storage.object_paths import ObjectPath

GOOD_KEY = "0123456789abcdef" * 4


def env(**overrides: str) -> dict[str, str]:
    return {"FEEDBACK_HMAC_KEY": GOOD_KEY, "DAGSTER_HOME": "/dagster-home", **overrides}


def test_defaults_follow_the_contract() -> None:
    settings = settings_from({}, env())
    assert settings.source.dialect == "sqlite"
    assert settings.export_dir == LocalStorage(Path("ml/feedback_training"))
    assert settings.storage_dir == LocalStorage(Path("/dagster-home/storage/feedback_assets"))
    assert settings.hmac_key == bytes.fromhex(GOOD_KEY)
    assert settings.hmac_key_id == "k1"
    assert settings.dedupe_scope == "exact"
    assert settings.min_feedback_fields == 1
    assert settings.include_image_urls is False
    assert settings.timestamp_precision == "day"
    assert settings.pseudonym_scope == "stable"
    assert settings.quasi_identifiers == ("age_range", "feedback_created_at", "analysis_created_at")
    assert settings.export_formats == ("csv", "parquet")
    assert settings.split == Split(train=0.8, validation=0.1, test=0.1)


@pytest.mark.parametrize(
    ("text", "formats"), [("csv", ("csv",)), ("parquet", ("parquet",)), (" parquet, csv ", ("csv", "parquet"))]
)
def test_export_formats_are_csv_parquet_or_both(text: str, formats: tuple[str, ...]) -> None:
    assert settings_from({}, env(FEEDBACK_EXPORT_FORMATS=text)).export_formats == formats


def test_the_split_is_read_from_the_environment() -> None:
    settings = settings_from({}, env(FEEDBACK_SPLIT="train=0.6,validation=0.2,test=0.2"))
    assert settings.split == Split(train=0.6, validation=0.2, test=0.2)


def test_quasi_identifiers_are_read_in_order_with_spaces_trimmed() -> None:
    settings = settings_from({}, env(FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS=" timeframe , age_range"))
    assert settings.quasi_identifiers == ("timeframe", "age_range")


def test_explicit_values_win_over_the_environment() -> None:
    settings = settings_from({"FEEDBACK_DEDUPE_SCOPE": "first_per_pair"}, env(FEEDBACK_DEDUPE_SCOPE="exact"))
    assert settings.dedupe_scope == "first_per_pair"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "FEEDBACK_HMAC_KEY is not set: set FEEDBACK_HMAC_KEY to at least 64 hex digits"),
        ("", "FEEDBACK_HMAC_KEY is not set"),
        ("ab" * 31, "FEEDBACK_HMAC_KEY has 62 hex digits, fewer than 64"),
        ("zz" * 32, "FEEDBACK_HMAC_KEY is not hexadecimal"),
        ("a" * 65, "FEEDBACK_HMAC_KEY has an odd number of hex digits"),
    ],
)
def test_a_missing_or_weak_key_is_refused_without_echoing_it(key: str | None, message: str) -> None:
    environment = env()
    if key is None:
        del environment["FEEDBACK_HMAC_KEY"]
    else:
        environment["FEEDBACK_HMAC_KEY"] = key
    with pytest.raises(ConfigError, match=message) as raised:
        settings_from({}, environment)
    if key:
        assert key not in str(raised.value)


def test_the_key_never_appears_in_the_settings_repr() -> None:
    assert GOOD_KEY not in repr(settings_from({}, env()))
    assert repr(bytes.fromhex(GOOD_KEY)) not in repr(settings_from({}, env()))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FEEDBACK_DEDUPE_SCOPE", "fuzzy", "FEEDBACK_DEDUPE_SCOPE must be one of exact, first_per_pair, not 'fuzzy'"),
        ("FEEDBACK_MIN_FEEDBACK_FIELDS", "two", "FEEDBACK_MIN_FEEDBACK_FIELDS must be a whole number from 0 to 4"),
        ("FEEDBACK_MIN_FEEDBACK_FIELDS", "5", "FEEDBACK_MIN_FEEDBACK_FIELDS must be from 0 to 4, not 5"),
        ("FEEDBACK_INCLUDE_IMAGE_URLS", "maybe", "FEEDBACK_INCLUDE_IMAGE_URLS must be true or false"),
        ("FEEDBACK_SOURCE_URL", "mysql://h/db", "only sqlite and postgresql sources are supported"),
        ("FEEDBACK_SOURCE_URL", "not a url", "FEEDBACK_SOURCE_URL is not a database URL"),
        ("FEEDBACK_HMAC_KEY_ID", "k 1", "FEEDBACK_HMAC_KEY_ID must be a short label"),
        (
            "FEEDBACK_TIMESTAMP_PRECISION",
            "week",
            "FEEDBACK_TIMESTAMP_PRECISION must be one of microsecond, second, minute, hour, day, not 'week'",
        ),
        ("FEEDBACK_SOURCE_RETRY_SECONDS", "2m", "FEEDBACK_SOURCE_RETRY_SECONDS must be a whole number of seconds"),
        ("FEEDBACK_SOURCE_RETRY_SECONDS", "-1", "FEEDBACK_SOURCE_RETRY_SECONDS must be 0 or more, not -1"),
        ("FEEDBACK_LOOKBACK_DAYS", "5w", "FEEDBACK_LOOKBACK_DAYS must be a whole number of days, 1 or more"),
        ("FEEDBACK_LOOKBACK_DAYS", "0", "FEEDBACK_LOOKBACK_DAYS must be 1 or more days, not 0"),
        ("FEEDBACK_PSEUDONYM_SCOPE", "forever", "FEEDBACK_PSEUDONYM_SCOPE must be one of stable, year, month, day"),
        ("FEEDBACK_EXPORT_FORMATS", "json", "FEEDBACK_EXPORT_FORMATS must be csv,parquet, csv or parquet, not 'json'"),
        ("FEEDBACK_EXPORT_FORMATS", "csv,csv", "FEEDBACK_EXPORT_FORMATS must be csv,parquet, csv or parquet"),
        ("FEEDBACK_EXPORT_FORMATS", " , ", "FEEDBACK_EXPORT_FORMATS must be csv,parquet, csv or parquet"),
        ("FEEDBACK_SPLIT", "train=0.8,validation=0.1", "FEEDBACK_SPLIT gives no ratio for test"),
        ("FEEDBACK_SPLIT", "train=0.5,validation=0.1,test=0.1", "FEEDBACK_SPLIT: the ratios add up to 0.7, not 1"),
        ("FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS", " , ", "FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS names no column"),
        ("FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS", "age_range,conditions", "cannot include 'conditions'"),
        ("FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS", "age,postcode", "names 'age', 'postcode', which the CSV"),
        ("FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS", "age_range,age_range", "names a column twice"),
        ("FEEDBACK_EXPORT_DIR", "https://files.example/out", "FEEDBACK_EXPORT_DIR is a https:// URL, which is not"),
        ("FEEDBACK_STORAGE_DIR", "ftp://files.example/state", "FEEDBACK_STORAGE_DIR is a ftp:// URL, which is not"),
        ("FEEDBACK_EXPORT_DIR", "file:///tmp/out", "FEEDBACK_EXPORT_DIR is a file:// URL"),
        ("FEEDBACK_EXPORT_DIR", "s3://", "FEEDBACK_EXPORT_DIR names no bucket"),
        ("FEEDBACK_STORAGE_DIR", "s3://AKIA:secret@bucket/state", "without credentials, query or fragment"),
        ("FEEDBACK_EXPORT_DIR", "s3://bucket/out?region=eu-west-1", "without credentials, query or fragment"),
    ],
)
def test_bad_settings_name_the_setting(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from({}, env(**{name: value}))


def test_object_storage_urls_are_taken_as_bucket_prefixes() -> None:
    settings = settings_from(
        {}, env(FEEDBACK_EXPORT_DIR="S3://ml-exports/feedback_training/", FEEDBACK_STORAGE_DIR="gs://pipeline-state")
    )
    assert settings.export_dir == ObjectStorage(ObjectPath("s3://ml-exports", "feedback_training"))
    assert str(settings.export_dir / "feedback_training_20250101.csv") == (
        "s3://ml-exports/feedback_training/feedback_training_20250101.csv"
    )
    assert settings.storage_dir == ObjectStorage(ObjectPath("gs://pipeline-state", ""))
    assert str(settings.storage_dir / "seen_pair_hashes") == "gs://pipeline-state/seen_pair_hashes"


def test_storage_needs_a_home() -> None:
    environment = env()
    del environment["DAGSTER_HOME"]
    with pytest.raises(ConfigError, match="FEEDBACK_STORAGE_DIR is not set and neither is DAGSTER_HOME"):
        settings_from({}, environment)


def test_a_postgres_password_is_not_in_the_description() -> None:
    settings = settings_from({"FEEDBACK_SOURCE_URL": "postgresql://app:s3cret@db.internal:5433/feedback"}, env())
    assert settings.source.describe() == "postgresql database 'feedback' on db.internal:5433"
    assert "s3cret" not in repr(settings)


def test_every_setting_is_declared_once_and_its_default_passes_its_own_check() -> None:
    assert len({setting.variable for setting in SETTINGS}) == len(SETTINGS)
    assert all(setting.variable.startswith("FEEDBACK_") for setting in SETTINGS)
    for setting in SETTINGS:
        if setting.default is not None:
            setting.check(setting.default)


def test_a_bad_setting_read_by_the_daemon_keeps_its_default_and_is_named_without_its_value() -> None:
    settings, problems = read_leniently(
        AlertSettings, {"FEEDBACK_UI_URL": "dagster.internal", "FEEDBACK_ALERT_WEBHOOK_URL": "hooks/s3cret-token"}
    )
    assert (settings.ui_url, settings.alert_webhook_url) == ("http://127.0.0.1:3000", None)
    assert problems == {
        "ui_url": "FEEDBACK_UI_URL must be an http:// or https:// URL",
        "alert_webhook_url": "FEEDBACK_ALERT_WEBHOOK_URL must be an http:// or https:// URL",
    }
