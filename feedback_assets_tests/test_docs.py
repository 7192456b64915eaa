"""docs/contract.md against the code: the CSV's columns and the settings it lists are the ones the
code has, and the repository cites its own docs, nothing outside it."""

from __future__ import annotations

import re
from pathlib import Path

from feedback_assets import settings_docs
from feedback_assets.schemas import TRAINING_COLUMNS
from feedback_assets.settings import SETTINGS

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRACT = REPO_ROOT / "docs" / "contract.md"
# What the repository consists of: the places a citation can hide in.
CHECKED_PATHS = (
    "README.md",
    "docs",
    "feedback_assets",
    "feedback_assets_tests",
    "benchmarks",
    "scripts",
    "deploy",
    ".ci",
)
CHECKED_SUFFIXES = {".md", ".py", ".toml", ".yaml", ".yml", ".txt", ".cfg", ""}
# The outside folder's path is spelled in two parts so that no scan of the repository finds it here.
OUTSIDE_CITATIONS = ("../" + "shared", "CONTRACT section", "CONTRACT §", "FACTS.md")
SECTION_HEADING = re.compile(r"^## (\d+)\. ", re.MULTILINE)
CSV_HEADER_BLOCK = re.compile(r"^```csv\n(.*?)\n```$", re.MULTILINE | re.DOTALL)


def contract_section(number: int) -> str:
    """The text of one numbered `## N.` section of docs/contract.md, up to the next one."""
    text = CONTRACT.read_text(encoding="utf-8")
    starts = [(int(m.group(1)), m.start()) for m in SECTION_HEADING.finditer(text)]
    for index, (found, start) in enumerate(starts):
        if found == number:
            end = starts[index + 1][1] if index + 1 < len(starts) else len(text)
            return text[start:end]
    raise AssertionError(f"docs/contract.md has no section '## {number}.'")


def cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def unquoted(cell: str) -> str:
    """The cell's text without the one pair of backticks around it, if there is one."""
    return cell[1:-1] if len(cell) >= 2 and cell.startswith("`") and cell.endswith("`") else cell


def table_rows(section: str, header: list[str]) -> list[list[str]]:
    """The body rows of the first table in `section` whose header row is `header`."""
    lines = section.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|") and cells(line) == header:
            rows = []
            for body in lines[index + 2 :]:
                if not body.startswith("|"):
                    break
                rows.append(cells(body))
            return rows
    raise AssertionError(f"no table with the header {header} in:\n{section[:200]}")


def checked_files() -> list[Path]:
    files: list[Path] = []
    for name in CHECKED_PATHS:
        path = REPO_ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix in CHECKED_SUFFIXES and "__pycache__" not in p.parts
            )
    return files


def test_the_contract_lists_exactly_the_training_columns_in_order() -> None:
    rows = table_rows(contract_section(4), ["#", "column", "value"])
    assert [row[0] for row in rows] == [str(n) for n in range(1, len(rows) + 1)]
    assert all(row[1].startswith("`") and row[1].endswith("`") for row in rows), rows
    assert [unquoted(row[1]) for row in rows] == list(TRAINING_COLUMNS)


def test_the_contract_states_the_csv_header_line_the_code_writes() -> None:
    blocks = CSV_HEADER_BLOCK.findall(contract_section(4))
    assert blocks == [",".join(TRAINING_COLUMNS)]


def test_the_contract_lists_exactly_the_settings_the_code_implements_with_their_defaults() -> None:
    rows = table_rows(contract_section(2), ["variable", "meaning", "default"])
    assert all(row[2].startswith("`") and row[2].endswith("`") for row in rows), rows
    documented = [(unquoted(row[0]), unquoted(row[2])) for row in rows]
    assert documented == [(s.variable, s.documented_default) for s in SETTINGS]


def test_the_settings_tables_are_the_ones_the_settings_model_writes() -> None:
    for path, table in settings_docs.tables().items():
        text = path.read_text()
        assert settings_docs.with_table(text, table) == text, f"{path}: run python -m feedback_assets.settings_docs"


def test_the_files_to_check_include_the_package_and_the_docs() -> None:
    files = {path.relative_to(REPO_ROOT).as_posix() for path in checked_files()}
    assert {"README.md", "docs/contract.md", "docs/decisions.md", "feedback_assets/settings.py"} <= files
    assert "feedback_assets_tests/test_docs.py" in files


def test_no_file_cites_the_shared_contract_or_facts_outside_the_repository() -> None:
    this_file = Path(__file__).resolve()
    found = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in checked_files()
        if path != this_file
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1)
        if any(citation in line for citation in OUTSIDE_CITATIONS)
    ]
    assert found == []


DECISION_CITATION = re.compile(r'docs/decisions\.md, "([^"]+)"')


def test_every_cited_decision_has_its_heading_in_docs_decisions() -> None:
    headings = set(re.findall(r"^## (.+)$", (REPO_ROOT / "docs" / "decisions.md").read_text(encoding="utf-8"), re.M))
    cited = {
        f"{path.relative_to(REPO_ROOT)}: {title}"
        for path in [*checked_files(), REPO_ROOT / "setup.cfg", REPO_ROOT / "pyproject.toml"]
        for title in (" ".join(t.split()) for t in DECISION_CITATION.findall(path.read_text(errors="replace")))
        if title not in headings
    }
    assert cited == set()
