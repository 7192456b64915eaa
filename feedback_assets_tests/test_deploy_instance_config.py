"""deploy/dagster.yaml is a valid instance for the installed Dagster and sets what the docs promise.

Read the way Dagster reads DAGSTER_HOME (InstanceRef.from_dir validates the file against Dagster's
instance schema), without a database: test_production_instance.py runs it on PostgreSQL.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._config import process_config, resolve_to_config_type
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import ConcurrencyConfig, dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import pg_url_from_config
from dagster_shared.yaml_utils import load_yaml_from_path, safe_load_yaml
from sqlalchemy.engine import make_url

from feedback_assets.asset_runs import DEDUPE_STATE_POOL
from feedback_assets.definitions import defs
from feedback_assets.demo.quickstart import DEMO_INSTANCE_YAML

PRODUCTION_YAML = Path(__file__).resolve().parent.parent / "deploy" / "dagster.yaml"

PG_ENV = {
    "DAGSTER_PG_USERNAME": "dagster",
    # Characters a URL must escape, as a generated password may hold.
    "DAGSTER_PG_PASSWORD": "p@ss:w/rd?#1",
    "DAGSTER_PG_HOST": "db.internal",
    "DAGSTER_PG_PORT": "6543",
    "DAGSTER_PG_DB": "dagster_prod",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding the file unchanged, with the variables it reads set."""
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    shutil.copyfile(PRODUCTION_YAML, tmp_path / "dagster.yaml")
    return tmp_path


def test_the_file_is_a_valid_instance_for_the_installed_dagster(home: Path) -> None:
    config, custom_instance_class = dagster_instance_config(str(home))
    assert custom_instance_class is None
    ref = InstanceRef.from_dir(str(home))

    assert ref.storage_data is not None
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == ("dagster_postgres", "DagsterPostgresStorage")
    # The storage resolves its variables when it is built, before it connects; resolved the same
    # way here, they make a URL that names psycopg2 (docs/decisions.md, "psycopg2, not psycopg 3").
    storage = process_config(resolve_to_config_type(DagsterPostgresStorage.config_type()), ref.storage_data.config_dict)
    assert storage.success, storage.errors
    assert storage.value is not None
    url = make_url(pg_url_from_config(storage.value))
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "postgresql+psycopg2",
        "dagster",
        PG_ENV["DAGSTER_PG_PASSWORD"],
        "db.internal",
        6543,
        "dagster_prod",
    )

    # Dagster hands the instance to every code server it starts on the command line, for any user
    # of the machine to read in `ps`; it carries the variables' names, not their values.
    assert PG_ENV["DAGSTER_PG_PASSWORD"] not in dg.serialize_value(ref)

    # Limits as the daemon will apply them: Dagster merges `concurrency:` into the coordinator's queue.
    assert ref.run_coordinator_data is not None
    coordinator = ref.run_coordinator_data.rehydrate(as_type=dg.QueuedRunCoordinator)
    settings = ref.settings["concurrency"]
    assert isinstance(settings, dict)
    concurrency = ConcurrencyConfig.from_concurrency_settings(settings, coordinator.get_run_queue_config())
    assert concurrency.run_queue_config is not None
    assert concurrency.run_queue_config.max_concurrent_runs == 4
    assert [dict(limit) for limit in concurrency.run_queue_config.tag_concurrency_limits] == [
        {"key": "dagster/backfill", "limit": 1}
    ]
    assert concurrency.pool_config.default_pool_limit == 1

    assert config["telemetry"] == {"enabled": False}
    assert ref.settings["run_monitoring"] == {
        "enabled": True,
        "max_runtime_seconds": 21600,
        "free_slots_after_run_end_seconds": 300,
    }


def test_the_default_pool_limit_is_the_dedupe_pools() -> None:
    # The file limits pools by their default only, which is right while the dedupe pool is the
    # only one; a new pool needs its own decision.
    pools = {op.pool for job in defs.resolve_all_job_defs() for op in job.graph.iterate_op_defs()}
    assert pools - {None} == {DEDUPE_STATE_POOL}


def test_it_ends_dead_runs_and_keeps_data_private_like_the_demo_instance() -> None:
    production = load_yaml_from_path(str(PRODUCTION_YAML))
    demo = safe_load_yaml(DEMO_INSTANCE_YAML)
    assert isinstance(production, dict)
    assert production["run_monitoring"] == demo["run_monitoring"]
    assert production["concurrency"]["pools"] == demo["concurrency"]["pools"]
    assert production["telemetry"] == demo["telemetry"]


def test_an_unset_variable_stops_the_instance_before_it_connects(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    ref = InstanceRef.from_dir(str(home))
    assert ref.storage_data is not None
    with pytest.raises(DagsterInvalidConfigError, match="DAGSTER_PG_PASSWORD"):
        ref.storage_data.rehydrate()
