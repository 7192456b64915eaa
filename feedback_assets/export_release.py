"""The export dir's card and release, made from what is on disk (docs/ml.md): the day manifests say
which files each day has and its rows per split; the files themselves give their SHA-256 and rows.
No Dagster here.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping
from typing import Any, Final

import polars as pl

from feedback_assets.dataset_card import CARD_NAME, CardFacts, card_text
from feedback_assets.day_files import MANIFEST_PARQUET, MANIFEST_SPLIT_COUNTS
from feedback_assets.files import concurrently, reading, rematerialize_command
from feedback_assets.release import RELEASE_NAME, DataFile, release, release_bytes
from feedback_assets.settings import CONTRACT_VERSION, ExportSettings
from feedback_assets.splits import SPLIT_NAMES, SplitName
from feedback_assets.storage import Storage
from feedback_assets.storage.base import WRITES, Sink, files_matching, read_text, write_bytes

MANIFEST_FILE: Final = re.compile(r"feedback_training_(\d{4})(\d{2})(\d{2})\.manifest\.json")
# Each day's smallest group and fewest distinct conditions, as its rows were written (day_files).
MANIFEST_K_ANONYMITY: Final = "k_anonymity"


def manifests(exports: Storage) -> dict[str, dict[str, Any]]:
    """Every day's manifest by day (YYYY-MM-DD), oldest first."""
    found: dict[str, dict[str, Any]] = {}
    for name, match in files_matching(exports, MANIFEST_FILE):
        day = "-".join(match.groups())
        with reading(exports.location(name), f"re-run the day: {rematerialize_command('training_csv', day)}"):
            found[day] = json.loads(read_text(exports, name))
    return dict(sorted(found.items()))


def card_facts(settings: ExportSettings, written: Mapping[str, Mapping[str, Any]]) -> CardFacts:
    """The card's facts: the settings in force, each day's rows per split, and k and l as the smallest
    of the days' own: a lower bound of the whole export's, since groups joined across days only grow."""
    typed = {day: manifest for day, manifest in written.items() if MANIFEST_SPLIT_COUNTS in manifest}
    measured = [m[MANIFEST_K_ANONYMITY] for m in typed.values() if m.get(MANIFEST_K_ANONYMITY, {}).get("rows")]
    return CardFacts(
        include_image_urls=settings.include_image_urls,
        timestamp_precision=settings.timestamp_precision,
        pseudonym_scope=settings.pseudonym_scope,
        hmac_key_id=settings.hmac_key_id,
        k_anonymity_threshold=settings.k_anonymity_threshold,
        suppress_small_groups=settings.suppress_small_groups,
        split=settings.split,
        rows_per_day={day: dict(m[MANIFEST_SPLIT_COUNTS]) for day, m in typed.items()},
        measured_k=min((int(k["k"]) for k in measured), default=None),
        measured_l=min((int(k["l"]) for k in measured), default=None),
        export_formats=settings.export_formats,
    )


def write_card(exports: Storage, settings: ExportSettings, sink: Sink = WRITES) -> None:
    """README.md at the export root, atomically. Only where Parquet is written: the card's configs
    point `datasets` at the split files, which a CSV-only export does not have."""
    if "parquet" in settings.export_formats:
        write_bytes(exports, CARD_NAME, card_text(card_facts(settings, manifests(exports))).encode(), sink=sink)


def _rows(name: str, data: bytes) -> int:
    if name.endswith(".parquet"):
        return int(pl.scan_parquet(io.BytesIO(data)).select(pl.len()).collect().item())
    return pl.read_csv(io.BytesIO(data), infer_schema=False).height


def _data_file(exports: Storage, name: str, described_as: Mapping[str, Any]) -> DataFile:
    """A file as it is now. A file whose bytes are the ones its manifest describes (`described_as`:
    the manifest's SHA-256 and rows of it) takes the manifest's row count rather than being read: a
    year of CSVs is 5 million rows, and reading the year's 1,095 Parquet footers took 0.58 CPU
    seconds where hashing the files took 0.08."""
    with reading(exports.location(name), "re-run its day of training_csv"):
        data = exports.read_bytes(name)
        sha256 = hashlib.sha256(data).hexdigest()
        described = sha256 == described_as.get("sha256") and isinstance(described_as.get("rows"), int)
        return DataFile(name, sha256, int(described_as["rows"]) if described else _rows(name, data))


def release_settings(settings: ExportSettings) -> dict[str, object]:
    """What shaped the files; the key only by its id."""
    return {
        "contract_version": CONTRACT_VERSION,
        "hmac_key_id": settings.hmac_key_id,
        "dedupe_scope": settings.dedupe_scope,
        "timestamp_precision": settings.timestamp_precision,
        "pseudonym_scope": settings.pseudonym_scope,
        "include_image_urls": settings.include_image_urls,
        "k_anonymity_threshold": settings.k_anonymity_threshold,
        "suppress_small_groups": settings.suppress_small_groups,
        "split": str(settings.split),
        "export_formats": list(settings.export_formats),
    }


def write_release(exports: Storage, settings: ExportSettings) -> dict[str, object]:
    """release.json at the export root, atomically: every file the days' manifests list, as it is now."""
    pinned = pinned_release(exports, settings)
    exports.ensure()
    write_bytes(exports, RELEASE_NAME, release_bytes(pinned))
    return pinned


def restate_release(exports: Storage, settings: ExportSettings, sink: Sink = WRITES) -> None:
    """After files of the export changed (an erasure): the card, and release.json where training_dataset
    wrote one, so that no release lists a file or a row that is gone. The release is made as it is
    written: a sink that only records hashes no file."""
    write_card(exports, settings, sink)
    if exports.exists(RELEASE_NAME):
        sink.write(exports, RELEASE_NAME, lambda handle: handle.write(release_bytes(pinned_release(exports, settings))))


def written_release(exports: Storage) -> dict[str, Any] | None:
    """release.json as it is at the export root; None where training_dataset never wrote one."""
    if not exports.exists(RELEASE_NAME):
        return None
    repair = (
        "materialize training_dataset again: "
        "dagster asset materialize -m feedback_assets.definitions --select training_dataset"
    )
    with reading(exports.location(RELEASE_NAME), repair):
        pinned: dict[str, Any] = json.loads(read_text(exports, RELEASE_NAME))
    return pinned


def pinned_release(exports: Storage, settings: ExportSettings) -> dict[str, object]:
    """The release of the files the days' manifests list, as they are now."""
    written = manifests(exports)
    named: list[tuple[str, Mapping[str, Any]]] = []
    for manifest in written.values():
        if manifest.get("csv"):
            named.append((str(manifest["csv"]), {"sha256": manifest.get("sha256"), "rows": manifest.get("row_count")}))
        named += [(str(entry["path"]), entry) for entry in manifest.get(MANIFEST_PARQUET, [])]
    # Read and hashed a few at a time: the files of a year with Parquet are 1,460.
    files = concurrently(lambda entry: _data_file(exports, *entry), [e for e in named if exports.exists(e[0])])
    days = list(written)
    return release(files, release_settings(settings), days[0] if days else None, days[-1] if days else None)


def rows_per_split(pinned: Mapping[str, Any]) -> dict[SplitName, int]:
    """The rows of each split's Parquet files in a release."""
    files = pinned["files"]
    return {name: sum(f["rows"] for f in files if f["path"].startswith(f"parquet/{name}/")) for name in SPLIT_NAMES}
