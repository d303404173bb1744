"""Urban Insights (UrbanCLIP §4.5): an interactive map of one city, as HTML that works offline.

UrbanCLIP's paper shows "Urban Insights", a satellite map with the region grid over it where a
click on a cell shows its indicators, a caption and its POIs; it was never released. This module
draws such a map from plain arrays with Leaflet, loaded from the book's vendored copy
(``book/_static/leaflet``) or inlined into the page: no CDN, no tile server, no web font, so the
page renders from ``file://`` with the network off.

What a map holds (:class:`InsightsMap`): the regions' geometry (SynthCity's grid in its own
coordinates, or WGS84 polygons), the tile mosaic as the base layer when there are tiles, switchable
layers (:class:`MapLayer`: indicators, predictions, residuals, latent clusters), and what the panel
shows for a clicked cell (tile, street views, captions, POI counts, each indicator beside each
model's prediction). :mod:`urbanlib.experiments.insights` fills one from a city and its benchmark.

Images are JPEG: the satellite tiles as one mosaic (the panel crops it with CSS), each region's
street views as one strip decoded only when its panel opens.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from urbanlib.cache import REPO_ROOT

from .insights_assets import SCRIPT, STYLE

LEAFLET_DIR = REPO_ROOT / "book" / "_static" / "leaflet"  # vendored Leaflet (npm leaflet@1.9.4, BSD-2-Clause)
BOOK_LEAFLET_URL = "../../_static/leaflet"  # from a page in _build/html/book/generated/ to the book's static files
KINDS = ("sequential", "diverging", "categorical")


@dataclass
class MapLayer:
    """One switchable colouring of the cells.

    Attributes:
        name: unique name shown in the layer switcher (e.g. ``"population"``).
        group: the switcher's group (``"Indicators"``, ``"Predictions: UrbanCLIP"``, ...).
        values: (N,) one value per region (NaN: no value, drawn grey); category ids for
            ``categorical`` (-1: none).
        kind: ``sequential`` | ``diverging`` (centred on 0) | ``categorical``.
        label: the legend's title (what the colour means, with its unit).
        vmin, vmax: the colour range; defaults: 2nd-98th percentile (``diverging``: symmetric).
        categories: names of the category ids (``categorical``).
    """

    name: str
    group: str
    values: np.ndarray
    kind: str = "sequential"
    label: str = ""
    vmin: float | None = None
    vmax: float | None = None
    categories: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"layer {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        self.values = np.asarray(self.values, dtype=float).reshape(-1)
        finite = self.values[np.isfinite(self.values)]
        if self.kind == "categorical":
            k = int(finite.max()) + 1 if finite.size else 0
            self.categories = list(self.categories) or [f"cluster {c}" for c in range(k)]
            return
        if finite.size == 0:
            lo, hi = 0.0, 1.0
        elif self.kind == "diverging":
            hi = float(np.percentile(np.abs(finite), 98)) or float(np.abs(finite).max()) or 1.0
            lo = -hi
        else:
            lo, hi = (float(v) for v in np.percentile(finite, [2, 98]))
        self.vmin = lo if self.vmin is None else float(self.vmin)
        self.vmax = hi if self.vmax is None else float(self.vmax)

    def to_json(self) -> dict:
        """The layer as the page's script reads it (values rounded to 4 significant digits)."""
        if self.kind == "categorical":
            vals = [None if not np.isfinite(v) else int(v) for v in self.values]
        else:
            vals = _round(self.values)
        out = {"name": self.name, "group": self.group, "kind": self.kind, "label": self.label or self.name,
               "values": vals}
        if self.kind == "categorical":
            out["categories"] = self.categories
        else:
            out["vmin"], out["vmax"] = float(self.vmin), float(self.vmax)
        return out


@dataclass
class Geometry:
    """Where the regions are drawn.

    Attributes:
        kind: ``"grid"`` (the city's own grid: map x = column, y = -row, one unit a cell; north up)
            or ``"wgs84"`` (``polygons`` in latitude/longitude, drawn in Web Mercator).
        rows, cols: (N,) grid positions (``grid``; also used to place tiles in the mosaic).
        polygons: per region, a ring of ``[lat, lon]`` pairs (``wgs84``).
        note: how the geometry was obtained (shown under the map).
    """

    kind: str
    rows: np.ndarray | None = None
    cols: np.ndarray | None = None
    polygons: list[list[list[float]]] | None = None
    note: str = ""

    def __post_init__(self):
        if self.kind not in ("grid", "wgs84"):
            raise ValueError(f"geometry kind must be 'grid' or 'wgs84', got {self.kind!r}")
        if self.kind == "grid" and (self.rows is None or self.cols is None):
            raise ValueError("a grid geometry needs rows and cols")
        if self.kind == "wgs84" and self.polygons is None:
            raise ValueError("a wgs84 geometry needs polygons")

    def __len__(self) -> int:
        return len(self.rows) if self.kind == "grid" else len(self.polygons)


@dataclass
class InsightsMap:
    """Everything one Urban Insights map shows; :meth:`to_html` renders it.

    Attributes:
        title: shown above the map.
        region_ids: (N,) region ids, the order of every per-region array.
        geometry: where the cells are drawn.
        layers: the switchable layers (names unique).
        indicators: the T indicator names of ``truth`` and ``predictions``.
        truth: (N, T) indicators in original units (NaN: unknown).
        predictions: model name -> (N, T) predictions in original units.
        prediction_note: how the predictions were made (shown under the panel's table).
        captions: panel section title -> (N,) texts ("" or None: none for that region).
        poi_categories, poi_counts: POI category names and (N, C) counts, or None.
        facts: name -> (N,) short values shown under the region id (grid cell, split, ...).
        names: (N,) place names to search, or None.
        satellite: (N, 3, S, S) uint8 tiles, or None (no tiles: the choropleth is the base layer).
        satellite_mask: (N,) bool, the region has a tile.
        street: (N, V, 3, s, s) uint8 street views, or None.
        street_mask: (N, V) bool, which views exist.
        initial_layer: the layer shown first ("" = none: tiles and grid only).
        notes: lines shown under the map (projection, what is stand-in, ...).
    """

    title: str
    region_ids: np.ndarray
    geometry: Geometry
    layers: list[MapLayer]
    indicators: list[str]
    truth: np.ndarray
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    prediction_note: str = ""
    captions: dict[str, list[str]] = field(default_factory=dict)
    poi_categories: list[str] | None = None
    poi_counts: np.ndarray | None = None
    facts: dict[str, list] = field(default_factory=dict)
    names: list[str] | None = None
    satellite: np.ndarray | None = None
    satellite_mask: np.ndarray | None = None
    street: np.ndarray | None = None
    street_mask: np.ndarray | None = None
    initial_layer: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.region_ids = np.asarray(self.region_ids).astype(str)
        n = len(self.region_ids)
        if len(self.geometry) != n:
            raise ValueError(f"geometry has {len(self.geometry)} cells for {n} regions")
        self.truth = np.asarray(self.truth, dtype=float).reshape(n, len(self.indicators))
        names = [layer.name for layer in self.layers]
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            raise ValueError(f"layer names must be unique; repeated: {dup}")
        for layer in self.layers:
            if len(layer.values) != n:
                raise ValueError(f"layer {layer.name!r} has {len(layer.values)} values for {n} regions")
        for m, p in self.predictions.items():
            if np.shape(p) != (n, len(self.indicators)):
                raise ValueError(f"predictions of {m!r} have shape {np.shape(p)}, expected {(n, len(self.indicators))}")
        for title, texts in self.captions.items():
            if len(texts) != n:
                raise ValueError(f"captions {title!r}: {len(texts)} texts for {n} regions")
        if self.initial_layer and self.initial_layer not in names:
            raise KeyError(f"initial layer {self.initial_layer!r} is not a layer; layers: {names}")
        if self.satellite is not None and self.satellite_mask is None:
            self.satellite_mask = np.ones(n, dtype=bool)
        if self.street is not None and self.street_mask is None:
            self.street_mask = np.ones(self.street.shape[:2], dtype=bool)

    @property
    def layer_names(self) -> list[str]:
        """The switchable layers' names, in switcher order."""
        return [layer.name for layer in self.layers]

    def layer(self, name: str) -> MapLayer:
        """The layer called ``name``; a ``KeyError`` naming the layers otherwise."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers: {self.layer_names}")

    def data(self, jpeg_quality: int = 70) -> dict:
        """The JSON the page's script reads (images as JPEG data URIs)."""
        n = len(self.region_ids)
        g = self.geometry
        geom = ({"kind": "grid", "rows": [int(r) for r in g.rows], "cols": [int(c) for c in g.cols]} if g.kind == "grid"
                else {"kind": "wgs84", "polygons": [[[round(float(a), 6), round(float(b), 6)] for a, b in ring]
                                                    for ring in g.polygons]})
        out = {"ids": self.region_ids.tolist(), "geometry": geom, "layers": [layer.to_json() for layer in self.layers],
               "indicators": list(self.indicators), "truth": [_round(r) for r in self.truth],
               "models": list(self.predictions),
               "predictions": {m: [_round(r) for r in np.asarray(p, float)] for m, p in self.predictions.items()},
               "prediction_note": self.prediction_note,
               "captions": [{"name": k, "texts": [t or "" for t in v]} for k, v in self.captions.items()],
               "facts": [{"name": k, "values": ["" if v is None else str(v) for v in vals]}
                         for k, vals in self.facts.items()],
               "names": list(self.names) if self.names is not None else None,
               "initial_layer": self.initial_layer, "opacity": 0.7 if self.satellite is None else 0.6,
               "mosaic": None, "street": None, "poi": None}
        if self.poi_categories is not None and self.poi_counts is not None:
            out["poi"] = {"categories": list(self.poi_categories), "counts": [_round(r) for r in self.poi_counts]}
        if self.satellite is not None and self.satellite_mask.any():
            out["mosaic"] = _mosaic(self.satellite, self.satellite_mask, g, jpeg_quality)
        if self.street is not None and self.street.shape[1] and self.street_mask.any():
            srcs, counts = [], []
            for i in range(n):
                views = self.street[i][self.street_mask[i]]  # (v, 3, s, s)
                counts.append(len(views))
                srcs.append(_jpeg(np.concatenate(list(views.transpose(0, 2, 3, 1)), axis=1), jpeg_quality)
                            if len(views) else "")
            out["street"] = {"src": srcs, "count": counts, "px": int(self.street.shape[-1]) * 2}
        return out

    def to_html(self, leaflet: str = BOOK_LEAFLET_URL, element_id: str = "urban-insights",
                jpeg_quality: int = 70) -> str:
        """The map as an HTML fragment (a ``<div>`` with its data and script) for a notebook or a page.

        Args:
            leaflet: where the page loads Leaflet from: a URL folder holding ``leaflet.js`` and
                ``leaflet.css`` (default: the book's vendored copy, relative to a generated page),
                or ``"inline"`` to embed the vendored files in the fragment (works anywhere).
            element_id: the map's HTML id (unique on its page).
            jpeg_quality: JPEG quality of the tile mosaic and street views (1-95).
        """
        if not 1 <= int(jpeg_quality) <= 95:
            raise ValueError(f"jpeg_quality must be in 1..95, got {jpeg_quality}")
        if not element_id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"element_id must be letters, digits, '-' or '_', got {element_id!r}")
        payload = json.dumps(self.data(jpeg_quality), separators=(",", ":"), allow_nan=False)
        payload = payload.replace("</", "<\\/")  # never close the script element from inside the data
        css, js = STYLE, SCRIPT
        esc = html.escape
        notes = "".join(f"<div>{esc(n)}</div>" for n in [*self.notes, self.geometry.note] if n)
        return f"""<div class="urban-insights" id="{element_id}">
{_leaflet_tags(leaflet)}
<style>{css}</style>
<div class="ui-toolbar"><strong>{esc(self.title)}</strong>
<label>layer <select class="ui-layer" aria-label="layer"><option value="">none: {"satellite tiles and " if self.satellite is not None else ""}grid</option></select></label>
<label>opacity <input class="ui-opacity" type="range" min="0" max="1" step="0.05" aria-label="opacity"></label>
<label>region <input class="ui-search" list="{element_id}-ids" placeholder="region id{" or place" if self.names is not None else ""}" aria-label="search"></label>
<button class="ui-go" type="button">find</button><span class="ui-status"></span></div>
<datalist id="{element_id}-ids"></datalist>
<div class="ui-body"><div class="ui-map"></div><div class="ui-legend"></div><div class="ui-panel" hidden></div></div>
<div class="ui-foot">{notes}</div>
<script type="application/json" class="ui-data">{payload}</script>
<script>{js}</script>
</div>"""

    def write_page(self, path: str | Path, leaflet: str = "copy", jpeg_quality: int = 70) -> Path:
        """Write the map as a standalone HTML document (opens from ``file://`` offline).

        Args:
            path: the ``.html`` file to write.
            leaflet: ``"copy"`` (default) copies the vendored Leaflet to ``<folder>/leaflet/`` beside
                the page, ``"inline"`` embeds it, anything else is a URL folder used as is.
            jpeg_quality: JPEG quality of the images.

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if leaflet == "copy":
            copy_leaflet(path.parent / "leaflet")
            leaflet = "leaflet"
        body = self.to_html(leaflet=leaflet, jpeg_quality=jpeg_quality)
        path.write_text(f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                        f"<title>{html.escape(self.title)}</title></head>\n<body style=\"margin:12px\">\n{body}\n"
                        f"</body></html>\n", encoding="utf-8")
        return path


def copy_leaflet(dest: str | Path) -> Path:
    """Copy the vendored Leaflet (JS, CSS, images, licence) to ``dest``; returns ``dest``."""
    dest = Path(dest)
    if not (LEAFLET_DIR / "leaflet.js").is_file():
        raise FileNotFoundError(f"the vendored Leaflet is missing: {LEAFLET_DIR / 'leaflet.js'}")
    shutil.copytree(LEAFLET_DIR, dest, dirs_exist_ok=True)
    return dest


def _leaflet_tags(leaflet: str) -> str:
    if leaflet == "inline":
        css = (LEAFLET_DIR / "leaflet.css").read_text()
        js = (LEAFLET_DIR / "leaflet.js").read_text().replace("//# sourceMappingURL=leaflet.js.map", "")
        return f"<style>{css}</style>\n<script>{js}</script>"
    if "://" in leaflet and not leaflet.startswith("file://"):
        raise ValueError(f"Leaflet must come from the book's own files, not {leaflet!r} (the page works offline)")
    base = html.escape(leaflet.rstrip("/"))
    return f'<link rel="stylesheet" href="{base}/leaflet.css">\n<script src="{base}/leaflet.js"></script>'


def _round(values) -> list:
    """Floats to 4 significant digits (None for NaN/inf), for a compact JSON."""
    out = []
    for v in np.asarray(values, dtype=float).reshape(-1):
        if not math.isfinite(v):
            out.append(None)
        elif v == 0:
            out.append(0)
        else:
            out.append(float(f"{v:.4g}"))
    return out


def _jpeg(rgb: np.ndarray, quality: int) -> str:
    """(H, W, 3) uint8 -> a JPEG data URI."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, "JPEG", quality=int(quality))
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _mosaic(tiles: np.ndarray, mask: np.ndarray, geometry: Geometry, quality: int) -> dict:
    """The tiles as one image at their grid positions, and where the map places it."""
    n, _, px, _ = tiles.shape
    if geometry.rows is not None and geometry.cols is not None:
        rows, cols = np.asarray(geometry.rows, int), np.asarray(geometry.cols, int)
    else:  # no grid: tiles in reading order, shown in the panel only
        side = math.ceil(math.sqrt(n))
        rows, cols = np.arange(n) // side, np.arange(n) % side
    n_rows, n_cols = int(rows.max()) + 1, int(cols.max()) + 1
    img = np.full((n_rows * px, n_cols * px, 3), 96, dtype=np.uint8)
    for i in np.flatnonzero(mask):
        img[rows[i] * px:(rows[i] + 1) * px, cols[i] * px:(cols[i] + 1) * px] = tiles[i].transpose(1, 2, 0)
    if geometry.kind == "grid":
        bounds = [[-n_rows, 0], [0, n_cols]]
    elif geometry.rows is not None:  # a regular grid in WGS84: the outer corners of its corner cells
        lat = np.array([p[0] for ring in geometry.polygons for p in ring])
        lon = np.array([p[1] for ring in geometry.polygons for p in ring])
        bounds = [[float(lat.min()), float(lon.min())], [float(lat.max()), float(lon.max())]]
    else:
        bounds = None
    return {"src": _jpeg(img, quality), "rows": n_rows, "cols": n_cols, "row": rows.tolist(), "col": cols.tolist(),
            "has": [bool(m) for m in mask], "bounds": bounds}
