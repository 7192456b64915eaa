"""Reading the app's feedback tables (docs/contract.md, section 1).

`open_source` gives the reader of a source location, a `FeedbackSource`: `sqlite.SqliteSource` or
`postgres.PostgresSource`. Inside: `sql.py` builds the queries (pure), `parsing.py` types what they
read (pure), `retry.py` tries a read again after a transient fault; docs/decisions.md, "The source
package", says why the parts are split so.
"""

from __future__ import annotations

from collections.abc import Callable

from feedback_assets.source.postgres import PostgresSource
from feedback_assets.source.reader import FeedbackSource, SourceSchemaError, WindowReader
from feedback_assets.source.retry import RetryPolicy
from feedback_assets.source.sqlite import SqliteSource
from feedback_assets.source_url import SourceLocation

__all__ = ["FeedbackSource", "SourceSchemaError", "WindowReader", "open_source"]

READERS: dict[str, Callable[[SourceLocation, bool, RetryPolicy], FeedbackSource]] = {
    "postgresql": PostgresSource,
    "sqlite": SqliteSource,
}


def open_source(
    location: SourceLocation,
    include_image_urls: bool,
    *,
    retry_seconds: int = 120,
    log: Callable[[str], None] | None = None,
) -> FeedbackSource:
    """The reader of `location` (a parsed FEEDBACK_SOURCE_URL): the one place a source's kind picks
    code. Its reads are tried again after transient faults for `retry_seconds`, each fault told to
    `log`."""
    if location.dialect not in READERS:
        raise ValueError(f"no reader for a {location.dialect} source")
    retry = RetryPolicy(location, retry_seconds, log or (lambda message: None))
    return READERS[location.dialect](location, include_image_urls, retry)
