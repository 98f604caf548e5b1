"""The web page end to end in headless Chromium (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _server_support import CORPUS, MODEL_DIR, build_store, real_model, serve_subprocess

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent: apt-get install -y chromium"
)

ARTICLE = (
    "Lighthouses guided ships along dangerous coasts for centuries. "
    "Their lamps were fuelled by whale oil, later by kerosene, and finally by electricity. "
    "Meanwhile, bees communicate the direction of flowers with a waggle dance. "
    "Honey is stored in wax cells that the workers build."
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri = f"lancedb://{tmp_path_factory.mktemp('page-store')}"
    build_store(uri, "docs", real_model(), CORPUS)
    args = [
        "--model",
        str(MODEL_DIR),
        "--store",
        uri,
        "--collection",
        "docs",
        "--log-level",
        "warning",
    ]
    with serve_subprocess(args) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def test_search_shows_ranked_results_with_marked_terms(server: str, browser: Any) -> None:
    page = browser.new_page()
    try:
        page.goto(server + "/")
        page.wait_for_selector("#model:has-text('384 dimensions')")
        page.fill("#search-query", "rovers on the red planet Mars")
        page.fill("#search-k", "3")
        page.click("#search-form button[type=submit]")
        page.wait_for_selector("#search-results li")
        items = page.locator("#search-results li")
        assert items.count() == 3
        assert "Mars is the fourth planet" in items.nth(0).inner_text()
        assert items.nth(0).locator("mark").first.inner_text().lower() in {
            "rovers",
            "red",
            "planet",
            "mars",
        }
        assert "space-mars" in items.nth(0).locator(".source").inner_text()
        assert "3 results" in page.inner_text("#search-status")
    finally:
        page.close()


def test_highlights_playground_with_pasted_text_and_a_dropped_file(
    server: str, browser: Any, tmp_path: Path
) -> None:
    page = browser.new_page()
    try:
        page.goto(server + "/")
        page.fill("#hl-text", ARTICLE)
        page.fill("#hl-query", "how do bees tell each other where flowers are")
        page.fill("#hl-k", "1")
        page.click("#hl-form button[type=submit]")
        page.wait_for_selector("#hl-results li")
        best = page.locator("#hl-results li .snippet").first.inner_text()
        assert "waggle dance" in best
        # The document view marks exactly the returned passage.
        assert page.locator("#hl-document mark").first.inner_text() == best

        note = tmp_path / "lighthouse.md"
        note.write_text("# Coasts\n\n" + ARTICLE, encoding="utf-8")
        page.set_input_files("#hl-file-input", str(note))
        assert "lighthouse.md" in page.inner_text("#hl-file")
        page.fill("#hl-query", "what fuel did lighthouse lamps burn")
        page.click("#hl-form button[type=submit]")
        page.wait_for_function(
            "document.querySelector('#hl-results li .snippet')?.textContent.includes('kerosene')"
        )
        assert "chunks" in page.inner_text("#hl-status")

        page.fill("#hl-query", "")
        page.fill("#hl-query", " ")
        page.click("#hl-form button[type=submit]")
        page.wait_for_selector("#hl-status.error")
    finally:
        page.close()
