"""What the UI shows before the first run: kinds, owner, `pii` tags, code version, code references,
descriptions, declared column schemas that match the files, the settings in effect, no beta noise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from feedback_assets import catalog
from feedback_assets.definitions import defs
from feedback_assets.resources import settings_in_effect
from feedback_assets.schemas import TRAINING_COLUMNS
from feedback_assets_tests.crafted_source import HEADER, write_crafted_source
from feedback_assets_tests.graph import ALL_ASSETS, KEY_HEX, latest_metadata, materialize, settings_for

PERSONAL = {"raw_feedback": "identified"} | dict.fromkeys(
    ("anonymized_pairs", "deduplicated_pairs", "seen_pair_hashes", "training_csv"), "pseudonymised"
)


def spec(name: str) -> dg.AssetSpec:
    graph = defs.resolve_asset_graph()
    return graph.get(dg.AssetKey(name)).to_asset_spec()


@pytest.mark.parametrize("name", ALL_ASSETS)
def test_every_asset_page_has_kinds_owner_tags_version_description_and_code_reference(name: str) -> None:
    asset = spec(name)
    assert "polars" in asset.kinds
    assert asset.kinds & {"parquet", "csv"}
    assert asset.owners == ["team:data-engineering"]
    assert asset.tags.get("pii") == PERSONAL.get(name)
    assert asset.code_version == catalog.CODE_VERSION
    assert asset.description and len(asset.description) > 40
    references = asset.metadata["dagster/code_references"]
    (source,) = references.code_references
    assert Path(source.file_path).name in {"assets.py"}
    assert source.line_number > 0


def test_the_source_kind_follows_the_source_url() -> None:
    assert catalog.source_kind({}) == "sqlite"
    assert catalog.source_kind({"FEEDBACK_SOURCE_URL": "postgresql://u@h:5432/db"}) == "postgres"
    assert catalog.source_kind({"FEEDBACK_SOURCE_URL": "mysql://u@h/db"}) == "sql"


@pytest.mark.parametrize("name", ALL_ASSETS)
def test_every_declared_column_has_a_type_and_a_description(name: str) -> None:
    schema = spec(name).metadata["dagster/column_schema"]
    assert schema.columns
    for column in schema.columns:
        assert column.type, f"{name}.{column.name} has no type"
        assert column.description, f"{name}.{column.name} has no description"
    if name == "training_csv":
        assert [column.name for column in schema.columns] == list(TRAINING_COLUMNS)
        assert {c.type for c in schema.columns if c.name.endswith("_created_at")} == {"timestamp (UTC, ISO 8601)"}


def test_every_check_says_what_a_failure_means_and_what_to_do() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.asset_check_keys:
        check = graph.get_check_spec(key)
        assert check.description, key
    for name in ("no_key_owned_twice", "k_anonymity_of_exports"):
        (key,) = [key for key in graph.asset_check_keys if key.name == name]
        assert "What to do" in (graph.get_check_spec(key).description or "")


def test_declared_schemas_are_the_columns_and_types_the_files_hold(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_crafted_source(source_url)
    assert materialize(instance, settings_for(tmp_path, source_url), "2025-10-25").success
    storage = tmp_path / "storage"
    files = {name: storage / name / "2025-10-25.parquet" for name in ALL_ASSETS if name != "training_csv"}
    (files["seen_pair_hashes"],) = storage.glob("seen_pair_hashes/scope=*/key_id=*/2025-10-25.parquet")
    for name, path in files.items():
        declared = {c.name: c.type for c in spec(name).metadata["dagster/column_schema"].columns}
        assert {column: str(dtype) for column, dtype in pl.read_parquet_schema(path).items()} == declared, name
    declared_csv = [c.name for c in spec("training_csv").metadata["dagster/column_schema"].columns]
    assert ",".join(declared_csv) == HEADER.strip()
    recorded = latest_metadata(instance, "training_csv", "2025-10-25")["dagster/column_schema"]
    assert recorded == spec("training_csv").metadata["dagster/column_schema"]
    path = latest_metadata(instance, "training_csv", "2025-10-25")["path"]
    assert Path(path).is_absolute()


def test_the_resource_shows_the_settings_in_effect_and_no_secret(tmp_path: Path) -> None:
    env = {
        "DAGSTER_HOME": str(tmp_path),
        "FEEDBACK_HMAC_KEY": KEY_HEX,
        "FEEDBACK_SOURCE_URL": "postgresql://reader:s3cret-pw@db.internal:5432/app",
        "FEEDBACK_DEDUPE_SCOPE": "first_per_pair",
        "FEEDBACK_TIMESTAMP_PRECISION": "hour",
        "FEEDBACK_K_ANONYMITY_THRESHOLD": "7",
    }
    resource = settings_in_effect(env)
    shown = resource.model_dump()
    assert shown["dedupe_scope"] == "first_per_pair"
    assert shown["timestamp_precision"] == "hour"
    assert shown["k_anonymity_threshold"] == 7
    assert shown["pseudonym_scope"] == "stable"
    assert shown["export_dir"] == "ml/feedback_training"
    assert shown["storage_dir"] == str(tmp_path / "storage" / "feedback_assets")
    assert shown["hmac_key"] == "FEEDBACK_HMAC_KEY"
    assert shown["source_url"] == "FEEDBACK_SOURCE_URL"
    assert isinstance(resource.hmac_key, dg.EnvVar) and isinstance(resource.source_url, dg.EnvVar)
    assert KEY_HEX not in repr(shown) and "s3cret-pw" not in repr(shown)


def test_a_setting_that_does_not_validate_is_left_to_the_run(tmp_path: Path) -> None:
    resource = settings_in_effect({"DAGSTER_HOME": str(tmp_path), "FEEDBACK_DEDUPE_SCOPE": "sometimes"})
    assert resource.dedupe_scope is None and resource.export_dir is None
    assert settings_in_effect({"DAGSTER_HOME": str(tmp_path)}).source_url == "sqlite:///data/demo_feedback.sqlite"


def test_loading_the_code_location_prints_no_warning(tmp_path: Path) -> None:
    loaded = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import feedback_assets.definitions"],
        capture_output=True,
        text=True,
        env={"DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert "Warning" not in loaded.stderr, loaded.stderr
