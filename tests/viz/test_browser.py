"""The QA report as a person sees it: headless Chromium (Debian's ``chromium``, driven by
Playwright; never a downloaded browser) opens the report from file:// and looks at it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.viz.test_report import shared_report

SUMMARY_TABLES = (
    "frames-table",
    "sync-table",
    "calibration-table",
    "findings-by-kind",
    "findings-by-class",
    "findings-by-slice",
    "findings-by-sensor",
    "rates-check",
    "rates-class",
    "rates-slice",
    "findings-skipped",
    "occupancy-table",
    "occupancy-classes",
    "findings-table",
)
IMAGES_JS = (
    "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
)


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-frame report of tests/viz/test_report.py (every input; built once a session)."""
    return shared_report(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    executable = _chromium()
    pw = pytest.importorskip("playwright.sync_api")
    dialogs: list[str] = []
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
            assert not dialogs, f"a script from the data ran: {dialogs}"
            assert not errors, f"JavaScript errors: {errors}"
        finally:
            browser.close()


def _all_images_loaded(page: Any) -> int:
    images = page.evaluate(IMAGES_JS)
    assert images, "the page shows no image"
    broken = [src for src, complete, width in images if not complete or width <= 0]
    assert not broken, f"images that did not load: {broken}"
    return len(images)


def _visible_rows(page: Any, table: str) -> Any:
    return page.locator(f"#{table} tbody tr:visible")


def test_index_tables_and_images(page: Any, report: Path) -> None:
    page.goto(report.as_uri(), wait_until="load")
    assert page.title().startswith("QA report")
    for table in SUMMARY_TABLES:
        assert page.locator(f"#{table}").is_visible(), table
        assert _visible_rows(page, table).count() > 0, f"{table} has no rows"
    assert _all_images_loaded(page) >= 3  # two frame thumbnails and the sync plot
    # the hostile message is shown as text, not run
    assert page.get_by_text('<script>alert("pwned")</script>', exact=False).count() == 1


def test_severity_class_and_sensor_filters(page: Any, report: Path) -> None:
    page.goto(report.as_uri(), wait_until="load")
    rows = _visible_rows(page, "findings-table")
    total = rows.count()
    counter = page.locator("[data-filter-table='findings-table'] [data-shown]")
    assert counter.inner_text() == f"{total} of {total} shown"
    severity = page.locator("select[data-filter='level']").first
    severity.select_option("high")
    levels = [rows.nth(i).get_attribute("data-level") for i in range(rows.count())]
    assert levels and set(levels) == {"high"} and len(levels) < total
    assert counter.inner_text() == f"{len(levels)} of {total} shown"
    page.locator("select[data-filter='category']").first.select_option("vehicle.car")
    assert all(
        rows.nth(i).get_attribute("data-category") == "vehicle.car" for i in range(rows.count())
    )
    assert rows.count() == 2  # box_empty (0.92) and class_flip (0.80)
    severity.select_option("")
    page.locator("select[data-filter='category']").first.select_option("")
    page.locator("select[data-filter='sensor']").first.select_option("CAM_FRONT")
    assert rows.count() == 1
    assert "pwned" in rows.first.inner_text()
    page.locator("select[data-filter='sensor']").first.select_option("")
    assert rows.count() == total


def test_clicking_a_header_sorts(page: Any, report: Path) -> None:
    page.goto(report.as_uri(), wait_until="load")
    header = page.locator("#findings-table thead th", has_text="severity")

    def severities() -> list[float]:
        cells = page.locator("#findings-table tbody tr td:first-child")
        return [float(cells.nth(i).inner_text()) for i in range(cells.count())]

    assert severities() == sorted(severities(), reverse=True)  # as written: worst first
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert severities() == sorted(severities())
    header.click()
    assert severities() == sorted(severities(), reverse=True)
    page.locator("#findings-table thead th", has_text="kind").click()
    kinds = page.locator("#findings-table tbody tr td:nth-child(4)").all_inner_texts()
    assert kinds == sorted(kinds) and len(set(kinds)) > 1


def test_frame_page_shows_its_overlays(page: Any, report: Path) -> None:
    page.goto(report.as_uri(), wait_until="load")
    page.locator("#frames-table tbody tr").first.locator("a").first.click()
    page.wait_for_load_state("load")
    assert "/frames/" in page.url and page.locator("h1").inner_text().startswith("Frame 0")
    n = _all_images_loaded(page)
    for name in ("montage", "bev", "overlay_CAM_FRONT", "overlay_THERMAL_FRONT", "occ_topdown"):
        img = page.locator(f"img[src*='/{name}']").first
        assert img.is_visible(), name
        assert img.evaluate("i => i.naturalWidth") > 100, name
    assert n >= 10
    rows = _visible_rows(page, "frame-findings")
    assert rows.count() == 2
    # the next frame is one click away and loads too
    page.locator("a[rel='next']").click()
    page.wait_for_load_state("load")
    assert page.locator("h1").inner_text().startswith("Frame 5")
    _all_images_loaded(page)


@pytest.mark.realdata
def test_real_nuscenes_frame_in_the_browser(
    page: Any, realdata: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from avfusion.io import open_log
    from avfusion.viz.report import build_report

    log = open_log(realdata / "nuscenes-keyframe")
    index = build_report(log, tmp_path_factory.mktemp("real"))
    page.goto(index.as_uri(), wait_until="load")
    assert _visible_rows(page, "frames-table").count() == 1
    _all_images_loaded(page)
    page.locator("#frames-table tbody a").first.click()
    page.wait_for_load_state("load")
    assert _all_images_loaded(page) >= 14  # montage, BEV, 6 overlays, 6 calibration checks
    for cam in ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT",
                "CAM_BACK_RIGHT"):  # fmt: skip
        img = page.locator(f"img[src*='/overlay_{cam}.png']")
        assert img.is_visible() and img.evaluate("i => i.naturalWidth") > 100, cam
