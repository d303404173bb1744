"""Static maps of a city's cells: one panel per value column, cells drawn as their (lon, lat) polygons.

Real releases place each region as a polygon (the UrbanCLIP release's cells are WGS84 rings from
their Baidu tile numbers, :func:`urbanlib.data.urbanclip_layout.cell_polygons`); a dataset with
only a grid gets unit squares on its ``row``/``col`` grid instead. NaN cells are drawn light grey.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from urbanlib.data import urbanclip_layout


def region_polygons(regions: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Outlines of the regions and the coordinate system they are in.

    Returns:
        ``(rings, crs)``: rings (N, K, 2) closed polygons; crs ``"WGS84"`` (lon, lat degrees, from
        the release's tile numbers) or ``"grid"`` (col, -row unit squares).
    """
    if {"bd09_x", "bd09_y"} <= set(regions.columns):
        return urbanclip_layout.cell_polygons(regions), "WGS84"
    c = regions["col"].to_numpy(dtype=float)
    r = -regions["row"].to_numpy(dtype=float)
    corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=float) - 0.5
    return np.stack([np.stack([c, r], 1)[:, None, :] + corners[None]], 0)[0], "grid"


def plot_cell_values(regions: pd.DataFrame, values: dict[str, np.ndarray], diverging: bool = False,
                     ncols: int = 3, label: str = "") -> Figure:
    """One map per entry of ``values`` (title -> (N,) array in ``regions`` order).

    Args:
        regions: the regions table (polygons from :func:`region_polygons`).
        values: panel title -> values per region (NaN: not drawn in colour).
        diverging: centre the colour scale at 0 (residuals) with a red-blue map.
        ncols: panels per row.
        label: colour bar label.

    Returns:
        A matplotlib Figure.
    """
    rings, crs = region_polygons(regions)
    n = len(values)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False)
    for ax, (title, v) in zip(axes.flat, values.items(), strict=False):
        v = np.asarray(v, dtype=float)
        ok = np.isfinite(v)
        ax.add_collection(PolyCollection(list(rings[~ok]), facecolor="0.88", edgecolor="none"))
        if ok.any():
            if diverging:
                lim = float(np.nanpercentile(np.abs(v[ok]), 98)) or 1.0
                norm, cmap = TwoSlopeNorm(0.0, -lim, lim), "RdBu_r"
            else:
                norm, cmap = plt.Normalize(*np.nanpercentile(v[ok], [1, 99])), "viridis"
            coll = PolyCollection(list(rings[ok]), array=v[ok], cmap=cmap, norm=norm, edgecolor="none")
            ax.add_collection(coll)
            fig.colorbar(coll, ax=ax, shrink=0.8, label=label)
        ax.autoscale_view()
        ax.set_aspect(1 / np.cos(np.deg2rad(np.nanmean(rings[..., 1]))) if crs == "WGS84" else 1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("longitude (°E, WGS84)" if crs == "WGS84" else "grid column")
        ax.set_ylabel("latitude (°N, WGS84)" if crs == "WGS84" else "grid row (north up)")
        ax.tick_params(labelsize=7)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
