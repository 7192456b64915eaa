"""The code location loads, every job and schedule resolves, and the schedule asks for the right day."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from feedback_assets.definitions import defs
from feedback_assets.defs.erasure import SCHEDULED_TAGS, erase_subjects
from feedback_assets.partitions import daily_partitions

ASSET_KEYS = {
    "raw_feedback",
    "rejected_feedback",
    "anonymized_pairs",
    "deduplicated_pairs",
    "seen_pair_hashes",
    "training_csv",
    # The app's tables, observed (docs/contract.md, section 7).
    "app_feedback_source",
    # The pinned release of every day, for the ML team (docs/ml.md): the one unpartitioned asset.
    "training_dataset",
}
RELEASE = dg.AssetKey("training_dataset")


def test_definitions_load_with_every_asset_job_and_schedule() -> None:
    assert {key.to_user_string() for key in defs.resolve_all_asset_keys()} == ASSET_KEYS
    for job in defs.jobs or []:
        name = job.name
        assert defs.resolve_job_def(name).name == name
    schedules = {schedule.name: defs.resolve_schedule_def(schedule.name).job_name for schedule in defs.schedules or []}
    assert schedules == {
        "nightly_feedback_export": "feedback_export",
        "nightly_erasure": "erase_subjects",
        "weekly_history_audit": "audit_history",
    }
    graph = defs.resolve_asset_graph()
    release = graph.get(RELEASE)
    assert release.partitions_def is None
    assert {key.to_user_string() for key in release.parent_keys} == {"training_csv"}
    for key in graph.get_all_asset_keys() - {RELEASE}:
        node = graph.get(key)
        assert node.partitions_def == daily_partitions
        if node.is_materializable:
            assert node.backfill_policy == dg.BackfillPolicy.single_run()


def test_nightly_schedule_requests_the_day_that_just_ended() -> None:
    schedule = defs.resolve_schedule_def("nightly_feedback_export")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone in (None, "UTC")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2025, 10, 26, 2, 0, tzinfo=dt.UTC)
        )
        requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert [request.partition_key for request in requests] == ["2025-10-25"]


def test_the_nightly_erasure_is_on_by_default_and_asks_for_a_confirmed_tagged_run_after_the_export() -> None:
    schedule = defs.resolve_schedule_def("nightly_erasure")
    export = defs.resolve_schedule_def("nightly_feedback_export")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.execution_timezone == "UTC" and schedule.cron_schedule == "0 4 * * *"
    assert export.cron_schedule == "0 2 * * *", "the erasure is timed to follow this export"
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2025, 10, 26, 4, 0, tzinfo=dt.UTC)
        )
        [request] = list(schedule.evaluate_tick(context).run_requests or [])
    assert request.tags.items() >= SCHEDULED_TAGS.items()
    ops = dg.validate_run_config(erase_subjects, request.run_config)["ops"]
    assert ops["erase_requested_subjects"]["config"] == {"confirm": True}


def test_the_graph_is_wired_in_contract_order() -> None:
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {key.to_user_string() for key in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("raw_feedback") == {"app_feedback_source"}
    assert parents("anonymized_pairs") == {"raw_feedback"}
    assert parents("deduplicated_pairs") == {"anonymized_pairs"}
    assert parents("training_csv") == {"deduplicated_pairs", "seen_pair_hashes"}
    assert parents("seen_pair_hashes") == {"deduplicated_pairs"}
    assert parents("rejected_feedback") == {"raw_feedback"}


def test_every_job_schedule_sensor_and_check_says_what_it_does() -> None:
    """What the UI shows next to each name; Dagster's hidden asset job is its own and has none."""
    repository = defs.get_repository_def()
    graph = defs.resolve_asset_graph()
    undescribed = [
        *(
            f"job {job.name}"
            for job in repository.get_all_jobs()
            if not job.name.startswith("__") and not job.description
        ),
        *(f"schedule {schedule.name}" for schedule in repository.schedule_defs if not schedule.description),
        *(f"sensor {sensor.name}" for sensor in repository.sensor_defs if not sensor.description),
        *(f"check {key.name}" for key in graph.asset_check_keys if not graph.get_check_spec(key).description),
    ]
    assert undescribed == []
