"""Figures of a SynthCity city: indicator maps, the latent land-use map, an image gallery with captions."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from urbanlib import style as house

from ..dataset import UrbanDataset
from .config import ZONES

ZONE_COLOURS = ["#8c564b", "#e377c2", "#d62728", "#7f7f7f", "#bcbd22", "#98df8a", "#2ca02c", "#f5deb3", "#1f77b4",
                "#c49c94"]


def _grid(ds: UrbanDataset, column: str) -> np.ndarray:
    r = ds.regions
    g = np.full((int(r["row"].max()) + 1, int(r["col"].max()) + 1), np.nan)
    g[r["row"].astype(int), r["col"].astype(int)] = r[column].to_numpy(float)
    return g


def plot_indicator_maps(ds: UrbanDataset, indicators: list[str] | None = None, log: bool = True) -> Figure:
    """One grid map per indicator (ln(1+y) by default), three to a row; missing regions are left blank."""
    cols = house.order_indicators(indicators or ds.indicators)
    nrows, ncols = house.grid_shape(len(cols), 3)
    fig, axes = plt.subplots(nrows, ncols, figsize=house.figsize(ncols, nrows, panel_height=2.3), squeeze=False)
    flat = axes.ravel()
    for ax, name in zip(flat, cols, strict=False):
        g = _grid(ds, name)
        im = ax.imshow(np.log1p(g) if log else g, cmap="viridis")
        ax.set_title(f"{'ln(1 + ' + name + ')' if log else name}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    for ax in flat[len(cols):]:
        ax.set_visible(False)
    fig.suptitle(", ".join(ds.cities))
    fig.tight_layout()
    return fig


def plot_land_use(ds: UrbanDataset) -> Figure:
    """The hidden dominant land use per region (``zone``), with a legend."""
    r = ds.regions
    g = np.full((int(r["row"].max()) + 1, int(r["col"].max()) + 1), -1)
    g[r["row"].astype(int), r["col"].astype(int)] = [ZONES.index(z) for z in r["zone"]]
    fig, ax = plt.subplots(figsize=house.figsize(2, 1, panel_height=3.8))
    ax.imshow(np.ma.masked_less(g, 0), cmap=ListedColormap(ZONE_COLOURS), vmin=0, vmax=len(ZONES) - 1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"latent land use: {', '.join(ds.cities)}")
    ax.legend(handles=[Patch(color=c, label=z) for z, c in zip(ZONES, ZONE_COLOURS, strict=True)],
              bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=9)
    fig.tight_layout()
    return fig


def plot_gallery(ds: UrbanDataset, region_ids: list[str] | None = None, n: int = 3, source: str | None = None,
                 style: str = "long", max_statements: int = 8) -> Figure:
    """Satellite tile, street views and one caption per region; false statements in red, true in black.

    Args:
        ds: a SynthCity dataset (captions need the ``statements`` column).
        region_ids: regions to show (default: the first ``n`` with street views).
        n: number of regions when ``region_ids`` is not given.
        source: captioner to show (default: the first one).
        style: ``"short"`` or ``"long"``.
        max_statements: statements listed per caption.
    """
    caps = ds.captions
    source = source or caps["source"].iloc[0]
    streets = ds.street_paths()
    if region_ids is None:
        region_ids = [rid for rid in ds.region_ids if rid in streets][:n] or list(ds.region_ids[:n])
    sats = ds.satellite_paths()
    # per region a row of three pictures, then the caption across the book's full width
    n_rows = len(region_ids)
    fig = plt.figure(figsize=house.figsize(3, n_rows, panel_height=4.6, max_height=16))
    grid = fig.add_gridspec(2 * n_rows, 3, height_ratios=[1.0, 0.9] * n_rows)
    axes = [[fig.add_subplot(grid[2 * i, k]) for k in range(3)] + [fig.add_subplot(grid[2 * i + 1, :])]
            for i in range(n_rows)]
    for row, rid in zip(axes, region_ids, strict=True):
        row[0].imshow(Image.open(sats[rid]))
        row[0].set_title(f"{rid}, zone {ds.regions.set_index('region_id').loc[rid, 'zone']}", fontsize=9)
        for k in (1, 2):
            paths = streets.get(rid, [])
            if len(paths) >= k:
                row[k].imshow(Image.open(paths[k - 1]))
                row[k].set_title(f"street view {k}", fontsize=9)
        sat_rel = ds.images[(ds.images["region_id"] == rid) & (ds.images["kind"] == "satellite")]["path"].iloc[0]
        cap = caps[(caps["image"] == sat_rel) & (caps["source"] == source) & (caps["style"] == style)]
        row[3].axis("off")
        if len(cap):
            stmts = cap["statements"].iloc[0][:max_statements]
            y = 1.0
            for s in stmts:
                mark = "✓" if s["true"] else "✗"
                colour = "black" if s["true"] else "crimson"
                text = textwrap.fill(f"{mark} [{s['kind']}] {s['text']}", 95)
                row[3].text(0, y, text, fontsize=8.5, color=colour, va="top", transform=row[3].transAxes)
                y -= 0.12 * (text.count("\n") + 1)
            row[3].set_title(f"{source} ({style}), omitted facts: {cap['omissions'].iloc[0]}", fontsize=9, loc="left")
        for ax in row[:3]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig
