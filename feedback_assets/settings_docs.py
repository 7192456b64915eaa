"""The settings tables of docs/contract.md (section 2) and README.md, written from the settings
model (settings.py) so that they cannot drift from it: `python -m feedback_assets.settings_docs`
rewrites them, and a test (test_docs.py) fails while a file differs from what this writes.

Apart from settings.py because nothing that runs needs it, and settings.py stays a declaration."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from feedback_assets import settings
from feedback_assets.settings import MODELS, SETTINGS
from feedback_assets.settings_fields import OneOf, Setting, declared

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRACT = REPO_ROOT / "docs" / "contract.md"
README = REPO_ROOT / "README.md"


def meanings() -> dict[tuple[str, str], str]:
    """Each field's docstring in settings.py, keyed by (model, field), on one line."""
    found = {}
    for node in ast.parse(Path(settings.__file__).read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for field, text in zip(node.body, node.body[1:], strict=False):
            match field, text:
                case ast.AnnAssign(target=ast.Name(id=name)), ast.Expr(value=ast.Constant(value=str() as doc)):
                    found[node.name, name] = " ".join(inspect.cleandoc(doc).split())
    return found


def contract_table() -> str:
    """Every setting with its meaning (the field's docstring) and default, in the models' order."""
    meaning = meanings()
    rows = ["| variable | meaning | default |", "|---|---|---|"]
    for model in MODELS:
        for name, setting in declared(model).items():
            rows.append(f"| {setting.variable} | {meaning[model.__name__, name]} | `{setting.documented_default}` |")
    return "\n".join(rows) + "\n"


def _after_default(setting: Setting) -> str:
    if setting.readme or not isinstance(setting.parse, OneOf):
        return setting.readme
    others = [f"`{choice}`" for choice in setting.parse.choices if choice != setting.default]
    return f" (or {', '.join(others)})"


def readme_table() -> str:
    rows = ["| variable | default |", "|---|---|"]
    rows += [
        f"| `{setting.variable}` | `{setting.documented_default}`{_after_default(setting)} |" for setting in SETTINGS
    ]
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
