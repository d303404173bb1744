"""Figures for the "Your own city" page: cut tiles, coverage, and built values against a known truth."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from urbanlib import style as house

from ..data.dataset import UrbanDataset


def plot_tiles(ds: UrbanDataset, region_ids: list[str]) -> Figure:
    """The satellite tile of each region, titled with its id and grid row/col."""
    sat = ds.satellite_paths()
    reg = ds.regions.set_index("region_id")
    fig, axes = plt.subplots(1, len(region_ids), figsize=house.figsize(len(region_ids), 1, panel_height=2.2), squeeze=False)
    for ax, rid in zip(axes[0], region_ids, strict=True):
        ax.imshow(Image.open(sat[rid]))
        ax.set_title(f"{rid}\nrow {reg.loc[rid, 'row']}, col {reg.loc[rid, 'col']}", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_coverage(ds: UrbanDataset) -> Figure:
    """Each indicator raster's coverage of every region (share of the region under valid pixels)."""
    cols = [c for c in ds.regions.columns if c.endswith("_coverage") and c != "satellite_coverage"]
    r = ds.regions
    fig, axes = plt.subplots(1, max(1, len(cols)), figsize=house.figsize(max(1, len(cols)), 1, panel_height=2.8), squeeze=False)
    for ax, name in zip(axes[0], cols, strict=False):
        g = np.full((int(r["row"].max()) + 1, int(r["col"].max()) + 1), np.nan)
        g[r["row"].astype(int), r["col"].astype(int)] = r[name].to_numpy(float)
        im = ax.imshow(g, cmap="magma", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.tight_layout()
    return fig


def plot_recovery(built: UrbanDataset, truth: UrbanDataset, indicators: list[str]) -> Figure:
    """Built value against the true value per region (log-log), matched on grid row/col."""
    t = truth.regions.set_index(["row", "col"])
    b = built.regions.set_index(["row", "col"]).reindex(t.index)
    fig, axes = plt.subplots(1, len(indicators), figsize=house.figsize(len(indicators), 1, panel_height=2.7), squeeze=False)
    for ax, name in zip(axes[0], indicators, strict=True):
        x, y = t[name].to_numpy(float), b[name].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        ax.scatter(np.log1p(x[ok]), np.log1p(y[ok]), s=8)
        lim = [np.log1p(min(x[ok].min(), y[ok].min())), np.log1p(max(x[ok].max(), y[ok].max()))]
        ax.plot(lim, lim, color="grey", lw=0.8)
        ax.set_xlabel(f"ln(1+{name}), generator", fontsize=7)
        ax.set_ylabel("ln(1+value), built", fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig
