"""The code location's Dagster definitions, side by side, one module per concern: the assets, their
checks, the nightly export with its freshness deadline, erasure, the weekly audit, the alert and the
source watch. Each module imports the domain modules and names other definitions only by key or
job name, never by importing them; each ends with the one `defs` that definitions.py merges."""
