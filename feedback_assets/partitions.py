"""The one partitioning every asset shares: UTC days from 2025-01-01."""

from __future__ import annotations

import dagster as dg

PARTITIONS_START = "2025-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")

# Every asset takes a whole partition range in one run: one run per day would spend hours of
# Dagster overhead on a year's backfill (FACTS.md).
single_run_backfill = dg.BackfillPolicy.single_run()
