"""The hand-written source around the day 2025-10-25 (every awkward case of docs/contract.md,
section 1, in a few rows), and the CSV and the counts the graph must make of it."""

from __future__ import annotations

from feedback_assets_tests.sources import at, rating, write_source

HEADER = (
    "analysis_hash,recommendation_id,helpful_rating,product_satisfaction,routine_completion_pct,would_recommend,"
    "conditions,rules_applied,timeframe,age_range,feedback_created_at,analysis_created_at\n"
)


# The contract's pseudonyms of users 1..12 under graph.KEY_HEX, computed outside the project, so that
# a change to how the product computes them fails every end-to-end test that expects these cells:
#   printf '%s' "$id" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY_HEX
PSEUDONYMS = {
    1: "8c18133145809b3311e9a74c937e5ddf1d6ad5a6042b52f4f21775f6deacad98",
    2: "30cf9046871aa2ab1e39f1de9c1f4935fbca05d17b7981de3d109d963e07b035",
    3: "a3b87df7661839e80f81574d882775eff1341b9d740e40ac292436da3c555ece",
    4: "63713729e0d5c7de7a862fef1a545fd5fe36bb25bb1bff7e75af4f9014b0e13b",
    5: "c11d90e0b875e53d46bf2f7251a2bd6670f683524c3e1eb1e2673c912576ffe5",
    6: "3434caf4e773b841293f53e9e683c6404e447dd79753d71b4fe1c74fa8a6eb99",
    7: "1ff0033c287f44e0baae006e40742fac006ed0b54cf22dbab6ff3d997246055c",
    8: "d7f3224aa56374493f35e710d5b1ce072b64dacb8869f2817ce7cff51f5000b7",
    9: "06c11a1ebb5758d73051529a90e5aa5789bb5c2d84beb7182eb11ff6384089da",
    10: "ca8c4391325d89140c0cca965ed7dfecb311cb221670587c6f1f694613e29c75",
    11: "187c393512b0989421d0522fa7f5c7eb21e5abafa538b834fe2481fca5ac0226",
    12: "60021fecb4dee01040921321bfe30b4a411181530efa2da74137d41fc8fe6a88",
}


def h(user_id: int) -> str:
    return PSEUDONYMS[user_id]


def write_crafted_source(url: str) -> None:
    """Every awkward case of docs/contract.md, section 1 in a few rows, around the day 2025-10-25."""
    write_source(
        url,
        users=[
            {"id": 1, "age": 30, "ml_training_consent": True, "image_sharing_consent": True},
            {"id": 2, "age": 17, "ml_training_consent": True, "image_sharing_consent": False},
            {"id": 3, "age": 50, "ml_training_consent": False, "image_sharing_consent": True},
            {"id": 4, "age": 24, "ml_training_consent": True, "image_sharing_consent": True},
            {"id": 5, "age": 121, "ml_training_consent": True, "image_sharing_consent": False},
            {"id": 6, "age": None, "ml_training_consent": True, "image_sharing_consent": False},
        ],
        analyses=[
            {
                "id": 10,
                "user_id": 1,
                "conditions": " Acne, oily,acne ",
                "image_url": "https://img.invalid/1.jpg",
                "created_at": at("2025-10-24 10:00:00"),
            },
            {
                "id": 20,
                "user_id": 2,
                "conditions": 'Rosacea, "red" cheeks\nline2, 日本',
                "image_url": None,
                "created_at": at("2025-10-24 11:00:00.5"),
            },
            {"id": 30, "user_id": 3, "conditions": "dry", "created_at": at("2025-10-24 12:00:00")},
            {"id": 40, "user_id": 4, "conditions": "dry", "created_at": at("2025-10-24 12:00:00")},
            {"id": 50, "user_id": 5, "conditions": '=HYPERLINK("x")', "created_at": at("2025-10-24 13:00:00")},
            {"id": 60, "user_id": 6, "conditions": None, "created_at": at("2025-10-24 14:00:00")},
        ],
        records=[
            {"id": "rec_a", "analysis_id": 10, "rules_applied": " hydration_boost, spf_daily ", "timeframe": "4w"},
            {"id": "rec_b", "analysis_id": 20, "rules_applied": "+plus", "timeframe": None},
            {"id": "-rec_c", "analysis_id": 50, "rules_applied": "@at", "timeframe": "2w"},
            # Each analysis's own record: a record of another analysis makes the feedback mismatched.
            {"id": "rec_d", "analysis_id": 30, "rules_applied": "hydration_boost", "timeframe": "4w"},
            {"id": "rec_e", "analysis_id": 40, "rules_applied": "hydration_boost", "timeframe": "4w"},
            {"id": "rec_f", "analysis_id": 60, "rules_applied": "+plus", "timeframe": None},
        ],
        feedback=[
            rating(1001, 1, 10, "rec_a", "2025-10-25 00:00:00", 5, 4, 80, True, feedback_text='=cmd|"/c calc"'),
            rating(1002, 1, 10, "rec_a", "2025-10-25 00:00:00", 5, 4, 80, True),
            rating(1003, 2, 20, "rec_b", "2025-10-25 23:59:59.999999", 3, None, None, False),
            rating(1004, 3, 30, "rec_d", "2025-10-25 08:00:00", 4),
            rating(1005, 4, 40, "rec_e", "2025-10-25 08:00:00", 4),
            rating(1006, 5, 50, "-rec_c", "2025-10-25 09:00:00", 6),
            rating(1007, 5, 50, "-rec_c", "2025-10-25 09:30:00", 2, 2, 101),
            rating(1008, 99, 10, "rec_a", "2025-10-25 10:00:00", 4),
            rating(1009, 1, 99, "rec_a", "2025-10-25 10:00:00", 4),
            rating(1010, 1, 10, "rec_zz", "2025-10-25 10:00:00", 4),
            rating(1011, 6, 60, "rec_f", "2025-10-25 11:00:00"),
            rating(1012, 5, 50, "-rec_c", "2025-10-25 12:00:00", 1, 1, 0, None, feedback_text="line1\nline2 ü"),
            rating(1013, 6, 60, "rec_f", "2025-10-24 23:59:59.999999", 4),
            rating(1014, 6, 60, "rec_f", "2025-10-26 00:00:00", 2),
            rating(1015, 1, 10, "rec_a", "2025-10-26 09:00:00", 3),
        ],
        erasures=[{"user_id": 4}],
    )


# The default precision, day: every time is its day's midnight, so the rows fall back on
# recommendation_id ("'" sorts before "r"), then analysis_hash, for their order.
EXPECTED_20251025 = HEADER + (
    f'{h(5)},\'-rec_c,1,1,0,,"\'=hyperlink(""x"")",\'@at,2w,,'
    "2025-10-25T00:00:00.000000Z,2025-10-24T00:00:00.000000Z\n"
    f'{h(1)},rec_a,5,4,80,true,"acne,oily","hydration_boost, spf_daily",4w,25-35,'
    "2025-10-25T00:00:00.000000Z,2025-10-24T00:00:00.000000Z\n"
    f'{h(2)},rec_b,3,,,false,"""red"" cheeks\nline2,rosacea,日本",\'+plus,,<18,'
    "2025-10-25T00:00:00.000000Z,2025-10-24T00:00:00.000000Z\n"
)

# FEEDBACK_TIMESTAMP_PRECISION=microsecond: the times as the source holds them.
EXPECTED_20251025_MICROSECOND = HEADER + (
    f'{h(1)},rec_a,5,4,80,true,"acne,oily","hydration_boost, spf_daily",4w,25-35,'
    "2025-10-25T00:00:00.000000Z,2025-10-24T10:00:00.000000Z\n"
    f'{h(5)},\'-rec_c,1,1,0,,"\'=hyperlink(""x"")",\'@at,2w,,'
    "2025-10-25T12:00:00.000000Z,2025-10-24T13:00:00.000000Z\n"
    f'{h(2)},rec_b,3,,,false,"""red"" cheeks\nline2,rosacea,日本",\'+plus,,<18,'
    "2025-10-25T23:59:59.999999Z,2025-10-24T11:00:00.500000Z\n"
)

EXPECTED_COUNTS_20251025 = {
    "total_feedback_records": 12,
    "exported_records": 3,
    "deduplicated_records": 1,
    "anonymized_records": 4,
    "skipped_records": 1,
    "rejected_records": 5,
    "rejected_orphan": 3,
    "rejected_ambiguous": 0,
    "rejected_mismatched": 0,
    "rejected_out_of_range": 2,
    "rejected_malformed": 0,
    "excluded_records": 2,
    "excluded_no_consent": 1,
    "excluded_erased": 1,
}
