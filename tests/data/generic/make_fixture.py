"""Write a tiny fake city in the generic layout (fixed seed): table + images/ + captions.jsonl + street points.

Usage: ``python tests/data/generic/make_fixture.py OUT_DIR [csv|parquet]`` or ``make(out_dir)``.

Contents (tests rely on these numbers):
* 12 regions "sh-00".."sh-11" of "Shanghai" on a 3 x 4 grid (ROWS x COLS), cell 0.01 deg, centres
  at lon 121.40 + 0.01 * col, lat 31.20 + 0.01 * (ROWS - 1 - row); table columns are NOT canonical
  (``id``, ``pop``, ``gdp_m``, ``x``, ``y``, ``r``, ``c``) and need COLUMNS to map them;
* images/{id}.png 64x64 RGB for all but MISSING_IMAGE;
* captions.jsonl: one caption per region except NO_CAPTION;
* street_points.csv: STREET_INSIDE points inside known cells (expected region in STREET_TRUTH)
  and 1 point far outside the grid; their images are images/street/{k}.jpg.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

CITY = "Shanghai"
ROWS, COLS = 3, 4
CELL = 0.01
COLUMNS = {"id": "region_id", "pop": "population", "gdp_m": "gdp", "x": "lon", "y": "lat", "r": "row", "c": "col"}
MISSING_IMAGE = "sh-05"
NO_CAPTION = "sh-07"
# (lon, lat) of street photos and the region each must land in; offsets stay inside half a cell
STREET_TRUTH = [((121.40 + 0.004, 31.22 - 0.003), "sh-00"), ((121.43 - 0.0049, 31.20 + 0.0049), "sh-11"),
                ((121.41 + 0.0001, 31.21), "sh-05"), ((121.42, 31.21 - 0.0045), "sh-06")]
STREET_INSIDE = len(STREET_TRUTH)
STREET_OUTSIDE = (122.0, 30.0)


def region_id(row: int, col: int) -> str:
    """Id of the region at a grid position."""
    return f"sh-{row * COLS + col:02d}"


def make(out_dir, seed: int = 0, fmt: str = "csv") -> Path:
    """Write the fixture under ``out_dir`` and return it."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    (out / "images" / "street").mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(ROWS):
        for c in range(COLS):
            rid = region_id(r, c)
            rows.append({"id": rid, "pop": float(np.round(rng.lognormal(8, 1), 1)),
                         "gdp_m": float(np.round(rng.uniform(1, 500), 2)), "x": round(121.40 + CELL * c, 6),
                         "y": round(31.20 + CELL * (ROWS - 1 - r), 6), "r": r, "c": c, "landuse": "mixed"})
            if rid != MISSING_IMAGE:
                px = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
                Image.fromarray(px, "RGB").save(out / "images" / f"{rid}.png")
    table = pd.DataFrame(rows)
    if fmt == "parquet":
        table.to_parquet(out / "indicators.parquet", index=False)
    else:
        table.to_csv(out / "indicators.csv", index=False)
    with (out / "captions.jsonl").open("w") as f:
        for row in rows:
            if row["id"] != NO_CAPTION:
                f.write(json.dumps({"region_id": row["id"], "text": f"A block of {row['landuse']} use."}) + "\n")
    points = [*(p for p, _ in STREET_TRUTH), STREET_OUTSIDE]
    for k in range(len(points)):
        px = rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
        Image.fromarray(px, "RGB").save(out / "images" / "street" / f"{k}.jpg")
    pd.DataFrame({"path": [f"street/{k}.jpg" for k in range(len(points))], "lon": [p[0] for p in points],
                  "lat": [p[1] for p in points]}).to_csv(out / "street_points.csv", index=False)
    return out


if __name__ == "__main__":
    print(make(sys.argv[1] if len(sys.argv) > 1 else "generic_fixture", fmt=sys.argv[2] if len(sys.argv) > 2 else "csv"))
