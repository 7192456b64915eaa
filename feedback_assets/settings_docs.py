"""The settings tables of docs/contract.md (section 2) and README.md, written from the settings
model (settings.py) so that they cannot drift from it: `python -m feedback_assets.settings_docs`
rewrites them, and a test (test_docs.py) fails while a file differs from what this writes.

Apart from settings.py because nothing that runs needs it, and settings.py stays a declaration."""

from __future__ import annotations

from pathlib import Path

from feedback_assets.settings import MODELS, SETTINGS
from feedback_assets.settings_fields import declared

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRACT = REPO_ROOT / "docs" / "contract.md"
README = REPO_ROOT / "README.md"


def contract_table() -> str:
    """Every setting with its meaning (the field's docstring) and default, in the models' order."""
    rows = ["| variable | meaning | default |", "|---|---|---|"]
    for model in MODELS:
        for name, setting in declared(model).items():
            meaning = " ".join((model.model_fields[name].description or "").split())
            rows.append(f"| {setting.variable} | {meaning} | `{setting.documented_default}` |")
    return "\n".join(rows) + "\n"


def readme_table() -> str:
    rows = ["| variable | default |", "|---|---|"]
    rows += [f"| `{setting.variable}` | `{setting.documented_default}`{setting.readme} |" for setting in SETTINGS]
    return "\n".join(rows) + "\n"


def with_table(text: str, table: str) -> str:
    """`text` with the table that has `table`'s header (up to the blank line after it) replaced."""
    start = text.index(table.splitlines()[0] + "\n")
    end = text.index("\n\n", start) + 1
    return text[:start] + table + text[end:]


def tables() -> dict[Path, str]:
    return {CONTRACT: contract_table(), README: readme_table()}


def main() -> None:
    for path, table in tables().items():
        path.write_text(with_table(path.read_text(), table))


if __name__ == "__main__":
    main()
