"""The domain errors whose message already says what is wrong and what to do, mapped once to Dagster.

Each is raised by a plain module (settings, source, stores, key guard) and shown in the UI as the
step's failure description, without a traceback and without retries: retrying cannot fix them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from feedback_assets.connections import SourceUnreachableError
from feedback_assets.dedupe_state import DedupeStateError
from feedback_assets.files import DamagedFileError, OutputWriteError, UnexpectedEntryError
from feedback_assets.key_guard import FormatMismatchError, KeyMismatchError
from feedback_assets.settings import ConfigError
from feedback_assets.source import SourceSchemaError
from feedback_assets.storage import MissingPartitionError
from feedback_assets.storage.lock import LockLostError
from feedback_assets.training_csv import StatisticsError

EXPLAINED_ERRORS = (
    ConfigError,
    SourceSchemaError,
    SourceUnreachableError,
    MissingPartitionError,
    DedupeStateError,
    KeyMismatchError,
    FormatMismatchError,
    StatisticsError,
    DamagedFileError,
    OutputWriteError,
    UnexpectedEntryError,
    LockLostError,
)


@contextmanager
def explained_failures() -> Iterator[None]:
    try:
        yield
    except EXPLAINED_ERRORS as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
