"""Satellite tiles drawn from a region's latent land use, plus the scene description of what was drawn.

A tile is split into blocks separated by local streets; each land block gets a land-use class in
proportion to the region's fractions, water comes from the city's fine water mask (so rivers run on
across tiles), and major roads cross the tile by hierarchy. Buildings cast shadows that grow with
their height along the city's sun direction. A per-city sensor model (colour gain, saturation, haze,
noise) makes cross-city transfer a real domain shift.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .config import ZONES

ROOF_COLOURS = {
    "highrise": [("grey", (150, 150, 155)), ("white", (215, 215, 210)), ("blue", (110, 130, 160))],
    "lowrise": [("red", (165, 75, 60)), ("brown", (130, 95, 70)), ("grey", (120, 120, 125)), ("orange", (190, 120, 70))],
    "commercial": [("white", (225, 225, 225)), ("grey", (175, 175, 180)), ("blue", (120, 150, 185))],
    "industrial": [("grey", (165, 170, 170)), ("blue", (95, 125, 165)), ("white", (205, 210, 210))],
    "institutional": [("red", (175, 85, 70)), ("beige", (200, 185, 150))],
}
BUILDING_CLASS = {"highrise": "highrise_building", "lowrise": "house", "commercial": "office_building",
                  "industrial": "warehouse", "institutional": "school_building"}
GROUND = {"highrise": (120, 120, 115), "lowrise": (115, 125, 100), "commercial": (135, 135, 130),
          "industrial": (140, 135, 125), "institutional": (110, 140, 90), "park": (95, 150, 80),
          "forest": (45, 90, 50), "farmland": (170, 160, 100), "water": (50, 90, 130), "bare": (160, 130, 95)}
CROPS = [("green", (110, 160, 70)), ("yellow", (205, 190, 110)), ("brown", (150, 115, 80))]


def _alloc(weights: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Split ``k`` slots among classes in proportion to ``weights`` (largest remainder), shuffled."""
    if k == 0 or weights.sum() <= 0:
        return []
    w = weights / weights.sum() * k
    counts = np.floor(w).astype(int)
    rem = k - counts.sum()
    order = np.argsort(-(w - counts) + 1e-9 * rng.random(len(w)))
    counts[order[:rem]] += 1
    slots = [i for i, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(slots)
    return slots


def _shadow_vec(sensor: dict) -> tuple[float, float]:
    """Unit image-plane direction (dx, dy) in which shadows fall, and length per floor (px at 64 px)."""
    az = np.deg2rad(sensor["sun_azimuth_deg"])
    # sun from azimuth (clockwise from north): shadows point away from it; image y grows southward
    dx, dy = -np.sin(az), np.cos(az)
    per_floor = 0.16 / np.tan(np.deg2rad(sensor["sun_elevation_deg"]))
    return (dx * per_floor, dy * per_floor)


def render_tile(layout, row: int, col: int, px: int, profile: dict, rng: np.random.Generator) -> tuple[Image.Image, list]:
    """Draw the satellite tile of one region.

    Args:
        layout: the city's :class:`~.landuse.CityLayout`.
        row: region row in the grid.
        col: region column in the grid.
        px: tile side in pixels.
        profile: city profile (sensor model).
        rng: this tile's random generator.

    Returns:
        (RGB image of size px × px, list of scene objects
        ``{"cls", "bbox": [x0, y0, x1, y1], "attrs": {...}}`` in pixel coordinates).
    """
    scale = px / 64
    frac = layout.fractions[row, col]
    sensor = profile["sensor"]
    img = Image.new("RGB", (px, px), GROUND["lowrise"])
    draw = ImageDraw.Draw(img)
    objects: list[dict] = []

    # water from the fine mask, upsampled to pixels
    sub = layout.water_mask.shape[0] // layout.n
    wm = layout.water_mask[row * sub:(row + 1) * sub, col * sub:(col + 1) * sub]
    wpx = np.kron(wm, np.ones((-(-px // sub), -(-px // sub)), dtype=bool))[:px, :px]

    nb = 4  # blocks per side
    bs = px / nb
    street_w = max(1, round(1.5 * scale))
    urban_local = layout.road_level[row, col] >= 1
    land_w = frac.copy()
    land_w[ZONES.index("water")] = 0
    block_wet = [wpx[int(i * bs):int((i + 1) * bs), int(j * bs):int((j + 1) * bs)].mean() > 0.5
                 for i in range(nb) for j in range(nb)]
    land_blocks = [b for b in range(nb * nb) if not block_wet[b]]
    classes = _alloc(land_w, len(land_blocks), rng)
    sh = _shadow_vec(sensor)
    counts = {"trees": 0}
    for b, k in zip(land_blocks, classes, strict=False):
        cls = ZONES[k]
        i, j = divmod(b, nb)
        x0, y0 = j * bs, i * bs
        pad = street_w if urban_local else 0
        box = (x0 + pad, y0 + pad, x0 + bs - 1, y0 + bs - 1)
        _draw_block(draw, cls, box, layout.floors[row, col, k], scale, sh, rng, objects, counts)

    if urban_local:  # local street grid between blocks
        for t in range(1, nb):
            p = round(t * bs)
            draw.rectangle((0, p, px - 1, p + street_w - 1), fill=(95, 95, 95))
            draw.rectangle((p, 0, p + street_w - 1, px - 1), fill=(95, 95, 95))
        objects.append({"cls": "street", "bbox": [0, 0, px, px], "attrs": {"count": 2 * (nb - 1), "level": 1}})

    # major / arterial roads through the middle of the tile
    for level, horizontal in ((layout.road_h[row, col], True), (layout.road_v[row, col], False)):
        if level < 2:
            continue
        w = max(2, round((5 if level == 3 else 3) * scale))
        c = px // 2 + int(rng.integers(-px // 8, px // 8 + 1))
        bbox = [0, c - w // 2, px, c - w // 2 + w] if horizontal else [c - w // 2, 0, c - w // 2 + w, px]
        draw.rectangle((bbox[0], bbox[1], bbox[2] - 1, bbox[3] - 1), fill=(70, 70, 72) if level == 3 else (85, 85, 85))
        name = "major_road" if level == 3 else "arterial_road"
        objects.append({"cls": name, "bbox": bbox, "attrs": {"level": int(level),
                                                               "orientation": "horizontal" if horizontal else "vertical"}})
        if level == 3 and w >= 4:
            mid = c
            if horizontal:
                for xx in range(0, px, 6):
                    draw.line((xx, mid, xx + 2, mid), fill=(220, 210, 120))
            else:
                for yy in range(0, px, 6):
                    draw.line((mid, yy, mid, yy + 2), fill=(220, 210, 120))
        n_cars = int(rng.poisson(1.5 * level * (0.5 + layout.urban[row, col]) * scale))
        for _ in range(n_cars):
            t = int(rng.integers(0, px - 3))
            off = int(rng.integers(0, max(w - 1, 1)))
            cb = [t, bbox[1] + off, t + 2, bbox[1] + off + 1] if horizontal else [bbox[0] + off, t, bbox[0] + off + 1, t + 2]
            colour_name, colour = [("white", (235, 235, 235)), ("red", (190, 40, 40)), ("black", (30, 30, 30)),
                                   ("blue", (40, 70, 170))][int(rng.integers(0, 4))]
            draw.rectangle(cb, fill=colour)
            objects.append({"cls": "car", "bbox": [cb[0], cb[1], cb[2] + 1, cb[3] + 1], "attrs": {"colour": colour_name}})

    arr = np.asarray(img).astype(np.float32)
    if wpx.any():
        tex = rng.normal(0, 6, size=(px, px, 1)).astype(np.float32)
        water_rgb = np.array(GROUND["water"], np.float32) + tex
        arr = np.where(wpx[..., None], water_rgb, arr)
        ys, xs = np.nonzero(wpx)
        objects.append({"cls": "water", "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                        "attrs": {"coverage": round(float(wpx.mean()), 2)}})
    return Image.fromarray(_sensor(arr, sensor, rng)), objects


def _sensor(arr: np.ndarray, sensor: dict, rng: np.random.Generator) -> np.ndarray:
    """Apply the city's sensor: saturation, colour gain, haze and pixel noise; returns uint8."""
    grey = arr.mean(-1, keepdims=True)
    arr = grey + sensor.get("saturation", 1.0) * (arr - grey)
    arr = arr * np.asarray(sensor["gain"], np.float32)
    haze = sensor.get("haze", 0.0)
    arr = (1 - haze) * arr + haze * np.asarray(sensor.get("haze_colour", (200, 200, 200)), np.float32)
    arr = arr + rng.normal(0, sensor.get("noise", 3.0), size=arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _draw_block(draw: ImageDraw.ImageDraw, cls: str, box: tuple, floors: float, scale: float, sh: tuple,
                rng: np.random.Generator, objects: list, counts: dict) -> None:
    """Draw one land block of class ``cls`` into ``box`` (x0, y0, x1, y1 inclusive) and record objects."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0 + 1, y1 - y0 + 1
    draw.rectangle(box, fill=GROUND[cls])
    if cls in BUILDING_CLASS:
        n_side = {"highrise": 1, "lowrise": 3, "commercial": 2, "industrial": 1, "institutional": 1}[cls]
        if cls == "highrise" and rng.random() < 0.5:
            n_side = 2
        if cls == "institutional":  # a school: building in one half, sports field with track in the other
            bw = w * 0.4
            _building(draw, cls, (x0 + 1, y0 + 1, x0 + bw, y1 - 1), floors, scale, sh, rng, objects)
            fx0, fx1 = x0 + bw + 1, x1
            draw.rectangle((fx0, y0 + 1, fx1, y1 - 1), fill=(175, 80, 65))
            objects.append({"cls": "running_track", "bbox": [int(fx0), int(y0 + 1), int(fx1) + 1, int(y1)],
                            "attrs": {"colour": "red"}})
            draw.rectangle((fx0 + 1.5 * scale, y0 + 1 + 1.5 * scale, fx1 - 1.5 * scale, y1 - 1 - 1.5 * scale),
                           fill=(80, 150, 70))
            objects.append({"cls": "sports_field", "bbox": [int(fx0 + 1.5 * scale), int(y0 + 1 + 1.5 * scale),
                                                            int(fx1 - 1.5 * scale) + 1, int(y1 - 1 - 1.5 * scale) + 1],
                            "attrs": {"colour": "green"}})
            return
        cw, ch = w / n_side, h / n_side
        fill = {"highrise": 0.75, "lowrise": 0.7, "commercial": 0.8, "industrial": 0.9}[cls]
        for a in range(n_side):
            for b in range(n_side):
                if cls == "lowrise" and rng.random() < 0.15:
                    continue
                bw, bh = cw * fill * rng.uniform(0.7, 1.0), ch * fill * rng.uniform(0.7, 1.0)
                bx, by = x0 + a * cw + (cw - bw) / 2, y0 + b * ch + (ch - bh) / 2
                _building(draw, cls, (bx, by, bx + bw - 1, by + bh - 1), floors * rng.uniform(0.8, 1.2), scale, sh,
                          rng, objects)
        if cls == "commercial" and rng.random() < 0.5:  # parking lot with cars along the block edge
            py0 = y1 - max(2, h * 0.18)
            draw.rectangle((x0, py0, x1, y1), fill=(160, 160, 160))
            objects.append({"cls": "parking_lot", "bbox": [int(x0), int(py0), int(x1) + 1, int(y1) + 1], "attrs": {}})
            for t in range(int(rng.integers(1, 4))):
                cx = x0 + 1 + t * 3
                if cx + 2 <= x1:
                    draw.rectangle((cx, py0 + 0.5, cx + 1, py0 + 1.5), fill=(200, 40, 40))
                    objects.append({"cls": "car", "bbox": [int(cx), int(py0), int(cx) + 2, int(py0) + 2],
                                    "attrs": {"colour": "red"}})
    elif cls == "park":
        objects.append({"cls": "grass", "bbox": [int(x0), int(y0), int(x1) + 1, int(y1) + 1], "attrs": {"colour": "green"}})
        for _ in range(int(rng.integers(1, 5))):
            r = max(1.0, rng.uniform(1.2, 2.2) * scale)
            cx, cy = rng.uniform(x0 + r, max(x1 - r, x0 + r + 0.1)), rng.uniform(y0 + r, max(y1 - r, y0 + r + 0.1))
            draw.ellipse((cx - r + sh[0], cy - r + sh[1], cx + r + sh[0], cy + r + sh[1]), fill=(50, 80, 45))
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(55, 115, 50))
            objects.append({"cls": "tree", "bbox": [int(cx - r), int(cy - r), int(cx + r) + 1, int(cy + r) + 1],
                            "attrs": {"colour": "green"}})
        if rng.random() < 0.5:
            draw.line((x0, (y0 + y1) / 2, x1, (y0 + y1) / 2 + rng.uniform(-2, 2)), fill=(200, 190, 160))
            objects.append({"cls": "footpath", "bbox": [int(x0), int((y0 + y1) / 2) - 2, int(x1) + 1,
                                                        int((y0 + y1) / 2) + 3], "attrs": {}})
    elif cls == "forest":
        r = max(1.0, 1.6 * scale)
        n = 0
        for cy in np.arange(y0 + r, y1, 2 * r * 0.9):
            for cx in np.arange(x0 + r, x1, 2 * r * 0.9):
                jx, jy = rng.uniform(-0.5, 0.5, 2) * r
                shade = int(rng.integers(-15, 16))
                draw.ellipse((cx + jx - r, cy + jy - r, cx + jx + r, cy + jy + r), fill=(40 + shade, 95 + shade, 45 + shade))
                n += 1
        objects.append({"cls": "forest", "bbox": [int(x0), int(y0), int(x1) + 1, int(y1) + 1],
                        "attrs": {"count": n, "colour": "dark green"}})
    elif cls == "farmland":
        name, colour = CROPS[int(rng.integers(0, 3))]
        draw.rectangle(box, fill=colour)
        horizontal = rng.random() < 0.5
        stripe = max(1, round(2 * scale))
        dark = tuple(int(c * 0.8) for c in colour)
        rng_lines = np.arange(y0 if horizontal else x0, (y1 if horizontal else x1) + 1, 2 * stripe)
        for t in rng_lines:
            if horizontal:
                draw.rectangle((x0, t, x1, min(t + stripe - 1, y1)), fill=dark)
            else:
                draw.rectangle((t, y0, min(t + stripe - 1, x1), y1), fill=dark)
        objects.append({"cls": "farmland", "bbox": [int(x0), int(y0), int(x1) + 1, int(y1) + 1],
                        "attrs": {"colour": name, "stripes": "horizontal" if horizontal else "vertical"}})
    elif cls == "bare":
        for _ in range(int(6 * scale * scale) + 2):
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
            draw.point((cx, cy), fill=(185, 155, 115))
        objects.append({"cls": "bare_soil", "bbox": [int(x0), int(y0), int(x1) + 1, int(y1) + 1], "attrs": {"colour": "brown"}})
        if rng.random() < 0.5:  # construction: crane and a foundation pit
            fx, fy = x0 + w * 0.3, y0 + h * 0.3
            draw.rectangle((fx, fy, fx + w * 0.4, fy + h * 0.4), fill=(110, 95, 80))
            objects.append({"cls": "construction_site", "bbox": [int(fx), int(fy), int(fx + w * 0.4) + 1,
                                                                 int(fy + h * 0.4) + 1], "attrs": {}})
            draw.line((x0 + 1, y1 - 1, x1 - 1, y0 + 1), fill=(230, 190, 40), width=1)
            objects.append({"cls": "crane", "bbox": [int(x0), int(y0), int(x1) + 1, int(y1) + 1],
                            "attrs": {"colour": "yellow"}})


def _building(draw: ImageDraw.ImageDraw, cls: str, box: tuple, floors: float, scale: float, sh: tuple,
              rng: np.random.Generator, objects: list) -> None:
    """One building: shadow (length grows with floors) then roof; records the object."""
    x0, y0, x1, y1 = box
    if x1 < x0 or y1 < y0:
        return
    length = floors * scale
    sx, sy = sh[0] * length, sh[1] * length
    draw.rectangle((x0 + sx, y0 + sy, x1 + sx, y1 + sy), fill=(45, 45, 50))
    colour_name, colour = ROOF_COLOURS[cls][int(rng.integers(0, len(ROOF_COLOURS[cls])))]
    draw.rectangle(box, fill=colour)
    if cls in ("commercial", "highrise") and x1 - x0 > 4:  # rooftop equipment
        draw.rectangle((x0 + 1, y0 + 1, x0 + 2, y0 + 2), fill=tuple(int(c * 0.7) for c in colour))
    objects.append({"cls": BUILDING_CLASS[cls], "bbox": [int(x0), int(y0), int(x1) + 1, int(y1) + 1],
                    "attrs": {"colour": colour_name, "floors": int(round(floors)),
                              "shadow_px": round(float(np.hypot(sx, sy)), 1)}})
