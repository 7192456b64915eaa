"""setup.cfg against the lock (requirements/*.txt, made by ./scripts/lock): every declared pin is locked
at its version, every lock holds exactly the direct dependencies its extras declare, the three locks
agree on every version they share, every file is pinned by hash, and the runtime carries none of
the tools it never runs. Read from the files alone: no resolver and no network."""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP_CFG = REPO_ROOT / "setup.cfg"
LOCKS = REPO_ROOT / "requirements"
PROJECT = canonicalize_name("feedback_assets")
# Which extras each lock was compiled with (scripts/lock).
LOCK_EXTRAS = {"runtime": (), "demo": ("ui", "demo"), "dev": ("ui", "demo", "dev")}
# The UI, the `dg` commands and the demo generator's numpy: never in the image (issue 26).
NOT_IN_THE_RUNTIME = {"dagster-webserver", "dagster-graphql", "dagster-dg-cli", "dagster-cloud-cli", "numpy"}
# Released under dagster's own version; every other dagster-* library is on the 0.x line.
SAME_VERSION_AS_DAGSTER = {"dagster-webserver", "dagster-graphql", "dagster-dg-cli", "dagster-pipes", "dagster-shared"}
PINNED = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;(?P<marker>[^\\]*))?")


@dataclass
class Locked:
    version: str
    marker: str
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    return parser


def requirements(value: str) -> list[Requirement]:
    lines = (line.strip() for line in value.splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def declared() -> dict[str, list[Requirement]]:
    """install_requires under the name "runtime", then each extra by its own name."""
    parser = setup_cfg()
    found = {"runtime": requirements(parser["options"]["install_requires"])}
    for extra, value in parser["options.extras_require"].items():
        found[extra] = requirements(value)
    return found


def direct(lock: str) -> dict[NormalizedName, Requirement]:
    """The third-party requirements a lock's extras declare, the project's own extras unfolded."""
    groups = declared()
    found: dict[NormalizedName, Requirement] = {}
    for group in ("runtime", *LOCK_EXTRAS[lock]):
        for requirement in groups[group]:
            if canonicalize_name(requirement.name) == PROJECT:
                assert set(requirement.extras) <= set(LOCK_EXTRAS[lock]), requirement
            else:
                found[canonicalize_name(requirement.name)] = requirement
    return found


def locked(lock: str) -> dict[NormalizedName, list[Locked]]:
    """A lock file's packages: a package may appear once per marker (a version for some Pythons only)."""
    found: dict[NormalizedName, list[Locked]] = {}
    current: Locked | None = None
    for line in (LOCKS / f"{lock}.txt").read_text().splitlines():
        stripped = line.strip()
        match = PINNED.match(line)
        if match:
            current = Locked(match["version"], (match["marker"] or "").strip())
            found.setdefault(canonicalize_name(match["name"]), []).append(current)
        elif current is not None and stripped.startswith("--hash="):
            current.hashes.append(stripped.removeprefix("--hash=").rstrip(" \\"))
        elif current is not None and stripped.startswith("#"):
            via = stripped.lstrip("#").strip().removeprefix("via").strip()
            if via:
                current.via.append(via)
        elif stripped and not stripped.startswith("#"):
            raise AssertionError(f"requirements/{lock}.txt: a line the lock format has no place for: {line}")
    return found


def test_every_dependency_is_pinned_exactly_in_setup_cfg() -> None:
    for group, listed in declared().items():
        for requirement in listed:
            if canonicalize_name(requirement.name) != PROJECT:
                assert len(requirement.specifier) == 1, (group, str(requirement))
                (spec,) = requirement.specifier
                assert spec.operator == "==", (group, str(requirement))


def test_every_declared_pin_is_locked_at_its_version() -> None:
    for lock in LOCK_EXTRAS:
        packages = locked(lock)
        for name, requirement in direct(lock).items():
            assert name in packages, f"{name} is declared but not in requirements/{lock}.txt: run ./scripts/lock"
            (spec,) = requirement.specifier
            versions = {entry.version for entry in packages[name]}
            assert versions == {spec.version}, f"requirements/{lock}.txt has {name} {versions}: run ./scripts/lock"


def test_each_lock_holds_exactly_the_direct_dependencies_its_extras_declare() -> None:
    for lock in LOCK_EXTRAS:
        from_setup_cfg = {
            name
            for name, entries in locked(lock).items()
            if any(via.startswith("feedback-assets") for entry in entries for via in entry.via)
        }
        assert from_setup_cfg == set(direct(lock)), f"requirements/{lock}.txt is stale: run ./scripts/lock"


def test_the_locks_agree_on_every_version_they_share() -> None:
    dev = locked("dev")
    for lock in ("runtime", "demo"):
        for name, entries in locked(lock).items():
            assert name in dev, f"{name} is in requirements/{lock}.txt but not dev.txt"
            pins = {(entry.version, entry.marker) for entry in entries}
            assert pins <= {(entry.version, entry.marker) for entry in dev[name]}, (lock, name, pins)


def test_every_locked_package_is_pinned_by_hash_and_the_lock_names_no_address() -> None:
    for lock in LOCK_EXTRAS:
        text = (LOCKS / f"{lock}.txt").read_text()
        # The registry's address comes from the machine's own configuration (scripts/lock), never the repository.
        assert "://" not in text and "--index-url" not in text and "--find-links" not in text
        for name, entries in locked(lock).items():
            for entry in entries:
                assert entry.hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in entry.hashes), name


def test_the_runtime_lock_carries_no_ui_no_dg_and_no_demo_generator() -> None:
    runtime = set(locked("runtime"))
    assert not runtime & {canonicalize_name(name) for name in NOT_IN_THE_RUNTIME}
    # What the image does run: the code server, the run pods' launcher and their logs' store.
    assert {"dagster", "dagster-postgres", "dagster-k8s", "dagster-aws"} <= runtime


def test_the_integration_libraries_are_dagsters_own_release() -> None:
    """Dagster 1.X.Y ships its libraries as 0.(X+16).Y: dagster-k8s and the others move with it (docs/deploy.md)."""
    pins = {canonicalize_name(r.name): str(r.specifier)[2:] for group in declared().values() for r in group}
    major, minor, patch = pins[canonicalize_name("dagster")].split(".")
    assert major == "1"
    for name, version in pins.items():
        if name in SAME_VERSION_AS_DAGSTER:
            assert version == f"{major}.{minor}.{patch}", name
        elif name.startswith("dagster-"):
            assert version == f"0.{int(minor) + 16}.{patch}", name


def test_python_3_11_to_3_13_are_admitted() -> None:
    admitted = SpecifierSet(setup_cfg()["options"]["python_requires"])
    assert all(version in admitted for version in ("3.11.7", "3.12.1", "3.13.0"))
