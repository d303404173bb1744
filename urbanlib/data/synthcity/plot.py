"""Figures of a SynthCity city: indicator maps, the latent land-use map, an image gallery with captions."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

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
    """One grid map per indicator (ln(1+y) by default); missing regions are left blank."""
    cols = indicators or ds.indicators
    fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols), 2.8), squeeze=False)
    for ax, name in zip(axes[0], cols, strict=True):
        g = _grid(ds, name)
        im = ax.imshow(np.log1p(g) if log else g, cmap="viridis")
        ax.set_title(f"{'ln(1+' + name + ')' if log else name}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(", ".join(ds.cities), fontsize=9)
    fig.tight_layout()
    return fig


def plot_land_use(ds: UrbanDataset) -> Figure:
    """The hidden dominant land use per region (``zone``), with a legend."""
    r = ds.regions
    g = np.full((int(r["row"].max()) + 1, int(r["col"].max()) + 1), -1)
    g[r["row"].astype(int), r["col"].astype(int)] = [ZONES.index(z) for z in r["zone"]]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.imshow(np.ma.masked_less(g, 0), cmap=ListedColormap(ZONE_COLOURS), vmin=0, vmax=len(ZONES) - 1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"latent land use: {', '.join(ds.cities)}", fontsize=9)
    ax.legend(handles=[Patch(color=c, label=z) for z, c in zip(ZONES, ZONE_COLOURS, strict=True)],
              bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7)
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
    fig, axes = plt.subplots(len(region_ids), 4, figsize=(13, 3.2 * len(region_ids)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1, 2.6]})
    for row, rid in zip(axes, region_ids, strict=True):
        row[0].imshow(Image.open(sats[rid]))
        row[0].set_title(f"{rid}\nzone={ds.regions.set_index('region_id').loc[rid, 'zone']}", fontsize=7)
        for k in (1, 2):
            paths = streets.get(rid, [])
            if len(paths) >= k:
                row[k].imshow(Image.open(paths[k - 1]))
                row[k].set_title(f"street {k}", fontsize=7)
        sat_rel = ds.images[(ds.images["region_id"] == rid) & (ds.images["kind"] == "satellite")]["path"].iloc[0]
        cap = caps[(caps["image"] == sat_rel) & (caps["source"] == source) & (caps["style"] == style)]
        row[3].axis("off")
        if len(cap):
            stmts = cap["statements"].iloc[0][:max_statements]
            y = 1.0
            for s in stmts:
                mark = "✓" if s["true"] else "✗"
                colour = "black" if s["true"] else "crimson"
                text = textwrap.fill(f"{mark} [{s['kind']}] {s['text']}", 80)
                row[3].text(0, y, text, fontsize=6.5, color=colour, va="top", transform=row[3].transAxes)
                y -= 0.125 * (text.count("\n") + 1)
            row[3].set_title(f"{source} ({style}), omitted facts: {cap['omissions'].iloc[0]}", fontsize=7)
        for ax in row[:3]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig
