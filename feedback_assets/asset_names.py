"""The export's asset names, written once: the definitions, the stores' folders and erasure's report
all take them from here, so a renamed asset cannot leave a stale string behind."""

from __future__ import annotations

from enum import StrEnum


class AssetName(StrEnum):
    RAW_FEEDBACK = "raw_feedback"
    REJECTED_FEEDBACK = "rejected_feedback"
    ANONYMIZED_PAIRS = "anonymized_pairs"
    DEDUPLICATED_PAIRS = "deduplicated_pairs"
    SEEN_PAIR_HASHES = "seen_pair_hashes"
    TRAINING_CSV = "training_csv"
    # The pinned release of every day's files (defs/release.py), for the ML team's training runs.
    TRAINING_DATASET = "training_dataset"
    # The app's tables, observed (defs/source_watch.py); raw_feedback reads them.
    APP_FEEDBACK_SOURCE = "app_feedback_source"
