"""A real headless Chromium for the dashboard tests, driven by Playwright for Python.

The browser is Debian's ``chromium`` (``$CHROMIUM``, default ``/usr/bin/chromium``), started with
``--no-sandbox`` (tests run as root in CI); Playwright's own browser download is never used.
:class:`PageWatch` records what a page did that a test may want to refuse: console errors,
uncaught exceptions, dialogs, requests to any other host.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import expect

# (page.wait_for_function evaluates a string in the page, which the dashboard's
# Content-Security-Policy refuses, rightly: wait with ``expect`` or selectors instead)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 800}
SMALL = {"width": 800, "height": 480}  # a Raspberry Pi touch screen


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (closed, with Playwright's driver, on exit)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True,
        )
        try:
            yield browser
        finally:
            browser.close()


class PageWatch:
    """One page (in its own context: its own session storage) and what it did."""

    def __init__(self, browser: Any, base_url: str, viewport: dict[str, int] | None = None) -> None:
        self.base_url = base_url
        self.context = browser.new_context(viewport=viewport or DESKTOP)
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.console_errors: list[tuple[str, str]] = []  # (text, url)
        self.page_errors: list[str] = []
        self.dialogs: list[str] = []
        self.urls: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda request: self.urls.append(request.url))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append((message.text, message.location.get("url", "")))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: str = "/dashboard", token: str | None = None) -> Any:
        """Load the page; with a token, enter it in the page's form as a person would."""
        self.page.goto(self.base_url + path)
        if token is not None:
            self.page.fill("#token-input", token)
            self.page.click("#login-form button[type=submit]")
        self.page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
        self.page.wait_for_selector("#dispatcher-state:not([data-state=unknown])")
        return self.page

    def foreign_urls(self) -> list[str]:
        """Requests to anything but the server (data: and blob: URLs are not requests out)."""
        home = urlsplit(self.base_url).netloc
        return [u for u in self.urls
                if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc != home]

    def close(self) -> None:
        self.context.close()


__all__ = ["CHROMIUM", "DESKTOP", "SMALL", "PageWatch", "chromium", "expect"]
