"""Time as epoch microseconds, the unit both the crafted and the bulk rows are built in.

Times stay integers until a whole column is cast to a timestamp, so no Python datetime is made
per row.
"""

from __future__ import annotations

import datetime as dt

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
EPOCH = dt.date(1970, 1, 1)


def epoch_us(day: dt.date) -> int:
    """Midnight UTC at the start of `day`, in microseconds since the epoch."""
    return (day - EPOCH).days * DAY_US
