"""Text-free statistics used to check SynthCity's realism (never a model's score)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from ..stats import morans_i  # noqa: F401  (re-exported: one implementation for all data)


def city_summary(ds, pixel_sample: int = 64) -> pd.DataFrame:
    """Text-free realism statistics of a city, one row per indicator.

    Columns: median, p90, missing share, Moran's I of ln(1+y); plus the mean and std of satellite
    pixel values over the first ``pixel_sample`` tiles (``pix_mean``/``pix_std``, repeated on every
    row). These are the only statistics SynthCity is calibrated against.
    """
    r = ds.regions
    rows = []
    for name in ds.indicators:
        y = r[name].to_numpy(float)
        rows.append({"indicator": name, "median": float(np.nanmedian(y)), "p90": float(np.nanpercentile(y, 90)),
                     "missing": float(np.isnan(y).mean()),
                     "morans_i": morans_i(np.log1p(y), r["row"].to_numpy(), r["col"].to_numpy())})
    paths = list(ds.satellite_paths().to_numpy()[:pixel_sample])
    pix = np.stack([np.asarray(Image.open(p), dtype=float) for p in paths]) if paths else np.zeros((1, 1, 1, 3))
    out = pd.DataFrame(rows)
    out["pix_mean"] = float(pix.mean())
    out["pix_std"] = float(pix.std())
    return out
