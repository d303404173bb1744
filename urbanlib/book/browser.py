"""Headless Chromium for the book's browser checks: open a page from ``file://`` with the network off.

One harness for every test that needs a real browser (the Urban Insights map, the whole-book
reading check): Debian's ``chromium`` driven through its ``chromium-driver`` with Selenium, so no
browser or driver is ever downloaded. :class:`OfflineBrowser` blocks every request that is not
``file:``, ``data:``, ``blob:`` or ``about:`` (Chrome DevTools ``Network.setBlockedURLs``, and a
host resolver that resolves nothing) and records every request the page tried, so a test can
assert that none left the machine.

Install step (``make install`` runs it): ``python -m urbanlib.book.browser install`` installs the
two Debian packages with ``apt-get`` when they are missing and it may (root or password-less sudo);
elsewhere it says so and exits 0 (``--strict`` makes that an error), and the browser tests skip.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from urbanlib.apt import apt_install, apt_prefix, why_no_apt

DEBIAN_PACKAGES = ("chromium", "chromium-driver")
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome-error:", "devtools:")
BLOCKED_PATTERNS = ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]


class BrowserUnavailable(RuntimeError):
    """Chromium, its driver or Selenium is not installed here (the message says which and how to install)."""


def find_chromium() -> tuple[str, str]:
    """Paths of the Chromium binary and its chromedriver; :class:`BrowserUnavailable` when either is missing."""
    browser = next((p for p in CHROMIUM if Path(p).is_file()), None) or shutil.which("chromium")
    driver = next((p for p in CHROMEDRIVER if Path(p).is_file()), None) or shutil.which("chromedriver")
    if not browser or not driver:
        missing = [name for name, path in (("chromium", browser), ("chromium-driver", driver)) if not path]
        raise BrowserUnavailable(f"headless Chromium is not installed ({', '.join(missing)} missing); "
                                 "run `python -m urbanlib.book.browser install` (apt-get, as root) or `make install`")
    return browser, driver


def is_local(url: str) -> bool:
    """True for a URL that never leaves the machine (``file:``, ``data:``, ``blob:``, ``about:``)."""
    return url.startswith(LOCAL_SCHEMES)


class OfflineBrowser:
    """A headless Chromium window that loads nothing from the network; use as a context manager.

    Example::

        with OfflineBrowser() as b:
            seconds = b.open(page, ready="document.querySelector('.ready') !== null")
            assert not b.external_requests()
            b.screenshot(tmp_path / "page.png")

    Args:
        width, height: the window size in CSS pixels.
        timeout_s: how long :meth:`open` and :meth:`wait` wait at most.
    """

    def __init__(self, width: int = 1280, height: int = 900, timeout_s: float = 30.0):
        self.width, self.height, self.timeout_s = int(width), int(height), float(timeout_s)
        self.driver = None
        self._events: list[dict] = []

    def __enter__(self) -> OfflineBrowser:
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError as e:
            raise BrowserUnavailable("selenium is not installed (the `dev` extra: pip install -e '.[dev]')") from e
        browser, driver = find_chromium()
        opts = webdriver.ChromeOptions()
        opts.binary_location = browser
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    f"--window-size={self.width},{self.height}", "--hide-scrollbars", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
                    "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-features=Translate,OptimizationHints,MediaRouter"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(driver), options=opts)
        self.driver.set_page_load_timeout(self.timeout_s)
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": BLOCKED_PATTERNS})
        return self

    def __exit__(self, *exc) -> None:
        if self.driver is not None:
            self.driver.quit()
            self.driver = None

    def open(self, path: str | Path, ready: str | None = None) -> float:
        """Load ``path`` (a file, opened as ``file://``); returns the seconds until it is ready.

        Args:
            path: the HTML file.
            ready: a JavaScript expression that is true once the page has built itself; without
                it, the page is ready at its ``load`` event.
        """
        p = Path(path).resolve()
        if not p.is_file():
            raise FileNotFoundError(p)
        start = time.perf_counter()
        self.driver.get(p.as_uri())
        if ready:
            self.wait(ready)
        return time.perf_counter() - start

    def wait(self, condition: str, timeout_s: float | None = None) -> None:
        """Poll the JavaScript expression ``condition`` until it is true; ``TimeoutError`` naming it otherwise."""
        end = time.perf_counter() + (timeout_s or self.timeout_s)
        while time.perf_counter() < end:
            if self.js(f"return Boolean({condition});"):
                return
            time.sleep(0.05)
        errors = [e["message"] for e in self.console() if e.get("level") == "SEVERE"]
        raise TimeoutError(f"page not ready after {timeout_s or self.timeout_s:.0f} s: {condition}; "
                           f"console errors: {errors[:5]}")

    def js(self, script: str, *args):
        """Run ``script`` (a function body; ``arguments[i]`` are ``args``) in the page and return its value."""
        return self.driver.execute_script(script, *args)

    def find(self, css: str):
        """The first element matching the CSS selector (Selenium raises when there is none)."""
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list:
        """Every element matching the CSS selector."""
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def requests(self) -> list[str]:
        """Every URL the page requested so far (documents, scripts, images, fetches), in order."""
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") in ("Network.requestWillBeSent", "Network.webSocketCreated"):
                self._events.append(msg["params"])
        return [e.get("request", {}).get("url") or e.get("url", "") for e in self._events]

    def external_requests(self) -> list[str]:
        """The requested URLs that would have left the machine (all were blocked)."""
        return [u for u in self.requests() if not is_local(u)]

    def clear_requests(self) -> None:
        """Forget the requests recorded so far (before opening the next page)."""
        self.requests()
        self._events.clear()

    def console(self) -> list[dict]:
        """The browser console's messages so far (``level``, ``message``)."""
        return self.driver.get_log("browser")

    def screenshot(self, path: str | Path) -> Path:
        """Save a PNG of the window to ``path``; returns it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.driver.save_screenshot(str(path)):
            raise RuntimeError(f"Chromium could not save a screenshot to {path}")
        return path


def is_blank(png: str | Path, min_std: float = 8.0, min_colours: int = 16) -> bool:
    """True when a screenshot shows (almost) nothing: one flat colour or a handful of colours.

    Args:
        png: the screenshot.
        min_std: a picture with a pixel standard deviation below this (0-255 scale) is blank.
        min_colours: a picture with fewer distinct colours than this is blank.
    """
    a = np.asarray(Image.open(png).convert("RGB"))
    colours = len(np.unique(a.reshape(-1, 3)[:: max(1, a.size // 3 // 200_000)], axis=0))
    return float(a.std()) < min_std or colours < min_colours


def install(verbose: bool = True) -> str:
    """Install Debian's ``chromium`` and ``chromium-driver`` when missing and apt may be used.

    Returns:
        ``"present"``, ``"installed"``, or ``"unavailable: <why>"`` (no apt, no permission, apt failed).
    """
    def log(msg: str) -> None:
        if verbose:
            print(f"browser setup: {msg}", file=sys.stderr)

    try:
        browser, driver = find_chromium()
        log(f"present ({browser}, {driver})")
        return "present"
    except BrowserUnavailable:
        pass
    prefix = apt_prefix()
    if prefix is None:
        why = why_no_apt()
        log(f"chromium not installed and {why}; the browser tests will skip")
        return f"unavailable: {why}"
    if not apt_install(prefix, DEBIAN_PACKAGES, log):
        return "unavailable: apt-get failed"
    find_chromium()
    log("installed")
    return "installed"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m urbanlib.book.browser install [--strict]``."""
    ap = argparse.ArgumentParser(prog="python -m urbanlib.book.browser", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["install"])
    ap.add_argument("--strict", action="store_true", help="exit 1 when Chromium cannot be installed")
    args = ap.parse_args(argv)
    res = install()
    return 1 if args.strict and res.startswith("unavailable") else 0


if __name__ == "__main__":
    sys.exit(main())
