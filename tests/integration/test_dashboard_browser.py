"""The dashboard's pages in a real browser: Debian's headless Chromium driven by Selenium
through its ChromeDriver, against `eval-runner dashboard` on a real PostgreSQL with seeded
suite runs. The leaderboard shows the seeded numbers, each plot has one mark per data point,
clicking a cell opens its run with its samples, and screenshots are kept as test artifacts
($TEST_ARTIFACTS, else the test's tmp dir)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_dashboard import (
    MODELS,
    SAMPLES,
    SUITE_RUNS,
    TASKS,
    _seed,
    start_dashboard,
)
from tests.support.results_seed import Seeded
from tests.support.servers import postgres_server
from tests.support.store_db import create_database

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded]]:
    with postgres_server() as pg:
        dsn = asyncio.run(create_database(pg))
        seeded = asyncio.run(_seed(dsn))
        process, base, _ = start_dashboard(pg, dsn.rsplit("/", 1)[1])
        try:
            yield base, seeded
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are not installed: `make services` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    # No network beyond localhost here: the background fetches Chromium makes at start would
    # only be refused.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1800",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def entry_row(section: Any, model: str) -> Any:
    """The leaderboard row of `model` in a task's section."""
    from selenium.webdriver.common.by import By

    rows = section.find_elements(By.CSS_SELECTOR, "tr.entry")
    return next(r for r in rows if r.get_attribute("data-model") == model)


def artifacts(tmp_path: Path) -> Path:
    where = Path(os.environ.get("TEST_ARTIFACTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_the_leaderboard_page_shows_the_numbers_and_one_mark_per_point(
    site: tuple[str, Seeded], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    base, seeded = site
    driver = browser
    driver.get(f"{base}/suites/team-a/nightly")
    assert "nightly" in driver.title
    for task in TASKS:
        section = driver.find_element(By.ID, f"task-{task}")
        rows = section.find_elements(By.CSS_SELECTOR, "table.leaderboard tr.entry")
        assert [r.get_attribute("data-model") for r in rows] == ["small", "medium", "large"]
        for row in rows:
            latest = seeded.latest(row.get_attribute("data-model"), task)
            expected = latest.right / (latest.samples - latest.errored)
            assert row.find_element(By.CSS_SELECTOR, "td.score").text == f"{expected:.3f}"
        marks = section.find_elements(By.CSS_SELECTOR, "svg.leaderboard circle.mark")
        assert len(marks) == len(MODELS)
        assert [m.get_attribute("data-model") for m in marks] == ["small", "medium", "large"]
        # The plot is drawn: the best model's dot is right of the worst one's.
        assert marks[0].rect["x"] > marks[-1].rect["x"]
        assert len(section.find_elements(By.CSS_SELECTOR, "svg.leaderboard line.whisker")) == 9
    cells = driver.find_elements(By.CSS_SELECTOR, "#history .cell")
    assert len(cells) == len(MODELS) * len(TASKS)
    for cell in cells:
        assert len(cell.find_elements(By.CSS_SELECTOR, "svg.history circle.mark")) == SUITE_RUNS
    driver.save_screenshot(str(artifacts(tmp_path) / "dashboard-leaderboard.png"))


def test_clicking_a_cell_drills_into_its_samples(
    site: tuple[str, Seeded], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    base, seeded = site
    driver = browser
    driver.get(f"{base}/suites/team-a/nightly")
    section = driver.find_element(By.ID, "task-sums")
    row = entry_row(section, "large")
    row.find_element(By.CSS_SELECTOR, "a.cell-link").click()
    latest = seeded.latest("large", "sums")
    assert driver.current_url.endswith(f"/runs/{latest.evaluation_uid}/{latest.run}")
    heading = driver.find_element(By.TAG_NAME, "h1").text
    assert "nightly-large-sums" in heading and latest.run in heading
    samples = driver.find_elements(By.CSS_SELECTOR, "#samples tr.sample-row")
    assert len(samples) == SAMPLES
    worst = driver.find_elements(By.CSS_SELECTOR, "#worst .sample")
    assert len(worst) == 10
    assert "http_500" in worst[0].text  # errored samples first
    # The wrong-only filter, from the page's own form: the rows are read once the browser
    # has left the page it submitted from (a click returns before the next page loads).
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    driver.find_element(By.NAME, "wrong").click()
    before = driver.find_element(By.ID, "samples")
    driver.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(driver, 60).until(expected_conditions.staleness_of(before))
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "samples"))
    wrong = driver.find_elements(By.CSS_SELECTOR, "#samples tr.sample-row")
    assert len(wrong) == (latest.samples - latest.errored) - latest.right
    driver.save_screenshot(str(artifacts(tmp_path) / "dashboard-run.png"))


def test_a_delta_opens_the_comparison_with_what_changed(
    site: tuple[str, Seeded], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    base, seeded = site
    driver = browser
    driver.get(f"{base}/suites/team-a/nightly")
    section = driver.find_element(By.ID, "task-sums")
    row = entry_row(section, "medium")
    row.find_element(By.CSS_SELECTOR, "a.delta").click()
    squares = driver.find_elements(By.CSS_SELECTOR, "svg.changes rect.mark")
    counts = {s.get_attribute("data-kind"): int(s.get_attribute("data-count")) for s in squares}
    before, after = seeded.of_cell("medium", "sums")[-2:]
    assert sum(counts.values()) == after.samples - after.errored
    assert counts["both right"] + counts["broken"] == before.right
    assert counts["both right"] + counts["fixed"] == after.right
    changed = driver.find_elements(By.CSS_SELECTOR, "#changed .sample")
    assert len(changed) == counts["fixed"] + counts["broken"]
    driver.save_screenshot(str(artifacts(tmp_path) / "dashboard-compare.png"))


def test_the_page_runs_no_script_at_all(site: tuple[str, Seeded], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    base, _ = site
    driver = browser
    driver.get(f"{base}/suites/team-a/nightly")
    assert driver.find_elements(By.TAG_NAME, "script") == []
