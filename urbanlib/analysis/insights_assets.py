"""The Urban Insights map's script and style (:mod:`urbanlib.analysis.insights_map` inlines both in the page).

Kept as Python strings so that the book's page cache, which hashes urbanlib's Python and data files,
re-executes the map pages when either changes. The script reads the page's JSON and builds the map
with Leaflet; the style uses system fonts only (no web font).
"""

STYLE = r"""/* Urban Insights map (urbanlib.analysis.insights_map): system fonts only, no web font. */
.urban-insights { position: relative; font: 13px/1.35 system-ui, -apple-system, "Segoe UI", sans-serif; color: #212121;
  border: 1px solid #cfd8dc; border-radius: 4px; background: #fafafa; margin: 0.5em 0 1em; }
.urban-insights .ui-toolbar { display: flex; flex-wrap: wrap; gap: 6px 12px; align-items: center; padding: 6px 8px;
  border-bottom: 1px solid #cfd8dc; }
.urban-insights .ui-toolbar label { display: inline-flex; gap: 4px; align-items: center; }
.urban-insights .ui-layer { max-width: 22em; }
.urban-insights .ui-search { width: 12em; }
.urban-insights .ui-status { color: #b71c1c; }
.urban-insights .ui-body { position: relative; }
.urban-insights .ui-map { height: 620px; background: #263238; }
.urban-insights .ui-legend { position: absolute; left: 8px; bottom: 8px; z-index: 800; background: rgba(255,255,255,0.92);
  padding: 6px 8px; border-radius: 4px; min-width: 170px; max-width: 260px; box-shadow: 0 1px 4px rgba(0,0,0,0.3); }
.urban-insights .ui-legend-title { font-weight: 600; margin-bottom: 3px; }
.urban-insights .ui-bar { height: 12px; border: 1px solid #90a4ae; }
.urban-insights .ui-ticks { display: flex; justify-content: space-between; font-size: 11px; }
.urban-insights .ui-swatch-row { display: flex; gap: 6px; align-items: center; }
.urban-insights .ui-swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #607d8b; }
.urban-insights .ui-panel { position: absolute; top: 8px; right: 8px; bottom: 8px; width: min(340px, 48%); z-index: 900; overflow-y: auto;
  background: #ffffff; border-radius: 4px; padding: 8px 10px; box-shadow: 0 1px 6px rgba(0,0,0,0.35); }
.urban-insights .ui-panel[hidden] { display: none; }
.urban-insights .ui-close { position: absolute; top: 4px; right: 6px; border: none; background: none; font-size: 20px; cursor: pointer; }
.urban-insights .ui-region { margin: 0 0 2px; font-size: 15px; }
.urban-insights .ui-facts { color: #546e7a; font-size: 12px; }
.urban-insights .ui-section h4 { margin: 8px 0 3px; font-size: 12px; text-transform: uppercase; letter-spacing: 0.03em; color: #455a64; }
.urban-insights .ui-tile { width: 160px; height: 160px; image-rendering: pixelated; border: 1px solid #b0bec5; }
.urban-insights .ui-street { height: auto; max-width: 100%; image-rendering: pixelated; border: 1px solid #b0bec5; }
.urban-insights .ui-caption { margin: 0; }
.urban-insights table { border-collapse: collapse; font-size: 12px; }
.urban-insights td, .urban-insights th { padding: 1px 6px 1px 0; text-align: right; border-bottom: 1px solid #eceff1; }
.urban-insights td:first-child, .urban-insights th:first-child { text-align: left; }
.urban-insights .ui-note, .urban-insights .ui-foot { color: #607d8b; font-size: 11px; margin-top: 3px; }
.urban-insights .ui-foot { padding: 4px 8px; border-top: 1px solid #cfd8dc; }
.urban-insights .leaflet-container { font: inherit; }
"""

SCRIPT = r"""/* Urban Insights (UrbanCLIP §4.5): one interactive city map, drawn with the book's vendored Leaflet.
 *
 * The page holds one <script type="application/json"> with the map's data (written by
 * urbanlib.analysis.insights_map); this script reads it and builds the map: the satellite mosaic as
 * the base layer (when the city has tiles), one SVG path per region, a layer switcher, a legend, a
 * search box and a panel opened by clicking a cell. It loads nothing: no tiles, fonts or scripts.
 * window.urbanInsights[<element id>] exposes setLayer / select / search for tests and readers.
 */
(function () {
  "use strict";
  var RAMPS = {
    sequential: ["#440154", "#482878", "#3e4a89", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"],
    diverging: ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"],
    categorical: ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
  };
  var MISSING = "#9e9e9e";

  function hex(c) { return [1, 3, 5].map(function (i) { return parseInt(c.substr(i, 2), 16); }); }
  function toHex(rgb) { return "#" + rgb.map(function (v) { return ("0" + Math.round(v).toString(16)).slice(-2); }).join(""); }
  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, t));
    var x = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
    var a = hex(stops[i]), b = hex(stops[i + 1]);
    return toHex([0, 1, 2].map(function (k) { return a[k] + (b[k] - a[k]) * f; }));
  }
  function colour(layer, v) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return MISSING;
    if (layer.kind === "categorical") return v < 0 ? MISSING : RAMPS.categorical[v % RAMPS.categorical.length];
    var span = layer.vmax - layer.vmin;
    return ramp(RAMPS[layer.kind], span > 0 ? (v - layer.vmin) / span : 0.5);
  }
  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (Number.isInteger(v) && a < 1e6) return String(v);
    if (a >= 1e4) return v.toExponential(2);
    if (a >= 100) return v.toFixed(0);
    if (a >= 1) return v.toFixed(2);
    return v.toPrecision(2);
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function build(root) {
    var D = JSON.parse(root.querySelector("script.ui-data").textContent);
    var id = root.id, N = D.ids.length, current = null, selected = -1, opacity = D.opacity;
    var mapDiv = root.querySelector(".ui-map"), panel = root.querySelector(".ui-panel");
    var legend = root.querySelector(".ui-legend"), status = root.querySelector(".ui-status");
    var select = root.querySelector(".ui-layer"), slider = root.querySelector(".ui-opacity");
    var grid = D.geometry.kind === "grid";
    var map = L.map(mapDiv, {crs: grid ? L.CRS.Simple : L.CRS.EPSG3857, zoomSnap: 0.25, attributionControl: false,
                             minZoom: grid ? -3 : 2, maxZoom: grid ? 8 : 19, renderer: L.svg({padding: 0.2})});
    var cells = [], bounds = L.latLngBounds([]);
    for (var i = 0; i < N; i++) {
      var style = {weight: 0.6, color: "#ffffff", opacity: 0.55, fillOpacity: 0};
      var shape = grid ? L.rectangle([[-(D.geometry.rows[i] + 1), D.geometry.cols[i]], [-D.geometry.rows[i], D.geometry.cols[i] + 1]], style)
                       : L.polygon(D.geometry.polygons[i], style);
      cells.push(shape);
      bounds.extend(shape.getBounds());
    }
    map.fitBounds(bounds, {padding: [8, 8]});  // a view first: Leaflet draws layers only on a map with a view
    // the tile mosaic: one image (rows x cols tiles of tile_px); the panel crops it with CSS
    if (D.mosaic) {
      var sheet = el("style");
      sheet.textContent = "#" + id + " .ui-tile{background-image:url(" + D.mosaic.src + ");background-size:" +
        (D.mosaic.cols * 100) + "% " + (D.mosaic.rows * 100) + "%}";
      root.appendChild(sheet);
      if (D.mosaic.bounds) L.imageOverlay(D.mosaic.src, D.mosaic.bounds, {interactive: false, className: "ui-base"}).addTo(map);
    }
    cells.forEach(function (shape, k) {
      shape.addTo(map);
      shape._path.setAttribute("data-region", D.ids[k]);
      shape._path.classList.add("ui-cell");
      shape.on("click", function () { choose(k, false); });
      shape.bindTooltip(D.ids[k], {sticky: true, direction: "top"});
    });

    var byName = {};
    D.layers.forEach(function (l) { byName[l.name] = l; });
    var groups = {};
    D.layers.forEach(function (l) {
      if (!groups[l.group]) { groups[l.group] = el("optgroup", {label: l.group}); select.appendChild(groups[l.group]); }
      groups[l.group].appendChild(el("option", {value: l.name}, l.name));
    });

    function restyle() {
      for (var i = 0; i < N; i++) {
        var fill = current ? colour(current, current.values[i]) : "#000000";
        cells[i].setStyle({fillColor: fill, fillOpacity: current ? opacity : 0,
                           color: i === selected ? "#ff1744" : "#ffffff", weight: i === selected ? 2.5 : 0.6,
                           opacity: i === selected ? 1 : 0.55});
      }
      if (selected >= 0) cells[selected].bringToFront();
    }
    function drawLegend() {
      legend.innerHTML = "";
      if (!current) { legend.appendChild(el("div", {"class": "ui-legend-title"}, D.mosaic ? "satellite tiles and the region grid" : "the region grid")); return; }
      legend.appendChild(el("div", {"class": "ui-legend-title"}, current.label));
      if (current.kind === "categorical") {
        current.categories.forEach(function (name, k) {
          var row = el("div", {"class": "ui-swatch-row"});
          var sw = el("span", {"class": "ui-swatch"}); sw.style.background = colour(current, k);
          row.appendChild(sw); row.appendChild(el("span", {}, name)); legend.appendChild(row);
        });
      } else {
        var bar = el("div", {"class": "ui-bar"});
        bar.style.background = "linear-gradient(to right," + RAMPS[current.kind].join(",") + ")";
        legend.appendChild(bar);
        var ticks = el("div", {"class": "ui-ticks"});
        [current.vmin, (current.vmin + current.vmax) / 2, current.vmax].forEach(function (v) { ticks.appendChild(el("span", {}, fmt(v))); });
        legend.appendChild(ticks);
      }
      if (current.values.some(function (v) { return v === null || v < 0 && current.kind === "categorical"; })) {
        var row = el("div", {"class": "ui-swatch-row"});
        var sw = el("span", {"class": "ui-swatch"}); sw.style.background = MISSING;
        row.appendChild(sw); row.appendChild(el("span", {}, "no value")); legend.appendChild(row);
      }
    }
    function setLayer(name) {
      if (name && !byName[name]) throw new Error("unknown layer " + JSON.stringify(name) + "; layers: " + Object.keys(byName).join(", "));
      current = name ? byName[name] : null;
      select.value = name || "";
      restyle(); drawLegend();
      root.setAttribute("data-layer", name || "");
    }
    function section(title) { var s = el("div", {"class": "ui-section"}); s.appendChild(el("h4", {}, title)); panel.appendChild(s); return s; }
    function choose(i, fly) {
      selected = i; restyle();
      if (fly && !map.getBounds().contains(cells[i].getBounds())) map.panTo(cells[i].getBounds().getCenter());
      panel.innerHTML = "";
      var close = el("button", {"class": "ui-close", title: "close"}, "×");
      close.onclick = function () { panel.hidden = true; selected = -1; restyle(); root.setAttribute("data-selected", ""); };
      panel.appendChild(close);
      panel.appendChild(el("h3", {"class": "ui-region"}, D.ids[i]));
      var facts = [];
      if (D.names && D.names[i]) facts.push(D.names[i]);
      D.facts.forEach(function (f) { if (f.values[i] !== null && f.values[i] !== "") facts.push(f.name + ": " + f.values[i]); });
      panel.appendChild(el("div", {"class": "ui-facts"}, facts.join(" · ")));
      if (D.mosaic && D.mosaic.has[i]) {
        var s = section("Satellite tile");
        var tile = el("div", {"class": "ui-tile"});
        tile.style.backgroundPosition = (D.mosaic.cols > 1 ? 100 * D.mosaic.col[i] / (D.mosaic.cols - 1) : 0) + "% " +
          (D.mosaic.rows > 1 ? 100 * D.mosaic.row[i] / (D.mosaic.rows - 1) : 0) + "%";
        s.appendChild(tile);
      }
      if (D.street && D.street.src[i]) {
        var sv = section("Street views (" + D.street.count[i] + ")");
        var img = el("img", {"class": "ui-street", src: D.street.src[i], alt: "street views of " + D.ids[i]});
        img.style.width = (D.street.count[i] * D.street.px) + "px";
        sv.appendChild(img);
      }
      D.captions.forEach(function (c) {
        if (c.texts[i]) { var s = section(c.name); s.appendChild(el("p", {"class": "ui-caption"}, c.texts[i])); }
      });
      var t = section("Indicators: truth and each model's prediction");
      var table = el("table", {"class": "ui-indicators"}), head = el("tr");
      ["indicator", "truth"].concat(D.models).forEach(function (h) { head.appendChild(el("th", {}, h)); });
      table.appendChild(head);
      D.indicators.forEach(function (name, k) {
        var tr = el("tr");
        tr.appendChild(el("td", {}, name));
        tr.appendChild(el("td", {}, fmt(D.truth[i][k])));
        D.models.forEach(function (m) { tr.appendChild(el("td", {}, fmt(D.predictions[m][i][k]))); });
        table.appendChild(tr);
      });
      t.appendChild(table);
      if (D.models.length) t.appendChild(el("div", {"class": "ui-note"}, D.prediction_note));
      if (D.poi) {
        var p = section("POIs by category");
        var pt = el("table", {"class": "ui-poi"});
        D.poi.categories.forEach(function (name, k) {
          var tr = el("tr"); tr.appendChild(el("td", {}, name)); tr.appendChild(el("td", {}, fmt(D.poi.counts[i][k]))); pt.appendChild(tr);
        });
        p.appendChild(pt);
      }
      panel.hidden = false;
      root.setAttribute("data-selected", D.ids[i]);
    }
    function search(text) {
      var q = String(text || "").trim().toLowerCase(), hits = [];
      if (!q) { status.textContent = ""; return -1; }
      for (var i = 0; i < N; i++) {
        var rid = String(D.ids[i]).toLowerCase(), name = D.names ? String(D.names[i] || "").toLowerCase() : "";
        if (rid === q || name === q) { hits = [i]; break; }
        if (rid.indexOf(q) >= 0 || (name && name.indexOf(q) >= 0)) hits.push(i);
      }
      if (hits.length === 1) { status.textContent = ""; choose(hits[0], true); return hits[0]; }
      status.textContent = hits.length ? hits.length + " regions match; type more" : "no region matches " + JSON.stringify(text);
      return -1;
    }
    select.addEventListener("change", function () { setLayer(select.value); });
    slider.value = String(opacity);
    slider.addEventListener("input", function () { opacity = parseFloat(slider.value); restyle(); });
    var box = root.querySelector(".ui-search");
    box.addEventListener("keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); search(box.value); } });
    root.querySelector(".ui-go").addEventListener("click", function () { search(box.value); });
    var list = root.querySelector("datalist");
    D.ids.forEach(function (rid, k) { list.appendChild(el("option", {value: rid}, D.names && D.names[k] ? D.names[k] : undefined)); });
    setLayer(D.initial_layer || "");
    window.urbanInsights = window.urbanInsights || {};
    window.urbanInsights[id] = {map: map, setLayer: setLayer, select: choose, search: search,
                                layers: Object.keys(byName), cells: cells, readyMs: performance.now()};
    root.setAttribute("data-ready", "1");
  }

  var roots = document.querySelectorAll(".urban-insights:not([data-ready])");
  for (var k = 0; k < roots.length; k++) {
    try { build(roots[k]); } catch (err) {
      roots[k].setAttribute("data-error", String(err));
      roots[k].querySelector(".ui-status").textContent = "the map failed to build: " + err;
      throw err;
    }
  }
})();
"""
