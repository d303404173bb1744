"""Region indicators from latent quantities (floor area by use, occupancy, activity, traffic).

Each indicator is a nonlinear, noisy function of the *latent* layout — never of rendered pixels —
so imagery predicts indicators only as far as it shows the land use that drives them. Count
indicators get Poisson / negative-binomial noise, continuous ones multiplicative log-normal noise.
Some regions lack some indicators (spatially clumped missingness, as in real data releases).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from ..dataset import INDICATORS
from .config import POI_CATEGORIES, ZONES, GeneratorParams
from .landuse import BUILDING_COVER, CityLayout, smooth_noise

# POI generation weight of each land use per unit floor area, per category.
POI_WEIGHTS = {
    "food": {"commercial": 3.0, "highrise": 0.8, "lowrise": 0.5, "institutional": 0.3},
    "shopping": {"commercial": 4.0, "highrise": 0.5, "lowrise": 0.3},
    "office": {"commercial": 3.0, "highrise": 0.3, "industrial": 0.3},
    "education": {"institutional": 5.0, "highrise": 0.2, "lowrise": 0.2},
    "leisure": {"park": 0.6, "commercial": 0.6, "water": 0.1},
    "health": {"commercial": 0.5, "highrise": 0.3, "lowrise": 0.2, "institutional": 0.5},
    "hotel": {"commercial": 1.0},
    "transport": {"commercial": 0.4, "industrial": 0.3, "highrise": 0.2},
    "industry": {"industrial": 2.0},
}


def floor_area(layout: CityLayout) -> np.ndarray:
    """Built floor area per class (arbitrary units of region area × floors), shape (n, n, classes)."""
    cover = np.array([BUILDING_COVER.get(z, 0.0) for z in ZONES])
    return layout.fractions * cover * layout.floors


def make_indicators(layout: CityLayout, profile: dict, params: GeneratorParams, seed: int) -> dict[str, np.ndarray]:
    """Sample indicators and POI category counts.

    Args:
        layout: the latent city layout.
        profile: the city profile (economy multipliers).
        params: generator parameters (noise levels, missing rates).
        seed: random seed.

    Returns:
        Dict of (n, n) float arrays: the seven canonical indicators (NaN where missing) and
        ``poi_cat_<name>`` counts.
    """
    rng = np.random.default_rng([seed, 201])
    n = layout.n
    eco = profile["economy"]
    fa = floor_area(layout)
    z = {name: fa[..., ZONES.index(name)] for name in ZONES}
    frac = {name: layout.fractions[..., ZONES.index(name)] for name in ZONES}
    resid = z["highrise"] + 0.8 * z["lowrise"]
    traffic = layout.road_level * (0.3 + layout.urban) + 0.5 * layout.road_level ** 2 / 9
    noise = params.indicator_noise

    def lognoise(name):
        return np.exp(rng.normal(0, noise.get(name, 0.0), size=(n, n)))

    out: dict[str, np.ndarray] = {}
    # residents: residential floor area × occupancy; 1 unit of floor area ≈ 2500 people
    out["population"] = 2500 * eco["population"] * resid * layout.occupancy * lognoise("population") + 5 * frac["farmland"]
    # economic output (million units): jobs in offices, factories, shops, with productivity and agglomeration
    econ = 3.0 * z["commercial"] + 1.2 * z["industrial"] + 0.3 * resid + 0.05 * frac["farmland"]
    out["gdp"] = 40 * eco["gdp"] * econ ** 1.15 * layout.productivity * lognoise("gdp")
    # carbon (kt): industry dominates, then traffic and heating
    out["carbon"] = eco["carbon"] * (6.0 * z["industrial"] ** 0.9 + 1.5 * traffic + 0.8 * resid + 0.4 * z["commercial"]) \
        * lognoise("carbon")
    # night light (DMSP-like, saturates at 63), with blooming into neighbours
    lit = 2.0 * z["commercial"] + 1.0 * resid + 0.8 * z["industrial"] + 0.3 * traffic
    lit = gaussian_filter(lit, 0.8, mode="nearest")
    out["night_light"] = 63 * (1 - np.exp(-0.35 * lit * lognoise("night_light")))
    # POIs: Poisson per category from floor area by use
    poi_total = np.zeros((n, n))
    act = eco.get("activity", 1.0)
    for cat in POI_CATEGORIES:
        lam = sum(w * (z[u] if u in BUILDING_COVER else frac[u]) for u, w in POI_WEIGHTS[cat].items())
        counts = rng.poisson(12 * act * lam).astype(float)
        out[f"poi_cat_{cat}"] = counts
        poi_total += counts
    out["poi_count"] = poi_total
    # comments: visitors' reviews, overdispersed, driven by POIs and popularity
    mean_c = 3.0 * poi_total ** 1.1 * layout.popularity + 0.5
    k = params.comments_dispersion
    out["comments"] = rng.negative_binomial(k, k / (k + mean_c)).astype(float)
    # crime: people and night-time activity, superlinear with density
    mean_crime = 0.002 * out["population"] ** 0.9 + 0.05 * poi_total + 0.3 * traffic
    out["crime"] = rng.poisson(mean_crime).astype(float)

    for name in INDICATORS:
        rate = params.missing_rate.get(name, 0.0)
        if rate > 0:  # clumped missingness: threshold a smooth field at the rate's quantile
            field = smooth_noise(rng, (n, n), max(1.0, n / 16)) + 0.5 * rng.standard_normal((n, n))
            out[name] = np.where(field > np.quantile(field, 1 - rate), np.nan, out[name])
    return out
