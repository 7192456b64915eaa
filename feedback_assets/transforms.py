"""The export's rules (docs/contract.md, section 5) as pure Polars functions; the CSV's cells of
section 4 are `csv_cells`.

Every function takes and returns frames; none reads or writes anything. Frames may span several
daily partitions: the `partition` column (a UTC date) says which row belongs where, so a ranged
run computes a year in one pass and still reports each day's own numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import polars_hash as plh

from feedback_assets.pseudonyms import PseudonymCache
from feedback_assets.settings import DedupeScope

RATING_RANGES: dict[str, tuple[int, int]] = {
    "helpful_rating": (1, 5),
    "product_satisfaction": (1, 5),
    "routine_completion_pct": (0, 100),
}
RATING_FIELDS = (*RATING_RANGES, "would_recommend")

# Outcomes of docs/contract.md section 5, in the order the rules apply; a row takes the first that fits.
REJECTED_REASONS = ("malformed", "orphan", "ambiguous", "mismatched", "out_of_range")
EXCLUDED_REASONS = ("no_consent", "erased")
SKIPPED_REASON = "too_few_fields"
ELIGIBLE = "eligible"

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"
KEY_SEPARATOR = "\x1f"


def classify(raw: pl.DataFrame, min_feedback_fields: int) -> pl.DataFrame:
    """Add `outcome`: the first rule of docs/contract.md section 5 a row fails, or `eligible`."""
    out_of_range = pl.any_horizontal(
        pl.col(name).is_not_null() & ~pl.col(name).is_between(low, high) for name, (low, high) in RATING_RANGES.items()
    )
    present = pl.sum_horizontal(pl.col(name).is_not_null().cast(pl.Int32) for name in RATING_FIELDS)
    orphan = ~(pl.col("user_found") & pl.col("analysis_found") & pl.col("record_found"))
    # An analysis whose timestamp is missing or did not parse cannot give the CSV its analysis_created_at.
    # An ambiguous row's analysis values were dropped in the join (which row is meant is unknown), so
    # only its own stored values can make it malformed.
    missing_time = pl.col("analysis_found") & ~pl.col("ambiguous") & pl.col("analysis_created_at").is_null()
    malformed = pl.col("malformed") | missing_time
    outcome = (
        pl.when(malformed)
        .then(pl.lit("malformed"))
        .when(orphan)
        .then(pl.lit("orphan"))
        # Before consent: an ambiguous user's consent is unknown, and a mismatched row's analysis or
        # record is another person's, whatever this user consented to.
        .when(pl.col("ambiguous"))
        .then(pl.lit("ambiguous"))
        .when(pl.col("mismatched"))
        .then(pl.lit("mismatched"))
        # Consent that is missing or does not parse is no consent.
        .when(~pl.col("ml_training_consent").fill_null(False))
        .then(pl.lit("no_consent"))
        .when(pl.col("erasure_requested"))
        .then(pl.lit("erased"))
        .when(out_of_range)
        .then(pl.lit("out_of_range"))
        .when(present < min_feedback_fields)
        .then(pl.lit(SKIPPED_REASON))
        .otherwise(pl.lit(ELIGIBLE))
    )
    return raw.with_columns(outcome=outcome)


def rejected_counts(rejected: pl.DataFrame) -> dict[str, int]:
    """`rejected_<reason>` for every reason, zero included, of a day's quarantined rows."""
    found = dict(rejected.group_by("reason").len().iter_rows())
    return {f"rejected_{reason}": found.get(reason, 0) for reason in REJECTED_REASONS}


def rejected_rows(classified: pl.DataFrame) -> pl.DataFrame:
    """The quarantine: each rejected window row's feedback id and reason, nothing personal."""
    return (
        classified.filter(~pl.col("is_history") & pl.col("outcome").is_in(REJECTED_REASONS))
        .select("partition", "feedback_id", pl.col("outcome").alias("reason"))
        .sort("partition", "feedback_id")
    )


def _without_nul(text: pl.Expr) -> pl.Expr:
    """NUL bytes (SQLite lets the app store them) break many CSV readers and mean nothing in a label;
    they go before any normalising, so a label differing only by a NUL is the same label."""
    return text.str.replace_all("\x00", "", literal=True)


def nul_free(frame: pl.DataFrame, names: Sequence[str]) -> dict[str, pl.Expr]:
    """`_without_nul` of each of `names` that holds a NUL in `frame`, the column as it is otherwise.
    Looking for a NUL is a memchr; removing one rewrites every value, found or not: a 36-day slice's
    CSV cells took 0.63 s with every text column rewritten, 0.38 s this way (docs/benchmarks.md, lesson 20)."""
    if not names or frame.is_empty():
        return {name: pl.col(name) for name in names}
    holds_nul = frame.select(pl.col(name).str.contains("\x00", literal=True).any() for name in names).row(0)
    return {
        name: _without_nul(pl.col(name)) if found else pl.col(name)
        for name, found in zip(names, holds_nul, strict=True)
    }


def age_range(age: pl.Expr) -> pl.Expr:
    """The contract's age buckets; ages outside 0..120 are treated as unknown."""
    return (
        pl.when(age.is_null() | (age < 0) | (age > 120))
        .then(pl.lit(None, pl.String))
        .when(age < 18)
        .then(pl.lit("<18"))
        .when(age < 25)
        .then(pl.lit("18-25"))
        .when(age < 35)
        .then(pl.lit("25-35"))
        .when(age < 50)
        .then(pl.lit("35-50"))
        .otherwise(pl.lit("50+"))
    )


def normalize_conditions(conditions: pl.Expr) -> pl.Expr:
    """Lower-cased, trimmed, de-duplicated, sorted labels joined with ','; '' when there are none."""
    labels = conditions.fill_null("").str.split(",").list.eval(pl.element().str.strip_chars().str.to_lowercase())
    return labels.list.filter(pl.element() != "").list.unique().list.sort().list.join(",")


def anonymize(
    classified: pl.DataFrame, hmac_key: bytes, include_image_urls: bool, pseudonyms: PseudonymCache | None = None
) -> pl.DataFrame:
    """The eligible rows with every direct identifier replaced or dropped (docs/contract.md, section 4).

    `pseudonyms` carries the pseudonyms computed for earlier slices of the same run."""
    eligible = classified.filter(pl.col("outcome") == ELIGIBLE)
    image_url = (
        pl.when(pl.col("image_sharing_consent")).then(pl.col("image_url")).otherwise(None)
        if include_image_urls
        else pl.lit(None, pl.String)
    )
    # Normalised once per distinct text: an app has a few hundred label combinations, not millions,
    # and the list operations cost 0.4 s per two months of rows when run per row.
    labels = eligible.select(pl.col("conditions").unique()).with_columns(
        normalize_conditions(_without_nul(pl.col("conditions"))).alias("normalized_conditions")
    )
    mapping = (pseudonyms or PseudonymCache(hmac_key)).of(eligible["user_id"])
    return (
        eligible.join(mapping, on="user_id", how="left", maintain_order="left")
        .join(labels, on="conditions", how="left", nulls_equal=True, maintain_order="left")
        .select(
            "partition",
            "is_history",
            "feedback_id",
            "analysis_hash",
            "recommendation_id",
            "helpful_rating",
            "product_satisfaction",
            "routine_completion_pct",
            "would_recommend",
            pl.col("normalized_conditions").alias("conditions"),
            nul_free(eligible, ["rules_applied"])["rules_applied"].str.strip_chars().alias("rules_applied"),
            "timeframe",
            age_range(pl.col("age")).alias("age_range"),
            pl.col("created_at").alias("feedback_created_at"),
            "analysis_created_at",
            image_url.alias("image_url"),
        )
    )


def dedupe_key(scope: DedupeScope) -> pl.Expr:
    """A stable digest of what makes two rows the same pair; it holds no user id, only the pseudonym."""
    parts = [pl.col("analysis_hash"), pl.col("recommendation_id")]
    if scope == "exact":
        parts.append(pl.col("feedback_created_at").dt.strftime(TIMESTAMP_FORMAT))
    return plh.concat_str(parts, separator=KEY_SEPARATOR).chash.sha2_256()


def with_dedupe_key(pairs: pl.DataFrame, scope: DedupeScope) -> pl.DataFrame:
    return pairs.with_columns(dedupe_key=dedupe_key(scope))


def deduplicate(keyed: pl.DataFrame, state_owners: pl.DataFrame | None = None) -> pl.DataFrame:
    """Keep the first row of each dedupe key, in the partition that holds it.

    `keyed` holds the pairs with their `dedupe_key` (`with_dedupe_key`). It may hold history rows
    (`is_history`): eligible rows from before a row's partition, so that `first_per_pair` gives a
    key to the partition of its earliest row whatever order the partitions run in. `state_owners`
    (`dedupe_key`, `owner`) are keys the dedupe state gives to partitions outside this run; a key
    already owned by an earlier partition is never exported again. Adds `kept`; history rows are
    dropped.
    """
    # A feedback id appears once per (partition, key): the earliest row is the one whose id leads.
    # (A ranked struct over the same window measured 14x slower on 412k rows.)
    earliest_id = pl.col("feedback_id").sort_by("feedback_created_at", "feedback_id").first()
    first = pl.col("feedback_id") == earliest_id.over("partition", "dedupe_key")
    kept = first & ~pl.col("is_history")
    if state_owners is not None and state_owners.height:
        earliest_owner = state_owners.group_by("dedupe_key").agg(pl.col("owner").min())
        keyed = keyed.join(earliest_owner, on="dedupe_key", how="left")
        kept = kept & ~(pl.col("owner").is_not_null() & (pl.col("owner") < pl.col("partition")))
        return keyed.with_columns(kept=kept).filter(~pl.col("is_history")).drop("owner")
    return keyed.with_columns(kept=kept).filter(~pl.col("is_history"))


def owned_keys(deduplicated: pl.DataFrame) -> pl.DataFrame:
    """The keys each partition exported and so owns: what the dedupe state records."""
    return deduplicated.filter(pl.col("kept")).select("dedupe_key", "partition")


def superseded_owners(deduplicated: pl.DataFrame, state_owners: pl.DataFrame) -> list[str]:
    """Later days whose state owns a key an earlier day of this run now exports.

    This happens only after the source changed (a late row for an earlier day); the later days'
    files still hold the key and must be re-run, which drops it there.
    """
    if state_owners.is_empty():
        return []
    taken = deduplicated.filter(pl.col("kept")).select("dedupe_key", "partition")
    later = taken.join(state_owners, on="dedupe_key").filter(pl.col("owner") > pl.col("partition"))
    return sorted({day.isoformat() for day in later["owner"].unique().to_list()})


def _zeroes(partitions: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, int]]:
    return {key: dict.fromkeys(names, 0) for key in partitions}


OUTCOME_COUNTS = (
    "total_feedback_records",
    "anonymized_records",
    "skipped_records",
    "rejected_records",
    *(f"rejected_{reason}" for reason in REJECTED_REASONS),
    "excluded_records",
    *(f"excluded_{reason}" for reason in EXCLUDED_REASONS),
)
DEDUPE_COUNTS = ("exported_records", "deduplicated_records")


def outcome_counts(classified: pl.DataFrame, partitions: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per partition: every window row counted once by its outcome (history rows are not counted)."""
    counts = _zeroes(partitions, OUTCOME_COUNTS)
    by_outcome = classified.filter(~pl.col("is_history")).group_by("partition", "outcome").len()
    for partition, outcome, n in by_outcome.iter_rows():
        entry = counts[partition.isoformat()]
        entry["total_feedback_records"] += n
        if outcome == ELIGIBLE:
            entry["anonymized_records"] += n
        elif outcome == SKIPPED_REASON:
            entry["skipped_records"] += n
        elif outcome in REJECTED_REASONS:
            entry["rejected_records"] += n
            entry[f"rejected_{outcome}"] += n
        else:
            entry["excluded_records"] += n
            entry[f"excluded_{outcome}"] += n
    return counts


def dedupe_counts(deduplicated: pl.DataFrame, partitions: Sequence[str]) -> dict[str, dict[str, int]]:
    counts = _zeroes(partitions, DEDUPE_COUNTS)
    for partition, kept, n in deduplicated.group_by("partition", "kept").len().iter_rows():
        counts[partition.isoformat()]["exported_records" if kept else "deduplicated_records"] += n
    return counts


def unaccounted_rows(counts: dict[str, int]) -> int:
    """Rows the statistics lose or invent: zero when every feedback row is counted exactly once."""
    accounted = (
        counts["exported_records"]
        + counts.get("suppressed_records", 0)
        + counts["deduplicated_records"]
        + counts["skipped_records"]
        + counts["rejected_records"]
        + counts["excluded_records"]
    )
    return counts["total_feedback_records"] - accounted
