"""The quick start: a demo SQLite source, a local HMAC key, and the most recent days exported.

    python -m feedback_assets.demo [--days 7] [--history-days 30] [--rows-per-day 500]

It keeps Dagster's instance in .dagster_home (unless DAGSTER_HOME is set), so the runs it makes
show up in the UI afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import sys
from pathlib import Path

import dagster as dg

from feedback_assets.demo.database import write_demo_source
from feedback_assets.demo.launch import run_in_code_location
from feedback_assets.settings import DEMO_SOURCE_PATH, ConfigError, settings_from

KEY_FILE = Path(".feedback_hmac_key")
DEMO_DAGSTER_HOME = Path(".dagster_home")


# No calls out of a private-data pipeline's machine (telemetry, and the UI's newsletter dialog,
# whose form loads an outside reCAPTCHA); the dedupe-state pool one claim at a time; and
# run monitoring, which (with `dagster dev`'s daemon) ends a run killed outright once its time limit
# passes and frees its pool slot (README, "Concurrent runs").
DEMO_INSTANCE_YAML = """\
telemetry:
  enabled: false
nux:
  enabled: false
concurrency:
  pools:
    default_limit: 1
run_monitoring:
  enabled: true
  max_runtime_seconds: 21600
  free_slots_after_run_end_seconds: 300
"""


def provision_key(path: Path) -> str:
    """A local pseudonymisation key, readable by its owner only; made once, then reused."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m feedback_assets.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--days",
        type=int,
        default=None,
        help="how many of the most recent days to export (default: all the generated days, so every "
        "partition the UI shows is materialized)",
    )
    parser.add_argument("--history-days", type=int, default=30, help="how many days of demo feedback to generate")
    parser.add_argument("--rows-per-day", type=int, default=500)
    parser.add_argument("--refresh", action="store_true", help="regenerate the demo source even if it exists")
    args = parser.parse_args(argv)
    if args.days is None:
        args.days = args.history_days

    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    if "FEEDBACK_SOURCE_URL" not in os.environ and (args.refresh or not DEMO_SOURCE_PATH.exists()):
        DEMO_SOURCE_PATH.parent.mkdir(parents=True, exist_ok=True)
        write_demo_source(
            f"sqlite:///{DEMO_SOURCE_PATH}",
            end_date=yesterday,
            days=args.history_days,
            rows_per_day=args.rows_per_day,
            replace=True,
        )
        print(f"demo source: {DEMO_SOURCE_PATH} ({args.history_days} days up to {yesterday})")
    if not os.environ.get("FEEDBACK_HMAC_KEY"):
        os.environ["FEEDBACK_HMAC_KEY"] = provision_key(KEY_FILE)
        print(f"HMAC key: from {KEY_FILE} (mode 0600, git-ignored)")
    # The partitions begin with the demo's data, so the UI does not show a year of empty days.
    history_start = (yesterday - dt.timedelta(days=max(args.history_days, args.days) - 1)).isoformat()
    os.environ.setdefault("FEEDBACK_PARTITIONS_START", history_start)
    os.environ.setdefault("DAGSTER_HOME", str(DEMO_DAGSTER_HOME.resolve()))
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    # SQLite storage in DAGSTER_HOME with the instance settings the README recommends; a
    # dagster.yaml already there is the user's and stays as it is.
    instance_yaml = home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text(DEMO_INSTANCE_YAML)
    try:
        settings = settings_from({})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    first = yesterday - dt.timedelta(days=args.days - 1)
    with dg.DagsterInstance.get() as instance:
        run = run_in_code_location(
            instance,
            "feedback_export",
            tags={
                "dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": yesterday.isoformat(),
            },
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    succeeded = run.status == dg.DagsterRunStatus.SUCCESS
    if not succeeded:
        print("the export failed; the run's log is in the UI (see below)", file=sys.stderr)
    print(f"training CSVs for {first} .. {yesterday}: {settings.export_dir.location()}/")
    print("open the UI:")
    print(f"  export DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    print(f"  export FEEDBACK_PARTITIONS_START={os.environ['FEEDBACK_PARTITIONS_START']}")
    if KEY_FILE.exists():
        print(f'  export FEEDBACK_HMAC_KEY="$(cat {KEY_FILE})"')
    print("  .venv/bin/dagster dev    # then http://127.0.0.1:3000")
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
