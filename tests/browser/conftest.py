"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright.

Screenshots land in test-artifacts/browser/ at the repository's root.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.stack import Nexus, running_nexus

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip every browser test, saying why, where Debian's Chromium is missing."""
    if CHROMIUM.exists():
        return
    reason = f"Debian's Chromium is not at {CHROMIUM}; install it with `make browser-deps`"
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """An empty test-artifacts/browser/ for this run's screenshots."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


# Module scope, not session: while Playwright's sync API is open it holds an event loop on
# this thread, and the asyncio tests that run after the browser tests need it gone.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the test module."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing"
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own storage and cookies) and page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="es-ES")
    yield context.new_page()
    context.close()


@pytest.fixture
def shot(artifacts: Path) -> Callable[[Any, str], None]:
    """Save a full-page screenshot of `page` as test-artifacts/browser/NAME.png."""

    def take(page: Any, name: str) -> None:
        page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)

    return take


@pytest.fixture
def nexus(db_url: str, tmp_path: Path) -> Iterator[Nexus]:
    """`nexus up` on a fresh database (see tests/browser/stack.py)."""
    with running_nexus(db_url, tmp_path / "up.log") as running:
        yield running
