"""The Dagster UI as its users see it, in a real browser.

The real `dagster-webserver` serves the DAGSTER_HOME the real demo (`python -m feedback_assets.demo`)
made from an empty directory, holding its run over the last few days; Debian's Chromium,
driven by Playwright, opens the pages users work with. Each page must render the project's own
content (assets, descriptions, materialized days, checks, runs, jobs, the settings resource), and,
this being a pipeline of private data, no page may call any host but the local webserver, show the
HMAC key or log an error to the console.

One test per page, all sharing the module's webserver: more assertions go into the page's test,
a new page gets a test of its own calling `Browsing.visit`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Locator, Page, Playwright, expect, sync_playwright

from feedback_assets import catalog
from feedback_assets.asset_names import AssetName
from feedback_assets.asset_runs import APP_FEEDBACK_SOURCE
from feedback_assets.definitions import defs
from feedback_assets.defs.checks import FEEDBACK_CHECKS
from feedback_assets.defs.nightly_export import training_csv_freshness
from feedback_assets.demo.quickstart import DEMO_INSTANCE_YAML
from feedback_assets.resources import FeedbackSettings
from feedback_assets.schemas import TRAINING_COLUMNS
from feedback_assets_tests.daemon import GraphQL, free_port, wait_for_code_location
from feedback_assets_tests.graph import ALL_ASSETS
from feedback_assets_tests.processes import BIN_DIR, Processes

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = REPO_ROOT / "workspace.yaml"
LOCATION: str = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["code_location_name"]
# Debian's package, never a browser Playwright downloads: the CI image installs it (.ci/run).
CHROMIUM = Path("/usr/bin/chromium")

# Five days of partitions, the last three materialized: the partitions view fits on one screen
# and shows days both materialized and missing.
PARTITION_DAYS = 5
MATERIALIZED_DAYS = 3
DEMO_TIMEOUT = 300.0
# Two shared cores: the first page compiles the UI's JavaScript while the webserver answers it.
UI_TIMEOUT_MS = 60_000.0
LOOPBACK = {"127.0.0.1", "localhost"}

GRAPH = defs.resolve_asset_graph()
ASSETS = sorted(key.to_user_string() for key in GRAPH.get_all_asset_keys())
DESCRIPTIONS = {key.to_user_string(): GRAPH.get(key).description or "" for key in GRAPH.get_all_asset_keys()}
CHECKS_BY_ASSET: dict[str, list[str]] = {}
for check_key in GRAPH.asset_check_keys:
    CHECKS_BY_ASSET.setdefault(check_key.asset_key.to_user_string(), []).append(check_key.name)
JOBS = ("feedback_export", "erase_subjects", "audit_history")
RESOURCE = "feedback_settings"


@dataclass(frozen=True)
class Webserver:
    base_url: str
    graphql: GraphQL
    run_id: str
    days: tuple[str, ...]
    export_dir: Path
    screenshots: Path
    log: Path
    key: str


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    """The webserver as a newcomer opens it: after the demo, with the settings the demo printed."""
    tmp = tmp_path_factory.mktemp("ui_browser")
    # An outer DAGSTER_HOME or FEEDBACK_* setting must not reach the instance under test.
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("FEEDBACK_", "DAGSTER_"))}
    demo_args = ["--days", str(MATERIALIZED_DAYS), "--history-days", str(PARTITION_DAYS), "--rows-per-day", "40"]
    demo = subprocess.run(
        [sys.executable, "-m", "feedback_assets.demo", *demo_args],
        cwd=tmp,
        env={**clean, "PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
    )
    assert demo.returncode == 0, f"{demo.stdout}\n{demo.stderr}"
    # The days as the demo chose them: a clock read here could be on the other side of midnight UTC.
    exported_days = re.search(r"^training CSVs for (\S+) \.\. (\S+):", demo.stdout, re.MULTILINE)
    assert exported_days is not None, demo.stdout
    yesterday = dt.date.fromisoformat(exported_days.group(2))
    days = tuple((yesterday - dt.timedelta(days=back)).isoformat() for back in reversed(range(MATERIALIZED_DAYS)))
    printed = dict(
        line.strip().removeprefix("export ").split("=", 1) for line in demo.stdout.splitlines() if "export " in line
    )
    key = (tmp / ".feedback_hmac_key").read_text().strip()
    env = {
        **clean,
        "DAGSTER_HOME": printed["DAGSTER_HOME"],
        "FEEDBACK_PARTITIONS_START": printed["FEEDBACK_PARTITIONS_START"],
        "FEEDBACK_HMAC_KEY": key,
    }
    home = Path(printed["DAGSTER_HOME"])
    assert (home / "dagster.yaml").read_text() == DEMO_INSTANCE_YAML
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
    assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS], runs
    export_dir = tmp / "ml" / "feedback_training"

    port = free_port()
    graphql = GraphQL(port)
    screenshots = tmp / "screenshots"
    screenshots.mkdir()
    log = tmp / "webserver.log"
    with Processes(tmp, env) as processes:
        server = processes.start(
            [str(BIN_DIR / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(WORKSPACE)], log
        )
        try:
            wait_for_code_location(graphql, server)
        except BaseException:
            print(log.read_text(errors="replace"))
            raise
        yield Webserver(graphql.base, graphql, runs[0].run_id, days, export_dir, screenshots, log, key)


@dataclass
class Browsing:
    """One browser context's page, with everything it requested and every error it logged."""

    page: Page
    server: Webserver
    name: str
    urls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    shots: int = 0

    def visit(self, path: str) -> Page:
        """Open a path of the UI, keeping a screenshot of the page it leaves."""
        self.screenshot()
        self.page.goto(self.server.base_url + path)
        return self.page

    def screenshot(self) -> None:
        if self.page.url.startswith(self.server.base_url):
            slug = re.sub(r"[^A-Za-z0-9]+", "_", self.page.url.removeprefix(self.server.base_url)).strip("_")
            self.shots += 1
            path = self.server.screenshots / f"{self.name}-{self.shots:02d}-{slug or 'root'}.png"
            self.page.screenshot(path=path, full_page=True)

    def check_private_and_clean(self) -> None:
        outside = [url for url in self.urls if host_of(url) not in LOOPBACK]
        assert not outside, f"the UI called hosts other than the local webserver: {outside}"
        assert not self.errors, f"console errors: {self.errors}"
        assert self.server.key not in self.page.content(), "the page shows the HMAC key"


def host_of(url: str) -> str | None:
    # A blob: URL (the asset graph's layout worker) names an object in the page's memory, created by
    # the origin it embeds; it is read from no host, so that origin's host is the one to check.
    return urlsplit(url.removeprefix("blob:")).hostname


@contextmanager
def browsing(browser: Browser, server: Webserver, name: str) -> Iterator[Browsing]:
    """A fresh context (no cookies, no local storage), checked once its test has looked at it."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    ui = Browsing(context.new_page(), server, name)
    ui.page.on("request", lambda request: ui.urls.append(request.url))
    # The UI's GraphQL subscriptions go over a websocket, which the request event does not report.
    ui.page.on("websocket", lambda socket: ui.urls.append(socket.url))
    ui.page.on("console", lambda message: _record_console_error(ui, message))
    ui.page.on("pageerror", lambda error: ui.errors.append(f"uncaught: {error.message}"))
    print(f"screenshots: {server.screenshots}\nwebserver log: {server.log}")
    try:
        yield ui
    except BaseException:
        # The page as the failure left it; a screenshot that fails too must not hide that failure.
        with suppress(Error):
            ui.screenshot()
        raise
    else:
        ui.screenshot()
        ui.check_private_and_clean()
    finally:
        context.close()


def _record_console_error(ui: Browsing, message: ConsoleMessage) -> None:
    if message.type == "error":
        ui.errors.append(f"{message.text} ({message.location.get('url', '')})")


@pytest.fixture(scope="module")
def playwright(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playwright]:
    # Playwright's driver puts the browser's profile in its temporary directory: this module's.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmp_path_factory.mktemp("playwright_tmp")))
        driver = sync_playwright().start()
    try:
        yield driver
    finally:
        driver.stop()


@pytest.fixture(scope="module")
def browser(
    playwright: Playwright, webserver: Webserver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    # Chromium keeps crash reports and caches under $HOME: a home of its own keeps them in tmp_path.
    home = tmp_path_factory.mktemp("chromium_home")
    env: dict[str, str | float | bool] = {**os.environ, "HOME": str(home), "TMPDIR": str(home)}
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, env=env)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def ui(browser: Browser, webserver: Webserver, request: pytest.FixtureRequest) -> Iterator[Browsing]:
    with browsing(browser, webserver, request.node.name) as browsing_ui:
        yield browsing_ui


def text(page: Page, shown: str, *, exact: bool = False) -> Locator:
    """The first visible element with this text; the UI often renders a hidden copy for measuring."""
    return page.get_by_text(" ".join(shown.split()), exact=exact).filter(visible=True).first


def link_to(page: Page, path: str) -> Locator:
    """A link by where it goes: the UI names links by their icon and a hidden copy of their text too."""
    return page.locator(f'a[href="{path}"]').filter(visible=True).first


def see(locator: Locator) -> None:
    expect(locator).to_be_visible(timeout=UI_TIMEOUT_MS)


def test_the_catalog_lists_every_asset_with_its_description(ui: Browsing) -> None:
    # The daily assets, the release pinned over them (docs/ml.md) and the observed source
    # (app_feedback_source, docs/contract.md section 7).
    assert sorted([*ALL_ASSETS, AssetName.TRAINING_DATASET, APP_FEEDBACK_SOURCE.to_user_string()]) == ASSETS
    page = ui.visit("/assets")
    for asset in ASSETS:
        assert DESCRIPTIONS[asset], f"{asset} has no description to show"
        see(link_to(page, f"/assets/{asset}"))
        see(text(page, DESCRIPTIONS[asset]))


GROUPS: dict[str, list[str]] = {}
for asset_key in GRAPH.get_all_asset_keys():
    GROUPS.setdefault(GRAPH.get(asset_key).group_name, []).append(asset_key.to_user_string())


def test_the_lineage_graph_draws_every_asset(ui: Browsing) -> None:
    page = ui.visit("/asset-groups")
    see(text(page, "Global asset lineage"))
    # The graph's nodes are HTML inside the SVG's foreignObjects. With more than one group the global
    # graph draws each group as one node; each group's own graph draws its assets.
    expect(page.locator("foreignObject")).to_have_count(len(GROUPS), timeout=UI_TIMEOUT_MS)
    for group, assets in GROUPS.items():
        page = ui.visit(f"/locations/feedback_assets/asset-groups/{group}/lineage")
        nodes = page.locator("foreignObject")
        for asset in assets:
            see(nodes.get_by_text(asset, exact=True))


def test_no_newsletter_dialog_covers_the_first_page(ui: Browsing, webserver: Webserver) -> None:
    # Its form would load an outside reCAPTCHA; the demo instance turns it off (nux: enabled: false).
    assert not webserver.graphql("{ shouldShowNux }")["shouldShowNux"]
    page = ui.visit("/")
    see(page.get_by_role("tab", name="Timeline"))
    expect(page.get_by_text("Join the Dagster community")).to_have_count(0)


def test_the_training_csv_page_shows_its_description_columns_and_latest_day(ui: Browsing, webserver: Webserver) -> None:
    page = ui.visit("/assets/training_csv")
    see(text(page, DESCRIPTIONS["training_csv"]))
    # What the definitions declare, shown before anyone reads a run: kind, owner, the pii tag, the
    # link to the code (the code version sits in the collapsed "Compute details": test_catalog.py).
    for shown in ("Polars", "data-engineering", "pii: pseudonymised", "Open assets.py"):
        see(text(page, shown))
    see(text(page, catalog.COLUMN_DESCRIPTIONS["age_range"]))
    see(text(page, "Latest materialization", exact=True))
    see(text(page, webserver.days[-1], exact=True))
    for column in TRAINING_COLUMNS:
        see(text(page, column, exact=True))


def test_the_training_csv_partitions_show_each_materialized_day(ui: Browsing, webserver: Webserver) -> None:
    page = ui.visit("/assets/training_csv?view=partitions")
    see(text(page, f"Materialized ({MATERIALIZED_DAYS})", exact=True))
    for day in webserver.days:
        see(text(page, day, exact=True))
    for day in webserver.days:
        page = ui.visit(f"/assets/training_csv?view=partitions&partition={day}")
        see(text(page, "Materialized", exact=True))
        see(page.get_by_role("link", name=webserver.run_id[:8]).first)
        see(text(page, str(webserver.export_dir / f"feedback_training_{day.replace('-', '')}.csv"), exact=True))


@pytest.mark.parametrize("asset", sorted(CHECKS_BY_ASSET))
def test_the_checks_tab_lists_the_asset_checks(ui: Browsing, asset: str) -> None:
    checks = sorted(CHECKS_BY_ASSET[asset])
    page = ui.visit(f"/assets/{asset}?view=checks")
    see(text(page, f"Checks ({len(checks)})", exact=True))
    for check in checks:
        see(text(page, check, exact=True))


def test_the_checks_tabs_cover_every_check_the_project_defines() -> None:
    defined = [key.name for check in [*FEEDBACK_CHECKS, *training_csv_freshness] for key in check.check_keys]
    assert sorted(name for names in CHECKS_BY_ASSET.values() for name in names) == sorted(defined)


def test_the_runs_page_shows_the_demo_run_succeeded(ui: Browsing, webserver: Webserver) -> None:
    page = ui.visit("/runs")
    # The table is made of divs, not rows: the run's row is the innermost element holding both its
    # link and a status of Success (ancestors come first in document order, hence `last`).
    run_link = link_to(page, f"/runs/{webserver.run_id}")
    see(run_link)
    see(page.locator("div").filter(has=run_link).filter(has=page.get_by_text("Success", exact=True)).last)
    page = ui.visit(f"/runs/{webserver.run_id}")
    see(text(page, "Success", exact=True))
    # The demo's run materializes the graph's assets; the source is only ever observed.
    see(text(page, f"{len(ALL_ASSETS)} assets", exact=True))


def test_the_timeline_shows_the_demo_run_in_its_job_row(ui: Browsing) -> None:
    # The timeline draws only runs of a code location's jobs: the demo makes its run in
    # `feedback_assets` (feedback_assets/demo/launch.py), as the Launchpad would.
    page = ui.visit("/overview/activity/timeline")
    see(page.get_by_role("tab", name="Timeline"))
    see(text(page, "feedback_export", exact=True))


def test_the_jobs_page_lists_every_job(ui: Browsing) -> None:
    page = ui.visit("/jobs")
    for job in JOBS:
        see(link_to(page, f"/locations/{LOCATION}/jobs/{job}"))


@pytest.mark.parametrize("job", JOBS)
def test_a_job_page_shows_its_description(ui: Browsing, job: str) -> None:
    description = defs.resolve_job_def(job).description
    assert description, f"{job} has no description to show"
    page = ui.visit(f"/locations/{LOCATION}/jobs/{job}")
    see(text(page, job, exact=True))
    see(text(page, description))


def test_the_settings_resource_page_shows_each_setting_and_the_key_by_name_only(ui: Browsing) -> None:
    page = ui.visit(f"/locations/{LOCATION}/resources/{RESOURCE}")
    see(text(page, RESOURCE, exact=True))
    for setting in FeedbackSettings.model_fields:
        see(text(page, setting, exact=True))
    see(text(page, "FEEDBACK_HMAC_KEY", exact=True))
    # The settings in effect, as values: the contract's defaults the demo leaves unset. The resource
    # is given as a partial (resources.resources_for), so each value is its field's launch default.
    for value in ("ml/feedback_training", "age_range,feedback_created_at,analysis_created_at", "stable", "day"):
        see(page.get_by_role("cell", name=f'"{value}" Default', exact=True))
