"""The source's fingerprint per day (docs/contract.md, section 7): a digest of the rows that day's
export reads, to tell which exported days the app changed since.

A day's rows are its feedback rows, as the reader's window for the day takes them, each with the
columns `schemas.READS` takes of it and of its user, analysis and recommendation record. The digest
is of the rows in a fixed order, so it changes when a row is added, removed or changed in a column
the export reads, and only then. Columns the export never reads (feedback_text) are not in it.

The reading is the source package's: the SQL is `source/sql.py`'s (`fingerprint_query`), each
reader runs it (`FeedbackSource.fingerprints`), and `source/parsing.py` makes the values. Here is
what the watch adds to them, which the source knows nothing of: which days are watched, and the
metadata that carries a day's fingerprint on raw_feedback.
"""

from __future__ import annotations

import datetime as dt

from feedback_assets.partitions import daily_partitions

# raw_feedback's metadata of a day: the fingerprint of the rows its export read.
FINGERPRINT_METADATA = "source_fingerprint"


def watched_days(today: dt.date, lookback_days: int) -> list[dt.date]:
    """The `lookback_days` days that ended before `today` (UTC), from the first partition on."""
    first = daily_partitions.start.date()
    return [day for day in (today - dt.timedelta(days=n) for n in range(lookback_days, 0, -1)) if day >= first]
