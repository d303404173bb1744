"""The book's house style: one look for every figure and table (issue 19).

Every notebook calls :func:`apply` once; the library's plotting functions size their figures with
:func:`figsize` and format numbers with the helpers below, so a page reads the same everywhere:

- figures are at most :data:`BOOK_WIDTH` inches wide (the book's text column at :data:`DPI`), with
  fonts that stay legible at that width;
- indicators always appear in :data:`INDICATOR_ORDER`;
- a mean and its spread read ``0.512 ± 0.013`` on one line (non-breaking spaces), effects and
  intervals have three decimals and a sign;
- a missing number is :data:`DASH` (or a reason), never ``nan``.

This module sits at the bottom of the layers (it imports nothing of urbanlib), so the data,
paper, eval and analysis layers can all use it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence

import pandas as pd

BOOK_WIDTH = 7.2  # inches: the text column of the book's theme (about 730 px at DPI 100)
DPI = 100  # rendered pixels per inch of the inline PNGs
DASH = "–"  # shown for a missing number
NBSP = "\u00a0"  # keeps "0.512 ± 0.013" on one line in tables
# The order of indicators in every table and figure (the dataset's own order: UrbanCLIP's four, then UrbanLN's).
INDICATOR_ORDER: tuple[str, ...] = ("population", "gdp", "carbon", "night_light", "poi_count", "comments", "crime")
# Indicator groups: one table or heatmap each (UrbanCLIP's four, then UrbanLN's additions), so no table scrolls sideways.
INDICATOR_GROUPS: tuple[tuple[str, ...], ...] = (INDICATOR_ORDER[:4], INDICATOR_ORDER[4:])
R2_RANGE = (-0.5, 1.0)  # colour range of R² heatmaps; cells outside it are drawn at the edge and marked
DELTA_RANGE = 0.5  # colour half-range of ΔR² heatmaps

RC: dict = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.figsize": (BOOK_WIDTH, 3.6),
    "figure.constrained_layout.use": False,
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "image.cmap": "viridis",
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}

TABLE_CSS = [  # a table cell never wraps inside a number; captions read left to right
    {"selector": "td, th", "props": [("white-space", "nowrap"), ("padding", "2px 8px")]},
    {"selector": "caption", "props": [("caption-side", "bottom"), ("text-align", "left"), ("font-size", "0.9em"),
                                      ("white-space", "normal")]},
]


def apply() -> None:
    """Set the house matplotlib rcParams and pandas display options (call once per notebook)."""
    import matplotlib as mpl

    mpl.rcParams.update(RC)
    pd.set_option("display.precision", 3)
    pd.set_option("display.max_colwidth", 80)


def show(fig) -> None:
    """Display a matplotlib Figure in the notebook as a PNG, and close it if pyplot manages it.

    A ``matplotlib.figure.Figure`` built without pyplot (as the library's plots may be) shows only
    as ``<Figure size ...>`` through ``display``; this renders it, once.
    """
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    display(Image(data=buf.getvalue(), format="png"))
    if plt.fignum_exists(getattr(fig, "number", -1)):
        plt.close(fig)


def figsize(ncols: int = 1, nrows: int = 1, panel_height: float = 2.8, width: float | None = None,
            max_height: float = 9.0) -> tuple[float, float]:
    """(width, height) in inches for ``nrows`` rows of panels at the book's width.

    Args:
        ncols: panels per row (only used to keep very short rows from being too tall).
        nrows: rows of panels.
        panel_height: inches per row.
        width: figure width (default :data:`BOOK_WIDTH`; never more).
        max_height: cap on the height.
    """
    w = min(BOOK_WIDTH, width or BOOK_WIDTH)
    h = min(max_height, max(1.6, panel_height * max(1, nrows)))
    if ncols > 0 and h / max(1, nrows) > w / ncols * 1.4:  # square-ish panels: no tall thin strips
        h = min(max_height, max(1.6, w / ncols * 1.4 * max(1, nrows)))
    return (round(w, 2), round(h, 2))


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, cols) for ``n`` panels at most ``max_cols`` wide (seven maps: 3 × 3, not 1 × 7)."""
    n = max(1, int(n))
    cols = min(max_cols, n)
    return (math.ceil(n / cols), cols)


def order_indicators(names: Iterable[str]) -> list[str]:
    """``names`` in :data:`INDICATOR_ORDER` (unknown names keep their order after the known ones)."""
    names = list(dict.fromkeys(names))
    known = [i for i in INDICATOR_ORDER if i in names]
    return known + [n for n in names if n not in INDICATOR_ORDER]


def indicator_groups(names: Iterable[str]) -> list[list[str]]:
    """``names`` split into :data:`INDICATOR_GROUPS` (each ordered; empty groups dropped; unknown names last)."""
    names = order_indicators(names)
    groups = [[n for n in g if n in names] for g in INDICATOR_GROUPS]
    rest = [n for n in names if n not in INDICATOR_ORDER]
    return [g for g in [*groups, rest] if g]


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def number(x, decimals: int = 3, missing: str = DASH) -> str:
    """``x`` to ``decimals`` places; ``missing`` for None/NaN/inf or a non-number."""
    return f"{float(x):.{decimals}f}" if _finite(x) else missing


def effect(x, decimals: int = 3, missing: str = DASH) -> str:
    """A signed effect (``+0.012``, ``−0.004``: a true minus sign); ``missing`` when undefined."""
    if not _finite(x):
        return missing
    s = f"{float(x):+.{decimals}f}"
    return s.replace("-", "\u2212")


def mean_std(mean, std=None, decimals: int = 3, missing: str = DASH) -> str:
    """``mean ± std`` on one line (non-breaking spaces); the mean alone when the std is undefined."""
    if not _finite(mean):
        return missing
    out = f"{float(mean):.{decimals}f}"
    return out + (f"{NBSP}±{NBSP}{float(std):.{decimals}f}" if _finite(std) else "")


def with_ci(est, low, high, decimals: int = 3, missing: str = DASH) -> str:
    """An effect with its interval, ``+0.012 [−0.003, +0.027]``, on one line."""
    if not _finite(est):
        return missing
    if not (_finite(low) and _finite(high)):
        return effect(est, decimals)
    return f"{effect(est, decimals)}{NBSP}[{effect(low, decimals)},{NBSP}{effect(high, decimals)}]"


def table(df, decimals: int = 3, caption: str | None = None, hide_index: bool = False,
          missing: str = DASH, columns: Sequence[str] | None = None):
    """A pandas Styler in the house style: numbers to ``decimals``, :data:`DASH` for missing, no wrapping.

    Args:
        df: the DataFrame to show; indicator columns (a plain or the first MultiIndex level) are
            put in :data:`INDICATOR_ORDER`.
        decimals: digits after the point of float cells.
        caption: text under the table.
        hide_index: drop the row labels (a table whose first column names its rows).
        missing: text of a missing cell.
        columns: keep only these columns, in this order (after indicator ordering).
    """
    df = df.copy()
    if isinstance(df.columns, pd.MultiIndex):
        first = order_indicators(df.columns.get_level_values(0))
        df = df.reindex(columns=[c for f in first for c in df.columns if c[0] == f])
    elif any(c in INDICATOR_ORDER for c in df.columns):
        ind = order_indicators([c for c in df.columns if c in INDICATOR_ORDER])
        it = iter(ind)
        df = df[[next(it) if c in INDICATOR_ORDER else c for c in df.columns]]
    if columns is not None:
        df = df[list(columns)]
    st = df.style.format(precision=decimals, na_rep=missing).set_table_styles(TABLE_CSS)
    if hide_index:
        st = st.hide(axis="index")
    return st.set_caption(caption) if caption else st
