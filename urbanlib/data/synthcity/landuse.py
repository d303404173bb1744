"""Latent city structure: land-use fractions, water, roads, building heights per region.

Everything here is hidden ground truth. Land use comes from city structure (centres with distance
decay, ring roads, industrial belts, rivers, coasts, hills) plus spatially autocorrelated noise
(Gaussian-smoothed white noise), so neighbouring regions resemble each other as in real cities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from .config import ZONES, GeneratorParams

# Building footprint share of a class's ground area, and floors (min, max) scaled by urban intensity.
BUILDING_COVER = {"highrise": 0.22, "lowrise": 0.5, "commercial": 0.38, "industrial": 0.45, "institutional": 0.18}
FLOORS = {"highrise": (10, 45), "lowrise": (1, 4), "commercial": (3, 30), "industrial": (1, 2), "institutional": (2, 5)}


@dataclass
class CityLayout:
    """Latent per-region arrays of one city; all have shape (n, n) unless noted.

    Attributes:
        fractions: (n, n, len(ZONES)) land-use fractions summing to 1 per region.
        water_mask: (n*S, n*S) boolean water at S sub-samples per region side (for coherent rivers).
        urban: urban intensity in [0, 1] (distance decay from centres plus noise).
        road_h / road_v: level (0 none, 1 local, 2 arterial, 3 major) of a road crossing the
            region horizontally / vertically.
        floors: (n, n, len(ZONES)) mean floors of each class's buildings (0 where no buildings).
        occupancy: residents per unit residential floor area (multiplicative field around 1).
        productivity: output per unit of economic floor area (field around 1).
        popularity: how much a region's activity draws visitors (field around 1).
        hill: terrain height in [0, ~1].
    """

    fractions: np.ndarray
    water_mask: np.ndarray
    urban: np.ndarray
    road_h: np.ndarray
    road_v: np.ndarray
    floors: np.ndarray
    occupancy: np.ndarray
    productivity: np.ndarray
    popularity: np.ndarray
    hill: np.ndarray

    @property
    def n(self) -> int:
        """Regions per side."""
        return self.urban.shape[0]

    @property
    def zone(self) -> np.ndarray:
        """Dominant land-use class name per region, shape (n, n)."""
        return np.array(ZONES, dtype=object)[self.fractions.argmax(-1)]

    @property
    def road_level(self) -> np.ndarray:
        """Highest road level in each region, shape (n, n)."""
        return np.maximum(self.road_h, self.road_v)


def smooth_noise(rng: np.random.Generator, shape: tuple, sigma: float) -> np.ndarray:
    """Spatially autocorrelated noise: white noise blurred by a Gaussian, rescaled to unit variance."""
    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-9)


def _water(profile: dict, m: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean water mask on an (m, m) grid of normalised coordinates (rows south-ward)."""
    y, x = (np.mgrid[0:m, 0:m] + 0.5) / m
    water = np.zeros((m, m), dtype=bool)
    spec = profile["water"]
    for river in spec.get("rivers", []):
        along, across = (y, x) if river["axis"] == "vertical" else (x, y)
        phase = rng.uniform(0, 2 * np.pi)
        line = river["pos"] + river["amplitude"] * np.sin(2 * np.pi * 1.5 * along + phase)
        half = river["width"] / 2
        if river["kind"] == "delta":  # trunk until `split`, then fanning distributaries
            split = river["split"]
            trunk = (np.abs(across - line) < half) & (along < split + 0.02)
            water |= trunk
            for k in range(river["branches"]):
                spread = (k / max(river["branches"] - 1, 1) - 0.5) * 0.7
                t = np.clip((along - split) / (1 - split), 0, None)
                branch = line + spread * t ** 0.8 + 0.02 * np.sin(9 * along + k)
                water |= (np.abs(across - branch) < half * 0.6) & (along >= split)
        else:
            water |= np.abs(across - line) < half
    coast = spec.get("coast")
    if coast:
        phase = rng.uniform(0, 2 * np.pi)
        if coast["side"] in ("south", "north"):
            edge = coast["pos"] + coast["amplitude"] * np.sin(2 * np.pi * 2 * x + phase)
            water |= (y > edge) if coast["side"] == "south" else (y < 1 - edge)
        else:
            edge = coast["pos"] + coast["amplitude"] * np.sin(2 * np.pi * 2 * y + phase)
            water |= (x > edge) if coast["side"] == "east" else (x < 1 - edge)
    spacing = spec.get("canal_spacing", 0)
    if spacing:
        c0 = profile["centres"][0]
        core = np.hypot(y - c0["row"], x - c0["col"]) < 0.38
        width = 0.012
        canal = (np.abs((x % spacing) - spacing / 2) < width / 2) | (np.abs((y % spacing) - spacing / 2) < width / 2)
        water |= canal & core
    for _ in range(spec.get("lakes", 0)):
        cy, cx = rng.uniform(0.15, 0.85, size=2)
        ry, rx = rng.uniform(0.03, 0.06, size=2)
        water |= ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
    return water


def _roads(profile: dict, n: int, urban: np.ndarray, water_frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Road levels crossing each region horizontally and vertically, from the profile's network."""
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n
    h = np.zeros((n, n), dtype=int)
    v = np.zeros((n, n), dtype=int)
    spec = profile["roads"]
    c0 = profile["centres"][0]
    dy, dx = y - c0["row"], x - c0["col"]
    d = np.hypot(dy, dx)
    tol = 0.55 / n
    if spec.get("ring_radius", 0) > 0:
        ring = np.abs(d - spec["ring_radius"]) < tol
        h = np.where(ring & (np.abs(dy) >= np.abs(dx)), 3, h)
        v = np.where(ring & (np.abs(dy) < np.abs(dx)), 3, v)
    for k in range(spec.get("radials", 0)):
        ang = np.pi * 2 * k / spec["radials"] + 0.3
        uy, ux = np.sin(ang), np.cos(ang)
        along = dy * uy + dx * ux
        perp = np.abs(dy * ux - dx * uy)
        on = (along > 0) & (perp < tol)
        if abs(ux) >= abs(uy):
            h = np.where(on, 3, h)
        else:
            v = np.where(on, 3, v)
    for key, level in (("grid_spacing", 2), ("arterial_spacing", 2)):
        s = spec.get(key, 0)
        if s:
            step = max(int(round(s * n)), 2)
            idx = np.arange(n)
            rows = (idx % step) == step // 2
            h[rows, :] = np.maximum(h[rows, :], level)
            v[:, rows] = np.maximum(v[:, rows], level)
    if spec.get("coastal_road") and profile["water"].get("coast"):
        side = profile["water"]["coast"]["side"]
        land = water_frac < 0.5
        # first land cell from the sea along each row/column carries the coastal road
        if side in ("east", "west"):
            for r in range(n):
                cols = np.flatnonzero(land[r]) if side == "east" else np.flatnonzero(land[r])[::-1]
                if len(cols):
                    c = cols[-1] if side == "east" else cols[0]
                    c = max(c - 1, 0) if side == "east" else min(c + 1, n - 1)
                    v[r, c] = 3
        else:
            for c in range(n):
                rows = np.flatnonzero(land[:, c])
                if len(rows):
                    r = rows[-1] if side == "south" else rows[0]
                    h[r, c] = 3
    local = (urban > 0.2).astype(int)
    h = np.maximum(h, local)
    v = np.maximum(v, local)
    wet = water_frac > 0.6
    h[wet] = 0
    v[wet] = 0
    return h, v


def generate_layout(profile: dict, n: int, seed: int, params: GeneratorParams) -> CityLayout:
    """Sample the latent layout of one city.

    Args:
        profile: a city profile dict (see ``profiles/*.json``).
        n: regions per side.
        seed: random seed; the same seed gives the same layout.
        params: generator parameters.

    Returns:
        The :class:`CityLayout` with per-region latent arrays.
    """
    rng = np.random.default_rng([seed, 101])
    sub = max(4, -(-128 // n))  # sub-samples per region side, so rivers stay resolved on small grids
    m = n * sub
    water_mask = _water(profile, m, rng)
    water_frac = water_mask.reshape(n, sub, n, sub).mean(axis=(1, 3))

    sig = params.noise_smooth_cells * n / 32
    noise = [smooth_noise(rng, (n, n), sig) for _ in range(12)]
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n

    urban = np.zeros((n, n))
    core = np.zeros((n, n))
    dist0 = None
    for c in profile["centres"]:
        d = np.hypot(y - c["row"], x - c["col"])
        dist0 = d if dist0 is None else np.minimum(dist0, d)
        urban = np.maximum(urban, c["weight"] * np.exp(-d / (c["radius"] * 2.0)))
        core = np.maximum(core, c["weight"] * np.exp(-((d / (c["radius"] * 0.7)) ** 2)))
    urban = urban * profile.get("urban_extent", 1.0) + 0.12 * noise[0]
    urban = np.clip(urban, 0, 1)

    hills = np.zeros((n, n))
    hs = profile.get("hills", {})
    for _ in range(hs.get("count", 0)):
        cy, cx = rng.uniform(0.1, 0.9, size=2)
        if profile["water"].get("coast", {}) and profile["water"]["coast"]["side"] == "east":
            cx = rng.uniform(0.05, 0.4)  # coastal hills inland
        hills += hs.get("height", 0) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 0.12 ** 2))
    hill = np.clip(hills + 0.15 * noise[1], 0, None)

    road_h, road_v = _roads(profile, n, urban, water_frac)
    road = np.maximum(road_h, road_v)

    belt = profile.get("industrial_belt", {})
    d_c0 = np.hypot(y - profile["centres"][0]["row"], x - profile["centres"][0]["col"])
    ind = -1.0 + 0.6 * noise[5]
    if belt.get("radius", 0) > 0:
        ind = ind + 2.2 * belt["strength"] * np.exp(-(((d_c0 - belt["radius"]) / belt["width"]) ** 2))
    else:
        ind = ind + 0.6 * belt.get("strength", 0)
    near_water = gaussian_filter(water_frac, 1.0) > 0.15
    if belt.get("port"):
        ind = ind + 1.5 * near_water * (urban > 0.25)
    bias = profile.get("highrise_bias", 0.0)
    greenery = profile.get("greenery", 0.3)
    construction = profile.get("construction", 0.2)
    scores = np.stack([
        4.5 * urban - 2.4 + bias + 0.5 * noise[2],  # highrise
        1.0 - 8 * (urban - 0.4) ** 2 + 0.5 * noise[3],  # lowrise
        3.5 * core - 1.4 + 0.35 * road + 0.5 * noise[4],  # commercial
        ind,  # industrial
        -0.7 + 2.0 * urban * (1 - urban) + 0.45 * noise[6],  # institutional
        -1.3 + 2.2 * greenery + 0.8 * np.clip(noise[7], 0, None) + 0.4 * near_water,  # park
        2.4 * (1 - urban) + 2.2 * hill - 2.2 + 0.5 * noise[8],  # forest
        3.0 * (1 - urban) - 1.2 - 2.5 * hill + 0.5 * noise[9],  # farmland
        np.full((n, n), -20.0),  # water is set from the water mask below
        -1.2 + 3.5 * construction * np.exp(-(((urban - 0.35) / 0.15) ** 2)) + 0.6 * noise[10],  # bare
    ], axis=-1)
    cp = profile.get("central_park")
    if cp:
        box = (np.abs(y - cp["row"]) < cp["height"]) & (np.abs(x - cp["col"]) < cp["width"])
        scores[..., ZONES.index("park")] += 4.0 * box
    z = scores / params.zone_temperature
    z = np.exp(z - z.max(-1, keepdims=True))
    land = z / z.sum(-1, keepdims=True)
    fractions = land * (1 - water_frac)[..., None]
    fractions[..., ZONES.index("water")] = water_frac

    floors = np.zeros((n, n, len(ZONES)))
    for cls, (lo, hi) in FLOORS.items():
        k = ZONES.index(cls)
        intensity = core if cls == "commercial" else urban
        f = lo + (hi - lo) * np.clip(intensity + 0.15 * noise[11], 0, 1)
        floors[..., k] = np.round(f, 1)

    occupancy = np.exp(0.25 * noise[1] - 0.1 * noise[4])
    productivity = np.exp(0.3 * noise[5] + 0.2 * noise[2])
    popularity = np.exp(0.35 * noise[7] + 0.3 * noise[9])
    return CityLayout(fractions=fractions, water_mask=water_mask, urban=urban, road_h=road_h, road_v=road_v,
                      floors=floors, occupancy=occupancy, productivity=productivity, popularity=popularity,
                      hill=hill)
