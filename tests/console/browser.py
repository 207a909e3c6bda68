"""Debian's Chromium driven by Playwright for Python, for the console's browser tests. Nothing
here downloads a browser: without /usr/bin/chromium (or Playwright) the tests skip and say why,
and under CI=true they fail instead."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ARTIFACTS", "CHROMIUM", "chromium_page", "shot"]

CHROMIUM = os.environ.get("KEYWATCH_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    pytest.skip(reason)


def _have_chromium() -> bool:
    return os.path.exists(CHROMIUM) or shutil.which(CHROMIUM) is not None


@asynccontextmanager
async def chromium_page(*, color_scheme: str = "light") -> AsyncIterator[Any]:
    """A fresh page (its own cookies) of a headless Chromium, 1280x900."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    if not _have_chromium():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = await browser.new_context(
                viewport={"width": 1280, "height": 900}, color_scheme=color_scheme
            )
            page = await context.new_page()
            page.set_default_timeout(10_000)
            yield page
        finally:
            await browser.close()


async def shot(page: Any, name: str) -> Path:
    """A full-page screenshot kept under tests/console/artifacts/ (CI keeps them)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
