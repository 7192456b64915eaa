"""The small resources the definitions name share one settings resource: a run checks the settings
once, and a change made at launch (the Launchpad's resource config) reaches every one of them."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.definitions import defs
from feedback_assets.demo.database import write_demo_source
from feedback_assets.resources import FeedbackSettings, resources_for
from feedback_assets_tests.graph import settings_for

DAY = dt.date(2025, 10, 25)


def test_a_run_checks_the_settings_once_and_a_change_at_launch_reaches_every_resource(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str | None] = []
    check = FeedbackSettings.setup_for_execution

    def counted(self: FeedbackSettings, context: dg.InitResourceContext) -> None:
        checked.append(context.run.run_id if context.run is not None else None)
        check(self, context)

    monkeypatch.setattr(FeedbackSettings, "setup_for_execution", counted)
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(url, end_date=DAY, days=1, rows_per_day=20)
    launched_to = tmp_path / "chosen_at_launch"

    result = defs.resolve_job_def("feedback_export").execute_in_process(
        instance=instance,
        resources=resources_for(settings_for(tmp_path, url)),
        partition_key=DAY.isoformat(),
        run_config={"resources": {"feedback_settings": {"config": {"export_dir": str(launched_to)}}}},
    )

    assert result.success
    assert checked == [result.run_id]
    assert (launched_to / "feedback_training_20251025.csv").exists()
    assert not (tmp_path / "export").exists()
