"""Keyed pseudonyms: HMAC-SHA256 of the decimal user id (docs/contract.md, section 4)."""

from __future__ import annotations

import hashlib
import hmac

import polars as pl


def pseudonym(user_id: int, key: bytes) -> str:
    return hmac.new(key, str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()


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
