"""SIGKILL a real run at many points: every file stays as it was or is complete, and a re-run repairs all.

Issue "atomic outputs" and docs/contract.md, section 6: a run killed at any moment leaves each file (CSV,
manifest, intermediate Parquet and statistics, dedupe state) byte for byte as it was before or as
a complete run writes it, no temporary file that a reader of the export directory would take for an
export, and a re-run completes with exactly the files of an uninterrupted run.

The victim is `feedback_assets_tests.kill_runner`: a fresh Python process per kill that runs the
whole graph over four days on a real SQLite Dagster instance and reports each atomic write as it
starts (`KILLPOINT open`) and just before its rename (`KILLPOINT replace`). The "before" files come
from an earlier complete run over a smaller source, so every export and state file differs between
before and after and "as before or complete" is a real test.

Kill points: ROUNDS = 6 rounds of one kill aimed at each of the four PHASES, 24 kills in all, 6 per
phase, each a SIGKILL of the victim's process group while the victim waits at a named point
(kill_runner's HOLD), so where a kill lands never depends on how fast or busy the machine is:
- read: as raw_feedback opens its connection to the source;
- transform, state write, CSV write: at one day's anonymized_pairs, rejected_feedback or
  deduplicated_pairs file, its seen_pair_hashes file, or its CSV or manifest, by round in turn
  (WRITE_MODES): its temporary file just created and still empty, written and synced but not
  renamed, or renamed but its directory not yet synced. 2 kills of each kind per phase.
Days come from a seeded RNG. The phase a kill hit is read back from the victim's output (the step
it died in and the write it was held at) and must be the one aimed at, every time. Kills within a
round accumulate on the same directories; after each round (every 4 kills) a re-run must complete
and leave exactly the reference files and no temporary file.

Two more kills: one while the key markers are written (its temporary file must be gone after a
re-run), and one inside a pool step with a pool limit of 1: Dagster keeps a SIGKILLed run's slot
until the run is marked finished, which run monitoring does once the run's time limit passes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import dagster as dg
import pytest

from feedback_assets.demo.database import write_demo_source
from feedback_assets.storage.local import TEMP_PREFIX
from feedback_assets_tests.graph import KEY_HEX, materialize, settings_for
from feedback_assets_tests.processes import BIN_DIR, Processes

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent

FIRST = dt.date(2025, 10, 27)
DAYS = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(4)]
SOURCE_DAYS = 6
# Big enough that each step takes a visible fraction of a second, small enough that 30 runs fit
# in a few minutes: the run time is mostly Dagster's own event log, not the data.
ROWS_PER_DAY_BEFORE = 1_000
ROWS_PER_DAY = 5_000

PHASES = ("read", "transform", "state write", "CSV write")
STEP_PHASES = {
    "raw_feedback": "read",
    "anonymized_pairs": "transform",
    "rejected_feedback": "transform",
    "dedupe_and_claim_keys": "transform",
    "training_csv": "CSV write",
}
# The dedupe step also writes the state: a kill held at a state file there hit the state write.
STATE_STEP = "dedupe_and_claim_keys"
STATE_WRITE = re.compile(r"^storage/seen_pair_hashes/")
TRANSFORM_OUTPUTS = ("anonymized_pairs", "rejected_feedback", "deduplicated_pairs")
# Where a write is caught, in turn by round (kill_runner's hold points): its temporary file just
# created, written and synced but not renamed, or renamed with its directory not yet synced.
WRITE_MODES = ("created", "synced", "renamed")
ROUNDS = 6
KILLS_PER_PHASE = ROUNDS
SEED = 20251027

READY_TIMEOUT = 120.0
TRIGGER_TIMEOUT = 120.0
RUN_TIMEOUT = 240.0
EXIT_TIMEOUT = 30.0

STEP_START = re.compile(r'STEP_START - Started execution of step "(\w+)"')
HOLDING = re.compile(r"^HOLDING (\w+) (\S+)$")
TEMP_NAME = re.compile(rf"{re.escape(TEMP_PREFIX)}(?P<target>.+)\.(?P<host>[^.]+)-(?P<pid>\d+)\.[0-9a-f]{{32}}")
# Each run writes its own run id into the manifests; everything else must match byte for byte.
RUN_ID = re.compile(rb'"run_id": "[0-9a-f-]+"')
DAGSTER_YAML = "telemetry:\n  enabled: false\n"
# What the README recommends for the pool of the steps that read and write the dedupe state.
POOL_LIMIT_YAML = "concurrency:\n  pools:\n    default_limit: 1\n"
POOL_BLOCKED = "Step blocked by limit for pool"


@dataclass(frozen=True)
class KillPoint:
    """Where the victim waits to be killed: at kill_runner's hold point `at`, for a file (or, at
    `connect`, a source) matching `target`."""

    aim: str
    at: str
    target: str

    @property
    def command(self) -> str:
        return f"go HOLD {self.at} {self.target}"

    @property
    def trigger(self) -> re.Pattern[str]:
        return re.compile(rf"^HOLDING {self.at} ")

    def describe(self) -> str:
        return f"{self.aim} (held at {self.at} {self.target})"


@dataclass
class KillRecord:
    number: int
    point: KillPoint
    step: str | None
    held_at: str | None
    temps_left: int = 0

    @property
    def phase(self) -> str:
        if self.step == STATE_STEP and self.held_at is not None and STATE_WRITE.match(self.held_at):
            return "state write"
        return STEP_PHASES.get(self.step or "", f"outside the four phases ({self.step})")

    def describe(self) -> str:
        return (
            f"kill {self.number}: aimed at {self.point.describe()}, died in {self.step} held at "
            f"`{self.held_at}`, leaving {self.temps_left} temporary file(s)"
        )


@dataclass
class Victim:
    """One runner process and its output, read by a thread as it comes."""

    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> bool:
        """Read lines until one matches; False if the process ended or the time ran out first."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:
                return False
            if pattern.search(line):
                return True
        return False

    def start(self, command: str = "go") -> None:
        """Let the runner, once imported, begin its run."""
        assert self.wait_for(re.compile("^READY$"), READY_TIMEOUT), f"runner never got ready:\n{self.tail()}"
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\n")
        self.process.stdin.flush()

    def finish(self, timeout: float) -> int:
        """Wait for the process to end and for all its output to be read."""
        code = self.process.wait(timeout=timeout)
        while self.lines.get(timeout=EXIT_TIMEOUT) is not None:
            pass
        return code

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output[-lines:])

    def close(self) -> None:
        if self.process.poll() is None:
            kill_group(self.process)
        self.process.wait(timeout=EXIT_TIMEOUT)
        self.reader.join(timeout=EXIT_TIMEOUT)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


class Launcher:
    """Starts runners one at a time, each already imported: a spare is always warming up."""

    def __init__(self, env: dict[str, str], started: list[Victim]) -> None:
        self.env = env
        self.started = started
        self.spare: Victim | None = None

    def spawn(self) -> Victim:
        process = subprocess.Popen(
            [sys.executable, "-m", "feedback_assets_tests.kill_runner", DAYS[0], DAYS[-1]],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # Its own process group, so a kill reaches anything it started and nothing else.
            start_new_session=True,
        )
        victim = Victim(process)
        self.started.append(victim)
        return victim

    def start(self, command: str = "go", *, spare: bool = True) -> Victim:
        victim = self.spare or self.spawn()
        victim.start(command)
        self.spare = self.spawn() if spare else None
        return victim

    def kill_at(self, point: KillPoint) -> Victim:
        """Start a run and SIGKILL it at `point`; the victim is returned dead, its output read."""
        victim = self.start(point.command)
        reached = victim.wait_for(point.trigger, TRIGGER_TIMEOUT)
        assert reached, f"the run never reached {point.describe()}:\n{victim.tail()}"
        kill_group(victim.process)
        assert victim.finish(EXIT_TIMEOUT) == -signal.SIGKILL, f"the run ended before the kill:\n{victim.tail()}"
        return victim


@pytest.fixture
def started() -> Iterator[list[Victim]]:
    """Every process the test starts; none outlives it, whatever the outcome."""
    victims: list[Victim] = []
    yield victims
    for victim in victims:
        victim.close()


def prepare_home(root: Path, dagster_yaml: str = DAGSTER_YAML) -> None:
    (root / "dagster_home").mkdir(parents=True)
    (root / "dagster_home" / "dagster.yaml").write_text(dagster_yaml)


def runner_env(root: Path, source_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_", "DAGSTER_"))}
    env.update(
        {
            "DAGSTER_HOME": str(root / "dagster_home"),
            "FEEDBACK_SOURCE_URL": source_url,
            "FEEDBACK_EXPORT_DIR": str(root / "export"),
            "FEEDBACK_STORAGE_DIR": str(root / "storage"),
            "FEEDBACK_HMAC_KEY": KEY_HEX,
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def files_under(root: Path) -> tuple[dict[str, bytes], list[str]]:
    """The pipeline's files under root/export and root/storage (manifests with the run id masked),
    and the temporary files beside them, as paths relative to root."""
    files: dict[str, bytes] = {}
    temps: list[str] = []
    for top in ("export", "storage"):
        for path in sorted((root / top).rglob("*")):
            if not path.is_file():
                continue
            name = path.relative_to(root).as_posix()
            if path.name.startswith(TEMP_PREFIX):
                temps.append(name)
                continue
            data = path.read_bytes()
            files[name] = RUN_ID.sub(b'"run_id": "-"', data) if name.endswith(".manifest.json") else data
    return files, temps


def plan(phase: str, round_number: int, rng: random.Random) -> KillPoint:
    if phase == "read":
        return KillPoint(phase, "connect", r"/source\.sqlite\b")
    day = rng.choice(DAYS)
    if phase == "transform":
        target = rf"storage/{rng.choice(TRANSFORM_OUTPUTS)}/{day}\.parquet"
    elif phase == "state write":
        target = rf"storage/seen_pair_hashes/.+/{day}\.parquet"
    else:
        target = rf"export/feedback_training_{day.replace('-', '')}\.(csv|manifest\.json)"
    return KillPoint(phase, WRITE_MODES[round_number % len(WRITE_MODES)], rf"^{target}$")


def what_it_reached(victim: Victim) -> tuple[str | None, str | None]:
    """The step the victim died in and what it was held at when killed (a file, or `source`)."""
    step = held = None
    for line in victim.output:
        if match := STEP_START.search(line):
            step = match.group(1)
        elif match := HOLDING.match(line):
            held = match.group(2)
    return step, held


def problems_after_kill(
    current: dict[str, bytes], temps: list[str], before: dict[str, bytes], after: dict[str, bytes], dead: set[int]
) -> list[str]:
    problems = []
    for name, data in current.items():
        if name not in before and name not in after:
            problems.append(f"{name}: a file neither run writes")
        elif data != before.get(name) and data != after.get(name):
            problems.append(f"{name}: neither as before nor complete ({len(data)} bytes)")
    problems += [f"{name}: existed before the run and is gone" for name in before.keys() - current.keys()]
    for name in temps:
        path = PurePosixPath(name)
        match = TEMP_NAME.fullmatch(path.name)
        if match is None:
            problems.append(f"{name}: a temporary file not named as storage.local.temp_path_for names them")
        elif int(match["pid"]) not in dead:
            problems.append(f"{name}: a temporary file of process {match['pid']}, which was not killed")
        if path.name.endswith((".csv", ".json", ".parquet")) or not path.name.startswith("."):
            problems.append(f"{name}: a temporary file a reader could take for a real one")
    return problems


def test_sigkill_at_any_point_leaves_old_or_complete_files_and_a_rerun_repairs_them(
    tmp_path: Path, hmac_key: str, started: list[Victim]
) -> None:
    before_url = f"sqlite:///{tmp_path / 'source_before.sqlite'}"
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    last_day = dt.date.fromisoformat(DAYS[-1])
    write_demo_source(before_url, end_date=last_day, days=SOURCE_DAYS, rows_per_day=ROWS_PER_DAY_BEFORE, seed=1)
    write_demo_source(source_url, end_date=last_day, days=SOURCE_DAYS, rows_per_day=ROWS_PER_DAY, seed=2)

    pristine = tmp_path / "pristine"
    victim_root = tmp_path / "victim"
    prepare_home(pristine)
    prepare_home(victim_root)
    launcher = Launcher(runner_env(victim_root, source_url), started)
    # The first victim imports while the earlier export and the reference are made.
    launcher.spare = launcher.spawn()

    earlier = Launcher(runner_env(pristine, before_url), started).spawn()
    earlier.start()
    reference_root = tmp_path / "reference"
    (reference_root / "dagster_home").mkdir(parents=True)
    with dg.instance_for_test(temp_dir=str(reference_root / "dagster_home")) as instance:
        assert materialize(instance, settings_for(reference_root, source_url), DAYS[0], DAYS[-1]).success
    assert earlier.finish(RUN_TIMEOUT) == 0, f"the earlier export failed:\n{earlier.tail()}"

    before, _ = files_under(pristine)
    after, _ = files_under(reference_root)
    assert before.keys() == after.keys()
    assert len([name for name in after if name.endswith(".csv")]) == len(DAYS)
    # Every export and state file differs between the two versions, so "as before or complete" is a
    # real test; only the key markers and rejected rows (the demo's fixed edge cases) are the same.
    same = {name for name in after if before[name] == after[name]}
    assert not {name for name in same if name.startswith(("export/feedback_training_", "storage/seen_pair_hashes/"))}

    rng = random.Random(SEED)
    records: list[KillRecord] = []
    for round_number in range(ROUNDS):
        shutil.rmtree(victim_root)
        shutil.copytree(pristine, victim_root, symlinks=True)
        dead: set[int] = set()
        for aim in rng.sample(PHASES, k=len(PHASES)):
            point = plan(aim, round_number, rng)
            victim = launcher.kill_at(point)
            dead.add(victim.process.pid)
            record = KillRecord(len(records) + 1, point, *what_it_reached(victim))
            records.append(record)

            current, temps = files_under(victim_root)
            record.temps_left = sum(f"-{victim.process.pid}." in name for name in temps)
            problems = problems_after_kill(current, temps, before, after, dead)
            assert not problems, f"{record.describe()}:\n" + "\n".join(problems)

        rerun = launcher.start(spare=round_number < ROUNDS - 1)
        assert rerun.finish(RUN_TIMEOUT) == 0, f"the re-run after {records[-1].describe()} failed:\n{rerun.tail()}"
        current, temps = files_under(victim_root)
        assert not temps, f"temporary files of killed runs left after the re-run: {temps}"
        assert current.keys() == after.keys()
        assert [name for name in after if current[name] != after[name]] == []

    hits = Counter(record.phase for record in records)
    summary = "\n".join(record.describe() for record in records)
    # Where each kill landed, for `pytest -rP` and for any failure below.
    print(summary)
    assert len(records) == KILLS_PER_PHASE * len(PHASES)
    assert [record.phase for record in records] == [record.point.aim for record in records], summary
    assert hits == dict.fromkeys(PHASES, KILLS_PER_PHASE), f"phases hit: {dict(hits)}\n{summary}"
    # Kills before a rename leave a temporary file where a reader of each directory would look.
    assert any(record.phase == "CSV write" and record.temps_left for record in records), summary
    assert any(record.phase == "state write" and record.temps_left for record in records), summary


def test_a_run_killed_while_marking_its_directories_leaves_no_temporary_file_after_a_rerun(
    tmp_path: Path, hmac_key: str, started: list[Victim]
) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(source_url, end_date=dt.date.fromisoformat(DAYS[-1]), days=SOURCE_DAYS, rows_per_day=100)
    root = tmp_path / "run"
    prepare_home(root)
    launcher = Launcher(runner_env(root, source_url), started)
    # The very first run writes the key markers; held between the marker's sync and its rename.
    marker = r"storage/\.feedback_key\.json"
    launcher.kill_at(KillPoint("key marker", "synced", rf"^{marker}$"))
    _, temps = files_under(root)
    assert temps, "the held kill left no temporary file"

    rerun = launcher.start(spare=False)
    assert rerun.finish(RUN_TIMEOUT) == 0, f"the re-run failed:\n{rerun.tail()}"
    _, temps = files_under(root)
    assert temps == [], "temporary files of the killed run left after a complete re-run"


# Run monitoring as the README recommends, with short intervals so the test takes seconds, not minutes.
RUN_MONITORING_YAML = """\
run_monitoring:
  enabled: true
  poll_interval_seconds: 1
  cancel_timeout_seconds: 2
  free_slots_after_run_end_seconds: 1
"""
VICTIM_MAX_RUNTIME = 15
# Only a hang guard for the re-run, just under pytest's own timeout: how soon run monitoring ends the
# dead run depends on the machine's load, and is not what the test asserts.
RERUN_PATIENCE = 540.0


def test_a_kill_in_a_pool_step_frees_its_slot_once_run_monitoring_ends_the_dead_run(
    tmp_path: Path, hmac_key: str, started: list[Victim]
) -> None:
    """Dagster cannot see a SIGKILLed run worker: its DefaultRunLauncher does not support worker
    health checks (`supports_check_run_worker_health` is False in dagster 1.13), so the dead run
    stays STARTED and keeps its pool slot. What run monitoring does allow: a run past its
    `dagster/max_runtime` is marked failed, and a finished run's slots are freed after
    `free_slots_after_run_end_seconds`. So the re-run waits for the dead run's time limit, then
    completes, with nobody terminating anything by hand."""
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(source_url, end_date=dt.date.fromisoformat(DAYS[-1]), days=SOURCE_DAYS, rows_per_day=100)
    root = tmp_path / "run"
    prepare_home(root, DAGSTER_YAML + POOL_LIMIT_YAML + RUN_MONITORING_YAML)
    env = runner_env(root, source_url)
    launcher = Launcher({**env, "KILL_RUNNER_MAX_RUNTIME": str(VICTIM_MAX_RUNTIME)}, started)
    state = rf"storage/seen_pair_hashes/.+/{DAYS[0]}\.parquet"
    launcher.kill_at(KillPoint("state write", "synced", state))
    # The re-run carries no time limit of its own: a fresh runner without the victim's environment.
    if launcher.spare is not None:
        launcher.spare.close()
    launcher.spare, launcher.env = None, env

    with Processes(REPO_ROOT, env) as processes:
        processes.start(
            [str(BIN_DIR / "dagster-daemon"), "run", "-m", "feedback_assets.definitions"], tmp_path / "daemon.log"
        )
        rerun = launcher.start(spare=False)
        assert rerun.wait_for(re.compile(POOL_BLOCKED), RUN_TIMEOUT), f"the re-run was not blocked:\n{rerun.tail()}"
        code = rerun.finish(RERUN_PATIENCE)
    assert code == 0, f"the re-run did not complete:\n{rerun.tail()}"
    with dg.DagsterInstance.from_config(str(root / "dagster_home")) as instance:
        (dead,) = [run for run in instance.get_runs() if run.tags.get("dagster/max_runtime")]
        assert dead.status == dg.DagsterRunStatus.FAILURE
