"""k-anonymity and l-diversity of training CSVs, measured with pyCANON in its own environment.

    .venv-pycanon/bin/python scripts/pycanon_measure.py --quasi-identifiers age_range,feedback_created_at \
        --sensitive conditions FILE [FILE ...]

Prints one JSON object: {"rows": ..., "k": ..., "l": ...} (k and l are 0 for no rows). Run by the
privacy tests and benchmarks/privacy_audit.py with .venv-pycanon's Python (requirements/pycanon.txt):
pyCANON pins versions the project cannot share. Every cell is read as text and an empty cell is a
value, as the project compares them (pandas would otherwise drop rows whose quasi-identifier is
empty from every group).
"""

import argparse
import json

import pandas as pd
from pycanon import anonymity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quasi-identifiers", required=True)
    parser.add_argument("--sensitive", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    qis = args.quasi_identifiers.split(",")
    columns = [*qis, args.sensitive]
    frames = [pd.read_csv(path, dtype=str, keep_default_na=False, usecols=columns) for path in args.files]
    data = pd.concat(frames, ignore_index=True)
    if data.empty:
        print(json.dumps({"rows": 0, "k": 0, "l": 0}))
        return
    k = anonymity.k_anonymity(data, qis)
    diversity = anonymity.l_diversity(data, qis, [args.sensitive])
    print(json.dumps({"rows": len(data), "k": int(k), "l": int(diversity)}))


if __name__ == "__main__":
    main()
