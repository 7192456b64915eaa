"""Running a job of the code location as the UI's Launchpad would, without a daemon.

The demo's run must belong to the code location `feedback_assets`, so the UI lists it on the
Timeline and the job's page, and offers to re-execute it without a "different version" warning. A
run made by `execute_in_process` (or by `dagster asset materialize`, and so `dg launch`, in
Dagster 1.13) carries no code-location origin. `dagster job launch` records one but only queues the
run for the daemon. So this module does the two halves the webserver and its run worker do: create
the run from the code location's snapshot of the job, with its origin, then execute it here. It
leans on Dagster internals (pinned in setup.cfg); test_quickstart.py checks the origin.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._utils.hosted_user_process import recon_job_from_origin

CODE_LOCATION = "feedback_assets"
DEFINITIONS_MODULE = "feedback_assets.definitions"
REPOSITORY = "__repository__"


def run_in_code_location(
    instance: dg.DagsterInstance, job_name: str, tags: Mapping[str, str], run_config: Mapping[str, Any]
) -> dg.DagsterRun:
    """Create a run of `job_name` as the code location serves it, execute it in this process, and
    return the finished run."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable, module_name=DEFINITIONS_MODULE, working_directory=os.getcwd()
        ),
        location_name=CODE_LOCATION,
    )
    with origin.create_location(instance) as location:
        repository = location.get_repository(REPOSITORY)
        job = location.get_job(JobSubsetSelector(CODE_LOCATION, REPOSITORY, job_name, op_selection=None))
        plan = location.get_execution_plan(
            job, dict(run_config), step_keys_to_execute=None, known_state=None, instance=instance
        )
        code_origin = job.get_python_origin()
        run = instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=dict(run_config),
            resolved_op_selection=None,
            step_keys_to_execute=None,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**job.tags, **tags},
            job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=job.parent_job_snapshot,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=code_origin,
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )
    execute_run(recon_job_from_origin(code_origin), run, instance)
    finished = instance.get_run_by_id(run.run_id)
    if finished is None:
        raise LookupError(f"run {run.run_id} vanished from the instance")
    return finished
