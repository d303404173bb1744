"""How an executed notebook becomes a page a reader can use (issue 19).

- :func:`prepare_page`: the page's first heading becomes its manifest title (city, imagery and
  "(stored)" included, so search results and tabs can be told apart), the ``parameters`` cell is
  folded away (``hide-cell``) and papermill's injected-parameters cell removed (``remove-cell``);
  the title already says what they set.
- :func:`figures_without_image`: cells tagged ``figure`` are meant to draw; a page where one of
  them has no image output is broken (a Figure built but never displayed).
- :func:`unexpected_log_lines`: the build log is checked against :data:`LOG_ALLOWLIST`, so a new
  warning shows instead of drowning among expected lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import nbformat

FIGURE_TAG = "figure"  # cell tag: this cell draws at least one figure
IMAGE_MIMES = ("image/png", "image/svg+xml", "image/jpeg")


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def _add_tag(cell, tag: str) -> None:
    tags = cell.setdefault("metadata", {}).setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def prepare_page(nb, title: str | None = None):
    """Retitle the page and fold away its parameter cells; changes ``nb`` in place and returns it.

    Args:
        nb: an executed notebook (nbformat node).
        title: the page title (``Entry.title``, plus " (stored)" for a stored page); the notebook's
            own first heading stays under it in italics. None keeps the heading.
    """
    for cell in nb.cells:
        tags = _tags(cell)
        if "injected-parameters" in tags:
            _add_tag(cell, "remove-cell")
        elif "parameters" in tags:
            _add_tag(cell, "hide-cell")
    if title:
        for cell in nb.cells:
            if cell.cell_type != "markdown":
                continue
            lines = cell.source.lstrip().split("\n")
            if lines and re.match(r"#\s", lines[0]):
                own = lines[0][1:].strip()
                head = [f"# {title}"] + ([f"\n*{own}*"] if own and own != title else [])
                cell.source = "\n".join(head + lines[1:])
                break
        else:
            nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {title}"))
    return nb


def has_image(cell) -> bool:
    """True when a code cell's outputs hold at least one image."""
    return any(mime in o.get("data", {}) for o in cell.get("outputs", [])
               if o.get("output_type") in ("display_data", "execute_result") for mime in IMAGE_MIMES)


def figures_without_image(nb) -> list[str]:
    """The ``figure``-tagged code cells that drew nothing, as ``"cell 12: fig = plot_...``" strings."""
    return [f"cell {i}: {cell.source.strip().splitlines()[0][:80] if cell.source.strip() else ''}"
            for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and FIGURE_TAG in _tags(cell) and not has_image(cell)]


# Lines a healthy `python -m urbanlib.book build` prints (regular expressions, matched at the line start).
LOG_ALLOWLIST: tuple[str, ...] = (
    r"$",
    r"\s*$",
    r"ran \S+ in [\d.]+ s$",
    r"notebooks:\s",  # tqdm's bar
    r"note: \d+ stored page\(s\) ",
    r"executed \d+ notebook\(s\), \d+ cached, \d+ stored, in \d+ s$",
    r"book built: ",
    r"Running Jupyter-Book",
    r"Source Folder: ",
    r"Config Path: ",
    r"Output Path: ",
    r"Running Sphinx v",
    r"\[etoc\] ",  # the table-of-contents extension: master doc, excluded files, index redirect
    r"loading translations",
    r"making output directory",
    r"myst v[\d.]+: ",
    r"myst-nb v[\d.]+: ",
    r"MyST-NB: ",
    r"Using jupyter-cache at",
    r"sphinx-multitoc-numbering",
    r"building \[mo\]: ",
    r"writing output\.\.\.",
    r"building \[html\]: ",
    r"updating environment: ",
    r"reading sources\.\.\. ",
    r"looking for now-outdated files",
    r"pickling environment",
    r"checking consistency",
    r"preparing documents",
    r"copying assets",
    r"copying static files",
    r"copying extra files",
    r"done$",
    r"writing output\.\.\. ",
    r"generating indices",
    r"writing additional pages",
    r"copying images",
    r"dumping search index",
    r"dumping object inventory",
    r"build succeeded",
    r"The HTML pages are in ",
    r"=+$",
    r"Finished generating HTML for book\.",
    r"Your book's HTML pages are here:",
    r"\s+_build/html/",
    r"\s+\S*_build/html/",
    r"You can look at your book by opening this file in a browser:",
    r"\s+_build/html/index\.html",
    r"Or paste this line directly into your browser bar:",
    r"\s+file://",
    r"\[\d+%\] ",  # sphinx progress lines
    r"Copying tab assets",
    r"copying ",
    r"reading ",
    r"Executing",
    r"Updating",
    r"\x1b",  # coloured progress lines
)


def unexpected_log_lines(lines: Iterable[str], allow: Iterable[str] = LOG_ALLOWLIST) -> list[str]:
    """The lines of a build log that no allowlist pattern matches (warnings, tracebacks, new noise)."""
    patterns = [re.compile(p) for p in allow]
    return [line for line in (raw.rstrip("\n") for raw in lines) if not any(p.match(line) for p in patterns)]
