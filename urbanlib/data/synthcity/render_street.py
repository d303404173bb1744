"""Street-view images: a simple one-point perspective view down a street of the region.

Façade heights and types follow the region's land use (drawn by its fractions), trees follow
greenery, vehicles follow road level and urban intensity. Like satellite tiles, every drawn object
is recorded in a scene description for the simulated captioners.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .config import ZONES

FACADES = {  # class -> (scene class, [(colour name, rgb)], window rgb)
    "highrise": ("highrise_facade", [("grey", (150, 155, 165)), ("blue glass", (110, 140, 175))], (200, 220, 235)),
    "lowrise": ("house_facade", [("brick red", (160, 80, 65)), ("beige", (205, 190, 160)), ("white", (225, 225, 220))],
                (70, 80, 95)),
    "commercial": ("shopfront", [("glass", (140, 170, 190)), ("white", (230, 230, 230))], (250, 230, 150)),
    "industrial": ("warehouse_facade", [("grey", (140, 140, 140)), ("blue", (90, 110, 150))], (90, 90, 90)),
    "institutional": ("school_facade", [("yellow", (215, 190, 120)), ("red", (170, 90, 75))], (80, 90, 110)),
}
SKY = {"clear": (135, 185, 235), "overcast": (190, 195, 200), "hazy": (200, 200, 185)}
VEHICLES = [("car", (2.0, 1.0)), ("bus", (3.2, 1.6)), ("truck", (3.0, 1.5))]
COLOURS = [("white", (235, 235, 235)), ("red", (190, 45, 40)), ("black", (35, 35, 35)), ("silver", (170, 175, 180)),
           ("blue", (45, 75, 170))]


def street_view_count(layout, row: int, col: int, max_views: int, rate: float, rng: np.random.Generator,
                      min_views: int = 0) -> int:
    """How many street views a region gets: ``min_views`` plus a Poisson in road level and urbanity, capped.

    Every region gets at least ``min(min_views, max_views)`` views (UrbanLN's data has about 6.5 per
    region, and a table whose models see different regions cannot compare them); regions on larger,
    busier roads get more.
    """
    base = min(min_views, max_views)
    level = layout.road_level[row, col]
    if max_views == 0:
        return 0
    lam = rate * (0.4 + 0.3 * level) * (0.3 + layout.urban[row, col]) if level else 0.0
    return int(min(base + rng.poisson(lam), max_views))


def render_street(layout, row: int, col: int, px: int, profile: dict, rng: np.random.Generator) -> tuple[Image.Image, list]:
    """Draw one street view of a region.

    Args:
        layout: the city's :class:`~.landuse.CityLayout`.
        row: region row in the grid.
        col: region column in the grid.
        px: image side in pixels.
        profile: city profile (haze sets the sky).
        rng: this image's random generator.

    Returns:
        (RGB image px × px, scene objects with pixel bboxes and attributes).
    """
    objects: list[dict] = []
    haze = profile["sensor"].get("haze", 0.0)
    sky_kind = "hazy" if haze > 0.15 else ("overcast" if rng.random() < 0.3 else "clear")
    img = Image.new("RGB", (px, px), SKY[sky_kind])
    draw = ImageDraw.Draw(img)
    horizon = int(px * rng.uniform(0.42, 0.52))
    objects.append({"cls": "sky", "bbox": [0, 0, px, horizon], "attrs": {"colour": sky_kind}})
    vx = px / 2 + rng.uniform(-px * 0.05, px * 0.05)  # vanishing point
    # road: trapezoid to the vanishing point; sidewalks outside it
    draw.polygon([(0, px), (px, px), (vx + 1, horizon), (vx - 1, horizon)], fill=(150, 145, 135))
    draw.polygon([(px * 0.22, px), (px * 0.78, px), (vx + 0.5, horizon), (vx - 0.5, horizon)], fill=(85, 85, 88))
    objects.append({"cls": "road", "bbox": [int(px * 0.22), horizon, int(px * 0.78), px],
                    "attrs": {"level": int(layout.road_level[row, col])}})
    objects.append({"cls": "sidewalk", "bbox": [0, horizon, px, px], "attrs": {}})
    for t in np.linspace(0.1, 0.9, 5):
        y = horizon + (px - horizon) * t
        draw.line((vx, y, vx, y + (px - horizon) * 0.05), fill=(230, 225, 200))
    if layout.road_level[row, col] >= 2:
        objects.append({"cls": "lane_marking", "bbox": [int(vx) - 1, horizon, int(vx) + 2, px], "attrs": {"colour": "white"}})

    frac = layout.fractions[row, col].copy()
    frac[ZONES.index("water")] = 0
    built = np.array([frac[ZONES.index(c)] for c in FACADES])
    green = frac[ZONES.index("park")] + frac[ZONES.index("forest")] + 0.5 * frac[ZONES.index("farmland")]
    # façades on both sides: slabs from the image edge towards the vanishing point
    for side in (-1, 1):
        n_slabs = 3
        edge = 0 if side < 0 else px
        for s in range(n_slabs):
            if built.sum() < 0.15 or rng.random() > built.sum() + 0.2:
                continue
            cls = list(FACADES)[int(rng.choice(len(FACADES), p=built / built.sum()))]
            k = ZONES.index(cls)
            floors = max(1, layout.floors[row, col, k] * rng.uniform(0.8, 1.2))
            name, colours, window = FACADES[cls]
            colour_name, colour = colours[int(rng.integers(0, len(colours)))]
            depth0, depth1 = s / n_slabs, (s + 1) / n_slabs  # 0 = near, 1 = vanishing point
            xa = edge + (vx - edge) * (depth0 * 0.8)
            xb = edge + (vx - edge) * (depth1 * 0.8)
            near_h = min(horizon * 0.98, px * 0.1 * floors ** 0.8) * (1 - depth0 * 0.7)
            top = max(0, horizon - near_h)
            xl, xr = sorted((xa, xb))
            draw.rectangle((xl, top, xr, horizon + (px - horizon) * 0.5 * (1 - depth0)), fill=colour)
            for wy in np.arange(top + 2, horizon - 1, max(2, px * 0.06)):
                for wx in np.arange(xl + 1, xr - 1, max(2, px * 0.06)):
                    draw.point((wx, wy), fill=window)
            objects.append({"cls": name, "bbox": [int(xl), int(top), int(xr) + 1, int(horizon + (px - horizon) * 0.5 * (1 - depth0)) + 1],
                            "attrs": {"colour": colour_name, "floors": int(round(floors)), "side": "left" if side < 0 else "right"}})
            if cls == "commercial":
                sign = ("red", (200, 50, 50)) if rng.random() < 0.5 else ("green", (50, 150, 70))
                draw.rectangle((xl, horizon - 3, xr, horizon - 1), fill=sign[1])
                objects.append({"cls": "shop_sign", "bbox": [int(xl), horizon - 3, int(xr) + 1, horizon],
                                "attrs": {"colour": sign[0]}})
            if cls in ("industrial", "institutional"):
                draw.line((xl, horizon + 2, xr, horizon + 2), fill=(60, 60, 60))
                objects.append({"cls": "fence", "bbox": [int(xl), horizon, int(xr) + 1, horizon + 4], "attrs": {}})
    n_trees = int(rng.poisson(4 * green + 0.5))
    for _ in range(n_trees):
        side = -1 if rng.random() < 0.5 else 1
        d = rng.uniform(0, 0.8)
        x = (0 if side < 0 else px) + (vx - (0 if side < 0 else px)) * d * 0.9
        size = px * 0.12 * (1 - d * 0.8)
        base = horizon + (px - horizon) * 0.2 * (1 - d)
        draw.line((x, base, x, base - size), fill=(90, 65, 40))
        draw.ellipse((x - size / 2, base - size * 1.6, x + size / 2, base - size * 0.6), fill=(60, 130, 55))
        objects.append({"cls": "tree", "bbox": [int(x - size / 2), int(base - size * 1.6), int(x + size / 2) + 1, int(base) + 1],
                        "attrs": {"colour": "green"}})
    traffic = layout.road_level[row, col] * (0.3 + layout.urban[row, col])
    for _ in range(int(min(rng.poisson(1.5 * traffic), 6))):
        kind_i = int(rng.choice(3, p=[0.8, 0.1, 0.1] if layout.fractions[row, col, ZONES.index("industrial")] < 0.3
                                else [0.5, 0.1, 0.4]))
        kind, (wf, hf) = VEHICLES[kind_i]
        d = rng.uniform(0.05, 0.8)
        y = px - (px - horizon) * d
        lane = rng.uniform(-0.3, 0.3) * (1 - d)
        x = vx + lane * px
        s = px * 0.07 * (1 - d * 0.85)
        colour_name, colour = COLOURS[int(rng.integers(0, len(COLOURS)))]
        box = (x - s * wf / 2, y - s * hf, x + s * wf / 2, y)
        draw.rectangle(box, fill=colour)
        objects.append({"cls": kind, "bbox": [int(box[0]), int(box[1]), int(box[2]) + 1, int(box[3]) + 1],
                        "attrs": {"colour": colour_name}})
    arr = np.asarray(img).astype(np.float32)
    arr = (1 - haze * 0.5) * arr + haze * 0.5 * 200 + rng.normal(0, 2.0, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), objects
