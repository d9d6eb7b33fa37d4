"""Driving Debian's Chromium with Playwright: launch, console watching, screenshots."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        return f"{CHROMIUM} is absent: install Debian's chromium (make browser-deps)"
    return None


def launch(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless (Playwright's own browser download is not used)."""
    path = CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium") or CHROMIUM)
    return playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)


@dataclass
class ConsoleWatch:
    """Console errors and uncaught exceptions of a page; expected HTTP errors can be allowed."""

    errors: list[str] = field(default_factory=list)
    allowed: list[tuple[int, str]] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def allow(self, status: int, url_part: str) -> None:
        """Ignore the browser's report of an HTTP `status` from a URL containing `url_part`."""
        self.allowed.append((status, url_part))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if any(f"status of {status} " in message.text and part in url
               for status, part in self.allowed):
            return
        self.errors.append(f"{message.text} @ {url}")


def screenshot(page: Page, folder: Path, name: str, *, full_page: bool = True) -> Path:
    """Save `name`.png of the page at its current size under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
