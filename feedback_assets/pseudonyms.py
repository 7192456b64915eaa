"""Keyed pseudonyms (docs/contract.md, section 4).

A user's stable pseudonym is HMAC-SHA256 of the decimal user id under the master key; it is what
the intermediate partitions and the dedupe state hold. The exported `analysis_hash` is that stable
pseudonym, or, with FEEDBACK_PSEUDONYM_SCOPE year, month or day, HMAC-SHA256 of the stable
pseudonym under a key of the period the feedback's day falls in, so rows of different periods
cannot be linked by pseudonym without the master key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import TYPE_CHECKING

import polars as pl

# For annotations only: settings.py imports splits.py, which derives its key here.
if TYPE_CHECKING:
    from feedback_assets.settings import PseudonymScope

PERIOD_KEY_INFO = "feedback_assets pseudonym period v1 "


def pseudonym(user_id: int, key: bytes) -> str:
    # hmac.digest is OpenSSL's one-shot HMAC: no HMAC object per id (0.58 s against 0.78 s per 200k ids).
    return hmac.digest(key, str(user_id).encode("utf-8"), "sha256").hex()


def pseudonymize_user_ids(user_ids: pl.Series, key: bytes) -> pl.DataFrame:
    """Map each distinct user id to its pseudonym: columns `user_id`, `analysis_hash`.

    Polars has no keyed hash (polars-hash offers plain SHA-2, which anyone can reverse by hashing
    every id), so this is hashlib's HMAC in Python, once per distinct user rather than per row:
    a year's 200k users take under a second (docs/decisions.md, "HMAC over distinct user ids").
    """
    distinct = user_ids.drop_nulls().unique().sort()
    return pl.DataFrame(
        {
            "user_id": distinct,
            "analysis_hash": pl.Series([pseudonym(uid, key) for uid in distinct.to_list()], dtype=pl.String),
        }
    )


class PseudonymCache:
    """Pseudonyms of the users a run has met so far, so each is computed once per run.

    The same users give feedback all year: a year's run in ten slices met about 190,000 distinct
    users in every slice, and computed their pseudonyms ten times over.
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.known = pl.DataFrame(schema={"user_id": pl.Int64, "analysis_hash": pl.String})

    def of(self, user_ids: pl.Series) -> pl.DataFrame:
        """`user_id` -> `analysis_hash` for every distinct id of `user_ids` (and those met before)."""
        new = user_ids.drop_nulls().unique().to_frame("user_id").join(self.known, on="user_id", how="anti")
        if not new.is_empty():
            self.known = pl.concat([self.known, pseudonymize_user_ids(new["user_id"], self.key)])
        return self.known


def hkdf_expand(prk: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-Expand of RFC 5869 with SHA-256.

    Written here rather than taken from `cryptography`: it is four lines of the standard library's
    HMAC, checked against the RFC's test vectors, and the master key is already a uniformly random
    secret of at least 32 bytes, so the Extract step adds nothing.
    """
    blocks, previous = b"", b""
    for counter in range(1, -(-length // hashlib.sha256().digest_size) + 1):
        previous = hmac.new(prk, previous + info + bytes([counter]), hashlib.sha256).digest()
        blocks += previous
    return blocks[:length]


PERIOD_FORMATS: dict[PseudonymScope, str] = {"year": "%Y", "month": "%Y-%m", "day": "%Y-%m-%d"}


def period_label(day: dt.date, scope: PseudonymScope) -> str:
    """The period of `day` a pseudonym lives for: '2025', '2025-11' or '2025-11-01'."""
    return day.strftime(PERIOD_FORMATS[scope])


def period_key(master_key: bytes, label: str) -> bytes:
    return hkdf_expand(master_key, (PERIOD_KEY_INFO + label).encode("ascii"))


def scoped_pseudonyms(rows: pl.DataFrame, scope: PseudonymScope, master_key: bytes) -> pl.Series:
    """The exported pseudonym of each row of `rows` (`partition`, the day; `analysis_hash`, the stable
    pseudonym), in the same order. Computed once per distinct (period, user), like the stable one."""
    if scope == "stable":
        return rows["analysis_hash"]
    labelled = rows.select(pl.col("partition").dt.strftime(PERIOD_FORMATS[scope]).alias("period"), "analysis_hash")
    distinct = labelled.drop_nulls().unique()
    keys = {label: period_key(master_key, label) for label in distinct["period"].unique().to_list()}
    scoped = distinct.with_columns(
        pl.Series(
            "scoped",
            [
                hmac.new(keys[label], stable.encode("ascii"), hashlib.sha256).hexdigest()
                for label, stable in distinct.select("period", "analysis_hash").iter_rows()
            ],
            dtype=pl.String,
        )
    )
    joined = labelled.join(scoped, on=["period", "analysis_hash"], how="left", maintain_order="left")
    return joined["scoped"].alias("analysis_hash")
