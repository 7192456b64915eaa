"""The code location loads, every job and schedule resolves, and the schedule asks for the right day."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from feedback_assets.definitions import defs
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
}


def test_definitions_load_with_every_asset_job_and_schedule() -> None:
    assert {key.to_user_string() for key in defs.resolve_all_asset_keys()} == ASSET_KEYS
    for job in defs.jobs or []:
        name = job.name
        assert defs.resolve_job_def(name).name == name
    schedules = {schedule.name: defs.resolve_schedule_def(schedule.name).job_name for schedule in defs.schedules or []}
    assert schedules == {"nightly_feedback_export": "feedback_export", "weekly_history_audit": "audit_history"}
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
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
