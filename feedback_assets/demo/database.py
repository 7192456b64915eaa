"""Writing the demo source to a database: the source tables' DDL, create_schema, load, write_demo_source.

SQLite or PostgreSQL, as FEEDBACK_SOURCE_URL names them, with the tables of schemas.SOURCE_TABLES.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence

import polars as pl
import psycopg2.extensions

from feedback_assets.connections import postgres_connection, sqlite_connection
from feedback_assets.demo.generate import DemoData, generate
from feedback_assets.schemas import FEEDBACK_CREATED_AT_INDEX, SOURCE_TABLES, UTC_US
from feedback_assets.settings import SourceLocation, parse_source_url

# A year of 5M feedback rows as one CSV would need a few GB of memory; 1M-row chunks keep it
# bounded while each COPY stays long enough for its per-statement overhead not to matter.
COPY_CHUNK_ROWS = 1_000_000
SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S%.6f"
COPY_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S%.6f%:z"
FEEDBACK_INDEX, _FEEDBACK_INDEX_TABLE, _FEEDBACK_INDEX_COLUMN = FEEDBACK_CREATED_AT_INDEX
FEEDBACK_INDEX_DDL = f"CREATE INDEX {FEEDBACK_INDEX} ON {_FEEDBACK_INDEX_TABLE} ({_FEEDBACK_INDEX_COLUMN})"
# For the index builds at the end of a PostgreSQL load; the server's default (64MB) makes them spill to disk.
LOAD_MAINTENANCE_WORK_MEM = "256MB"


class DemoSourceExistsError(RuntimeError):
    """The target already has source tables and replacing them was not asked for."""


def _as_location(location: SourceLocation | str) -> SourceLocation:
    return parse_source_url(location) if isinstance(location, str) else location


def _table_ddl(table: str, dialect: str) -> str:
    definitions = []
    for column in SOURCE_TABLES[table].columns:
        sql_type = column.postgres_type if dialect == "postgresql" else column.sqlite_type
        if column.primary_key and dialect == "sqlite":
            # Inline, because SQLite cannot add a primary key to an existing table.
            definitions.append(f"{column.name} {sql_type} PRIMARY KEY")
        else:
            definitions.append(f"{column.name} {sql_type}{'' if column.nullable else ' NOT NULL'}")
    return f"CREATE TABLE {table} ({', '.join(definitions)})"


def _postgres_indexes() -> list[tuple[str, str]]:
    """(drop, create) per PostgreSQL index, so that a bulk load can build each once, after the rows."""
    pairs = [
        (
            f"ALTER TABLE {table.name} DROP CONSTRAINT IF EXISTS {table.name}_pkey",
            f"ALTER TABLE {table.name} ADD CONSTRAINT {table.name}_pkey PRIMARY KEY ({column.name})",
        )
        for table in SOURCE_TABLES.values()
        for column in table.columns
        if column.primary_key
    ]
    pairs.append((f"DROP INDEX IF EXISTS {FEEDBACK_INDEX}", FEEDBACK_INDEX_DDL))
    return pairs


def _schema_statements(dialect: str) -> list[str]:
    # No foreign keys: the app writes orphans, and the demo must hold them too.
    tables = [_table_ddl(t, dialect) for t in SOURCE_TABLES]
    if dialect == "postgresql":
        return [*tables, *(create for _, create in _postgres_indexes())]
    return [*tables, FEEDBACK_INDEX_DDL]


def _refuse_existing(existing: Sequence[str], location: SourceLocation) -> None:
    if existing:
        raise DemoSourceExistsError(
            f"the {location.describe()} already has the table(s) {', '.join(sorted(existing))}; "
            "pass replace=True (--replace) to drop and recreate them"
        )


def create_schema(location: SourceLocation | str, *, replace: bool = False) -> None:
    """Create the five source tables and the created_at index; `replace` drops existing ones first."""
    location = _as_location(location)
    names = list(SOURCE_TABLES)
    if location.dialect == "postgresql":
        with postgres_connection(location) as conn:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema() AND table_name = ANY(%s)",
                    (names,),
                )
                existing = [row[0] for row in cur.fetchall()]
                if replace:
                    cur.execute(f"DROP TABLE IF EXISTS {', '.join(names)}")
                else:
                    _refuse_existing(existing, location)
                for statement in _schema_statements("postgresql"):
                    cur.execute(statement)
            conn.commit()
        return
    location.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite_connection(location, read_only=False) as conn:
        placeholders = ", ".join("?" for _ in names)
        existing = [
            row[0]
            for row in conn.execute(
                f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({placeholders})", names
            )
        ]
        with conn:
            if replace:
                for name in names:
                    conn.execute(f"DROP TABLE IF EXISTS {name}")
            else:
                _refuse_existing(existing, location)
            for statement in _schema_statements("sqlite"):
                conn.execute(statement)


def _copy_frame(cur: psycopg2.extensions.cursor, table: str, frame: pl.DataFrame) -> None:
    statement = f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv)"
    for start in range(0, frame.height, COPY_CHUNK_ROWS):
        buffer = io.BytesIO()
        # Empty strings are written quoted and nulls as nothing, which is how COPY's CSV tells them apart.
        frame.slice(start, COPY_CHUNK_ROWS).write_csv(
            buffer, include_header=False, datetime_format=COPY_TIMESTAMP_FORMAT
        )
        buffer.seek(0)
        cur.copy_expert(statement, buffer, size=1 << 20)


def _sqlite_ready(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        [pl.col(name).dt.strftime(SQLITE_TIMESTAMP_FORMAT) for name, dtype in frame.schema.items() if dtype == UTC_US]
        + [pl.col(name).cast(pl.Int8) for name, dtype in frame.schema.items() if dtype == pl.Boolean]
    )


def load(location: SourceLocation | str, data: DemoData) -> None:
    """Insert `data` into tables made by create_schema, in one transaction."""
    location = _as_location(location)
    if location.dialect == "postgresql":
        with postgres_connection(location) as conn:
            conn.set_client_encoding("UTF8")
            with conn.cursor() as cur:
                # PostgreSQL's advice for bulk loads: build the indexes once after the rows rather than
                # row by row (a year loads in 70 s instead of 100 s). It is one transaction, so no reader ever
                # sees the tables without them, and the primary keys are still checked when rebuilt.
                cur.execute(f"SET LOCAL maintenance_work_mem = '{LOAD_MAINTENANCE_WORK_MEM}'")
                indexes = _postgres_indexes()
                for drop, _ in indexes:
                    cur.execute(drop)
                for table, frame in data.tables().items():
                    _copy_frame(cur, table, frame)
                for _, create in indexes:
                    cur.execute(create)
                # Fresh statistics, so the pipeline's first queries are planned on the real sizes.
                cur.execute(f"ANALYZE {', '.join(SOURCE_TABLES)}")
            conn.commit()
        return
    with sqlite_connection(location, read_only=False) as db, db:
        for table, frame in data.tables().items():
            columns = ", ".join(frame.columns)
            placeholders = ", ".join("?" for _ in frame.columns)
            db.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", _sqlite_ready(frame).iter_rows())


def write_demo_source(
    url: str,
    *,
    end_date: dt.date,
    days: int,
    rows_per_day: int,
    seed: int = 0,
    replace: bool = True,
    users: int | None = None,
) -> DemoData:
    """Create the schema at `url`, generate the demo data and load it; returns what was loaded."""
    location = parse_source_url(url)
    # The schema first: an existing source is refused before minutes of generating.
    create_schema(location, replace=replace)
    data = generate(end_date=end_date, days=days, rows_per_day=rows_per_day, seed=seed, users=users)
    load(location, data)
    return data
