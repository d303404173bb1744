"""Write a tiny fake city in EXACTLY the UrbanCLIP release layout (fixed seed, ~12 regions).

Usage: ``python tests/data/urbanclip/make_fixture.py OUT_DIR`` or ``make(out_dir)`` from a test.

What it contains (tests rely on these numbers):
* 12 regions of "Beijing" on a 4 x 3 grid of Baidu zoom-16 tiles (x 12659..12662, y 4736..4738);
* images/Beijing/16_x_y_s.jpg, 256x256 RGB JPEG, for all but MISSING_IMAGES (2 regions);
* captions/Beijing_captions.json with 3 sentences per image, none for NO_CAPTION (1 region);
* labels/Beijing.csv with GDP capped at 10000.0 in CAPPED_GDP (3 rows) and carbon 0 in ZERO_CARBON (1 row).
Nothing here is real data: values are random, images are noise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CITY = "Beijing"
XS = range(12659, 12663)
YS = range(4736, 4739)
MISSING_IMAGES = [(12660, 4737), (12662, 4736)]
NO_CAPTION = [(12661, 4738)]
CAPPED_GDP = [(12659, 4736), (12661, 4737), (12662, 4738)]
ZERO_CARBON = [(12660, 4736)]
N_REGIONS = len(XS) * len(YS)
GDP_CAP = 10000.0


def image_name(x: int, y: int, city: str = CITY) -> str:
    """The release's image name for a tile, e.g. ``Beijing/16_12659_4738_s.jpg``."""
    return f"{city}/16_{x}_{y}_s.jpg"


def make(out_dir, seed: int = 0, city: str = CITY, image_size: int = 256, xs=XS, ys=YS) -> Path:
    """Write the fixture under ``out_dir`` and return it (``xs``/``ys``: a larger grid of tiles, if wanted)."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "captions").mkdir(parents=True, exist_ok=True)
    (out / "images" / city).mkdir(parents=True, exist_ok=True)
    lines = ['"",satellite_img_name,BD09 coordinate,WGS84 coordinate,carbon_emissions (ton),population (unit),'
             'gdp (million yuan)']
    captions = []
    for i, (x, y) in enumerate((x, y) for y in ys for x in xs):
        name = image_name(x, y, city)
        lat = 39.80 + (y - ys[0]) * 0.0071 + rng.normal(0, 1e-5)  # SW corner, WGS84
        lon = 116.40 + (x - xs[0]) * 0.0092 + rng.normal(0, 1e-5)
        carbon = 0.0 if (x, y) in ZERO_CARBON else float(np.round(rng.lognormal(8, 1), 3))
        pop = float(np.round(rng.lognormal(9, 1), 2))
        gdp = GDP_CAP if (x, y) in CAPPED_GDP else float(np.round(rng.uniform(10, 9000), 3))
        lines.append(f'{i},{name},"({x},{y})","({lat:.6f}, {lon:.6f})",{carbon},{pop},{gdp}')
        if (x, y) not in MISSING_IMAGES:
            pixels = rng.integers(0, 256, size=(image_size, image_size, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(out / "images" / name, quality=70)
        if (x, y) not in NO_CAPTION:
            captions.append([{"caption": f"Sentence {k} about tile {x} {y}: roads and buildings.", "image": name}
                             for k in range(3)])
    (out / "labels" / f"{city}.csv").write_text("\n".join(lines) + "\n")
    (out / "captions" / f"{city}_captions.json").write_text(json.dumps(captions))
    return out


if __name__ == "__main__":
    print(make(sys.argv[1] if len(sys.argv) > 1 else "urbanclip_fixture"))
