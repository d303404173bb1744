"""Read every built page of the book in headless Chromium, offline, as its readers would (issue 19).

``python -m urbanlib.book.check [_build/html] [--shots DIR]`` (``make check-book``) opens each HTML
page of the built book with :class:`urbanlib.book.browser.OfflineBrowser` (the network blocked)
and fails a page that

- requested anything outside the machine (a CDN script, font or image);
- shows ``nan``/``NaN``, a Python traceback or an absolute path of this machine in its visible
  text (code inputs are left out: a call a reader may copy can say ``np.nan``);
- has a figure (an image inside a cell's output) that did not load or is blank.

A screenshot of each page is saved for review (default ``_build/check-book/``, never committed).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from urbanlib.cache import REPO_ROOT, cache_root

from .browser import OfflineBrowser, is_blank

NAN = re.compile(r"(?<![\w.])(nan|NaN|NAN)(?![\w(])")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|\w+Error: .*\n?.*File \"")
# what a reader sees: the article without code inputs, the sidebar or the search box
VISIBLE_TEXT_JS = """
const main = document.querySelector('main') || document.body;
const hidden = Array.from(main.querySelectorAll('.cell_input, .highlight, .tag_hide-input .cell_input, nav, script, style'));
const before = hidden.map(e => e.style.display);
hidden.forEach(e => e.style.display = 'none');
const text = main.innerText;
hidden.forEach((e, i) => e.style.display = before[i]);
return text;
"""
FIGURES_JS = """
return Array.from(document.querySelectorAll('.cell_output img, .output img, figure img'))
  .map(i => ({src: i.getAttribute('src') || '', full: i.src, w: i.naturalWidth, h: i.naturalHeight,
              complete: i.complete}));
"""


@dataclass
class PageCheck:
    """What the browser found on one page."""

    page: str  # path relative to the book's root
    figures: int = 0
    problems: list[str] = field(default_factory=list)
    screenshot: str = ""

    @property
    def ok(self) -> bool:
        """True when the page has no problem."""
        return not self.problems


def _absolute_paths() -> list[str]:
    """Absolute paths of this machine that must never show on a page (the checkout, the cache, home)."""
    roots = {str(REPO_ROOT), str(cache_root()), str(Path.home())}
    return sorted({r for r in roots if len(r) > 4}, key=len, reverse=True)


def _image_file(full: str) -> Path | None:
    if full.startswith("file:"):
        return Path(unquote(urlparse(full).path))
    return None


def check_page(browser: OfflineBrowser, path: Path, root: Path, shots: Path | None = None,
               forbidden: list[str] | None = None) -> PageCheck:
    """Open one page and list its problems (see the module docstring).

    Args:
        browser: an open :class:`OfflineBrowser`.
        path: the HTML file.
        root: the book's root (``_build/html``), for the page's name.
        shots: folder for the screenshot (None: none saved).
        forbidden: strings that must not appear in the visible text (default: this machine's
            checkout, cache and home folders).
    """
    rel = path.relative_to(root).as_posix()
    res = PageCheck(rel)
    browser.open(path)
    browser.wait("document.readyState === 'complete'")
    external = browser.external_requests()
    browser.clear_requests()  # the next page starts with none
    if external:
        res.problems.append(f"external requests: {sorted(set(external))[:5]}")
    text = browser.js(VISIBLE_TEXT_JS) or ""
    for pattern, what in ((NAN, "shows NaN"), (TRACEBACK, "shows a traceback")):
        m = pattern.search(text)
        if m:
            at = text[max(0, m.start() - 60): m.end() + 40].replace("\n", " ")
            res.problems.append(f"{what}: …{at}…")
    for p in forbidden if forbidden is not None else _absolute_paths():
        if p in text:
            res.problems.append(f"shows the absolute path {p}")
    figures = browser.js(FIGURES_JS) or []
    res.figures = len(figures)
    for fig in figures:
        name = fig["src"][:80]
        if not fig["complete"] or not fig["w"] or not fig["h"]:
            res.problems.append(f"figure did not load: {name}")
            continue
        f = _image_file(fig["full"])
        if f is not None and f.is_file() and f.suffix.lower() in (".png", ".jpg", ".jpeg") and is_blank(f):
            res.problems.append(f"figure is blank: {name}")
    if shots is not None:
        shot = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
        browser.screenshot(shot)
        res.screenshot = str(shot)
    return res


def book_pages(html: Path) -> list[Path]:
    """The book's content pages: every HTML file except Sphinx's own (search, genindex, _static)."""
    skip = {"search.html", "genindex.html", "py-modindex.html"}
    return sorted(p for p in html.rglob("*.html")
                  if p.name not in skip and not any(part.startswith("_") for part in p.relative_to(html).parts))


def check_book(html: Path, shots: Path | None = None, log=print) -> list[PageCheck]:
    """:func:`check_page` on every page of a built book; returns one result per page."""
    html = Path(html)
    pages = book_pages(html)
    if not pages:
        raise FileNotFoundError(f"no built pages under {html} (run `make book` first)")
    out = []
    with OfflineBrowser(width=1280, height=1600) as b:
        for page in pages:
            res = check_page(b, page, html, shots)
            log(f"{'ok  ' if res.ok else 'FAIL'} {res.page} ({res.figures} figure(s))"
                + "".join(f"\n       {p}" for p in res.problems))
            out.append(res)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m urbanlib.book.check [HTML] [--shots DIR]``; exit 1 when a page fails."""
    ap = argparse.ArgumentParser(prog="python -m urbanlib.book.check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("html", nargs="?", default=str(REPO_ROOT / "_build" / "html"))
    ap.add_argument("--shots", default=str(REPO_ROOT / "_build" / "check-book"), help="folder for the screenshots")
    args = ap.parse_args(argv)
    results = check_book(Path(args.html), Path(args.shots))
    bad = [r for r in results if not r.ok]
    print(f"{len(results)} page(s) checked, {sum(r.figures for r in results)} figure(s), {len(bad)} with problems; "
          f"screenshots in {args.shots}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
