"""The user-disjoint split of the typed export (issue 25; docs/ml.md): FEEDBACK_SPLIT read and
checked, and each row's split decided by a keyed hash of its user's stable pseudonym. No Dagster here.

Training and evaluation must not share a user. With FEEDBACK_PSEUDONYM_SCOPE year, month or day the
exported pseudonyms cannot be grouped across periods, so only the pipeline can keep a user in one
split: it decides from the stable pseudonym, which never leaves the storage dir, through a key of its
own derived from the master key, so the draw is neither the pseudonym nor computable from it.
"""

from __future__ import annotations

import hmac
import math
import threading
from dataclasses import dataclass
from typing import Final, Literal, get_args

import polars as pl

from feedback_assets.errors import ConfigError
from feedback_assets.pseudonyms import hkdf_expand

SplitName = Literal["train", "validation", "test"]
SPLIT_NAMES: tuple[SplitName, ...] = get_args(SplitName)
# The splits' column type: the names in this order, whatever the frame holds.
SPLIT_DTYPE: Final = pl.Enum(SPLIT_NAMES)
DEFAULT_SPLIT: Final = "train=0.8,validation=0.1,test=0.1"
RATIO_TOLERANCE: Final = 1e-9
# HKDF-Expand's info for the split key: distinct from every period key's (`pseudonyms.PERIOD_KEY_INFO`).
SPLIT_KEY_INFO: Final = b"feedback_assets split v1"
# A draw is the digest's first 53 bits over 2**53: every value is exact in a float, uniform in [0, 1).
DRAW_BITS: Final = 53


@dataclass(frozen=True)
class Split:
    """The share of users in each split; they add up to 1."""

    train: float
    validation: float
    test: float

    @property
    def ratios(self) -> dict[SplitName, float]:
        return {name: getattr(self, name) for name in SPLIT_NAMES}

    def __str__(self) -> str:
        """The setting's text, which `parse_split` reads back to this same Split (the resource shows it)."""
        return ",".join(f"{name}={ratio!r}" for name, ratio in self.ratios.items())


def _hint() -> str:
    return f"give each of {', '.join(SPLIT_NAMES)} once as name=ratio, separated by commas, e.g. {DEFAULT_SPLIT}"


def _ratio(variable: str, name: str, text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        raise ConfigError(f"{variable}: the ratio of {name} must be a number, not {text!r}; {_hint()}") from None
    if not math.isfinite(ratio) or ratio <= 0:
        raise ConfigError(
            f"{variable}: the ratio of {name} must be more than 0 (every split needs users), not {text!r}; {_hint()}"
        )
    return ratio


def parse_split(variable: str, raw: object) -> Split:
    """FEEDBACK_SPLIT: `train=0.8,validation=0.1,test=0.1`, in any order, spaces allowed; each of the three
    splits once, every ratio above 0, the ratios adding up to 1 (within 1e-9)."""
    ratios: dict[str, float] = {}
    for part in str(raw).split(","):
        name, equals, text = (piece.strip() for piece in part.partition("="))
        if not equals or not name:
            raise ConfigError(f"{variable} must be name=ratio pairs, not {part.strip()!r}; {_hint()}")
        if name not in SPLIT_NAMES:
            raise ConfigError(f"{variable} names {name!r}, which is not a split; {_hint()}")
        if name in ratios:
            raise ConfigError(f"{variable} names {name} twice; {_hint()}")
        ratios[name] = _ratio(variable, name, text)
    missing = [name for name in SPLIT_NAMES if name not in ratios]
    if missing:
        raise ConfigError(f"{variable} gives no ratio for {', '.join(missing)}; {_hint()}")
    total = math.fsum(ratios.values())
    if abs(total - 1) > RATIO_TOLERANCE:
        raise ConfigError(f"{variable}: the ratios add up to {total!r}, not 1; {_hint()}")
    return Split(ratios["train"], ratios["validation"], ratios["test"])


def split_key(master_key: bytes) -> bytes:
    """The key of the split's draws: HKDF-Expand of the master key with its own info, so a draw is
    not a pseudonym of any scope, and rotating the master key (a new export dir) draws anew."""
    return hkdf_expand(master_key, SPLIT_KEY_INFO)


def user_draws(stable_pseudonyms: pl.Series, master_key: bytes) -> pl.DataFrame:
    """Each distinct stable pseudonym with its draw in [0, 1): columns `stable_pseudonym`, `draw`.

    HMAC-SHA256 in Python once per distinct user, as `pseudonyms.scoped_pseudonyms` does: Polars has no
    keyed hash (docs/decisions.md, "HMAC over distinct user ids"). The digests' first 8 bytes are made
    numbers by Polars, not per user in Python: 0.7 s against 1.0 s for 200k users on the loaded 2 cores."""
    key = split_key(master_key)
    distinct = stable_pseudonyms.drop_nulls().unique().sort().cast(pl.String)
    heads = [hmac.digest(key, pseudonym.encode("ascii"), "sha256")[:8] for pseudonym in distinct.to_list()]
    first_bits = pl.Series(heads, dtype=pl.Binary).bin.reinterpret(dtype=pl.UInt64, endianness="big")
    draw = (pl.col("bits") // (1 << (64 - DRAW_BITS))).cast(pl.Float64) / float(1 << DRAW_BITS)
    return pl.DataFrame({"stable_pseudonym": distinct, "bits": first_bits}).select(
        "stable_pseudonym", draw.alias("draw")
    )


class SplitDraws:
    """The draws of the users a run has met so far, so each user's HMAC is computed once per run.

    The same users give feedback all year: drawn a day at a time, a year's export computed 5 million
    HMACs for about 190,000 users. Safe to share between the threads that write a slice's days."""

    def __init__(self, master_key: bytes) -> None:
        self._master_key = master_key
        self._known = pl.DataFrame(schema={"stable_pseudonym": pl.String, "draw": pl.Float64})
        self._lock = threading.Lock()

    def of(self, stable_pseudonyms: pl.Series) -> pl.Series:
        """The draw of each of `stable_pseudonyms`, in their order (null for a null).

        One join of the rows with the users met before, then the few new users drawn and put in
        place: finding the new users first, by an anti-join, cost as much as the join itself."""
        rows = stable_pseudonyms.cast(pl.String).to_frame("stable_pseudonym")
        with self._lock:
            joined = rows.join(self._known, on="stable_pseudonym", how="left", maintain_order="left")
            unknown = joined["draw"].is_null() & rows["stable_pseudonym"].is_not_null()
            if not unknown.any():
                return joined["draw"]
            at = unknown.arg_true()
            missing = rows["stable_pseudonym"].gather(at).to_frame()
            new = user_draws(missing["stable_pseudonym"], self._master_key)
            self._known = pl.concat([self._known, new])
        placed = missing.join(new, on="stable_pseudonym", how="left", maintain_order="left")["draw"]
        return joined["draw"].scatter(at, placed)


def split_of_draw(draw: pl.Expr, split: Split) -> pl.Expr:
    """The split whose share of [0, 1) holds `draw`: train first, then validation, then test."""
    train_end = split.train
    validation_end = split.train + split.validation
    return (
        pl.when(draw < train_end)
        .then(pl.lit("train"))
        .when(draw < validation_end)
        .then(pl.lit("validation"))
        .otherwise(pl.lit("test"))
        .cast(SPLIT_DTYPE)
    )


def assign_splits(
    stable_pseudonyms: pl.Series, split: Split, master_key: bytes, known: SplitDraws | None = None
) -> pl.Series:
    """The split of each row, in the rows' order, named `split` (an Enum of train, validation, test);
    `known` keeps the draws of a run's earlier days, which must be made with the same `master_key`.

    It depends on the stable pseudonym alone: not on the day, the row's place, the other rows or the
    pseudonym scope, so a user is in one split in every file, run and backfill."""
    if stable_pseudonyms.null_count():
        raise ValueError("a row without a stable pseudonym has no split")
    draws = (known if known is not None else SplitDraws(master_key)).of(stable_pseudonyms)
    return draws.to_frame("draw").select(split_of_draw(pl.col("draw"), split).alias("split")).to_series()


def split_counts(splits: pl.Series) -> dict[SplitName, int]:
    """Rows per split, every split included (zero when it has none), in the splits' order."""
    found = dict(splits.cast(pl.String).value_counts().iter_rows())
    return {name: int(found.get(name, 0)) for name in SPLIT_NAMES}
