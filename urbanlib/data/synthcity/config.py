"""Frozen generator parameters: everything that shapes a SynthCity city, versioned.

All numbers that influence generated data (noise levels, missing rates, captioner error models,
the shared-blind-spot correlation ``rho``) live here, fixed *before* any model result is seen.
Changing any of them must bump :data:`GENERATOR_VERSION`; the cache key includes both the version
and the parameters, so stale caches are never reused. Realism is calibrated only against text-free
statistics (indicator distributions, Moran's I, pixel statistics), never against a model's score.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import resources

from ..report import DataError

GENERATOR_VERSION = "synthcity-1.2.0"  # 1.2.0: every region >= 4 street views; 1.1.0: Poisson only; 1.0.0: dev builds

# Latent land-use classes (hidden ground truth; never model input).
ZONES = [
    "highrise",  # residential high-rise
    "lowrise",  # dense low-rise housing
    "commercial",  # commercial / office
    "industrial",  # industrial / warehouse
    "institutional",  # schools etc. with sports fields
    "park",
    "forest",
    "farmland",
    "water",
    "bare",  # construction site / bare soil
]

# POI categories (``poi_cat_<name>`` columns) and how strongly each land use generates them.
POI_CATEGORIES = ["food", "shopping", "office", "education", "leisure", "health", "hotel", "transport", "industry"]


@dataclass(frozen=True)
class CaptionerProfile:
    """A simulated MLLM captioner: its style and its error model.

    Rates are per statement (omission, wrong quantity) or per caption (hallucinations, filler are
    drawn as Poisson counts with these means).
    """

    name: str
    omission_rate: float = 0.25  # probability a true fact is left out
    hallucination_mean: float = 1.0  # mean hallucinated statements per long caption
    wrong_quantity_rate: float = 0.2  # probability a count is misstated
    filler_mean: float = 1.5  # mean generic filler sentences per long caption
    verbosity: float = 1.0  # scales long-caption target length
    style: str = "plain"  # template family: plain | descriptive | terse | enumerative


@dataclass(frozen=True)
class GeneratorParams:
    """Every tunable of the generator; part of the cache key and of meta.json."""

    # spatial structure
    noise_smooth_cells: float = 2.0  # Gaussian sigma (cells) of the autocorrelated latent noise fields
    zone_temperature: float = 0.35  # softmax temperature turning class scores into fractions
    # indicators: multiplicative log-normal noise sigma per indicator (region-level, i.i.d.)
    indicator_noise: dict = field(default_factory=lambda: {
        "population": 0.25, "gdp": 0.35, "carbon": 0.3, "night_light": 0.15,
        "poi_count": 0.0, "comments": 0.0, "crime": 0.0})  # count indicators get Poisson/NB noise instead
    comments_dispersion: float = 1.5  # negative-binomial shape of comment counts (smaller = noisier)
    # fraction of regions missing each indicator (UrbanLN Table 5 has gaps); missingness is spatially clumped
    missing_rate: dict = field(default_factory=lambda: {
        "population": 0.03, "gdp": 0.08, "carbon": 0.05, "night_light": 0.0,
        "poi_count": 0.0, "comments": 0.15, "crime": 0.25})
    street_view_rate: float = 1.6  # mean extra street views per region with roads (capped by Scale.max_street_views)
    street_views_min: int = 4  # street views every region gets (1.2.0; before, 35% of regions had none)
    # captions
    rho: float = 0.5  # correlation of captioners' hallucinations/omissions (shared blind spots), 0..1
    captioners: tuple = (
        CaptionerProfile("sim-llava", omission_rate=0.25, hallucination_mean=1.2, wrong_quantity_rate=0.25,
                         filler_mean=2.0, verbosity=1.0, style="plain"),
        CaptionerProfile("sim-qwen", omission_rate=0.15, hallucination_mean=0.6, wrong_quantity_rate=0.15,
                         filler_mean=1.0, verbosity=1.2, style="descriptive"),
        CaptionerProfile("sim-internvl", omission_rate=0.2, hallucination_mean=0.8, wrong_quantity_rate=0.2,
                         filler_mean=1.0, verbosity=0.9, style="enumerative"),
        CaptionerProfile("sim-llama-adapter", omission_rate=0.35, hallucination_mean=1.6, wrong_quantity_rate=0.35,
                         filler_mean=2.5, verbosity=0.8, style="terse"),
    )
    short_sentences: tuple = (3, 5)  # UrbanCLIP-style: sentences per short caption (min, max)
    long_words: tuple = (110, 240)  # UrbanLN-style: target words per long caption (min, max), hard cap 250

    def to_dict(self) -> dict:
        """Plain JSON-able dict (for meta.json and the cache key)."""
        return json.loads(json.dumps(asdict(self)))


DEFAULT_PARAMS = GeneratorParams()


def list_profiles() -> list[str]:
    """Names of the city profiles shipped with the package (``profiles/*.json``)."""
    folder = resources.files(__package__) / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_profile(name: str) -> dict:
    """Load a city profile by name; raises a clear error for unknown names or bad JSON."""
    names = list_profiles()
    if name not in names:
        raise KeyError(f"unknown SynthCity profile {name!r}; choose one of {names}")
    path = resources.files(__package__) / "profiles" / f"{name}.json"
    try:
        prof = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e})") from None
    for key in ("name", "centres", "water", "roads", "sensor", "economy"):
        if key not in prof:
            raise DataError(f"{path}: missing field {key!r}")
    return prof


def cache_key(profile: dict, scale: dict, seed: int, params: GeneratorParams) -> str:
    """Content address of one city: hash of version, profile, scale, seed and parameters.

    Not :func:`urbanlib.cache.stable_hash`: that one writes compact JSON (``","`` and ``":"``, no
    spaces), this one ``json.dumps``' default separators, so switching would rename every cached city.
    """
    blob = json.dumps({"version": GENERATOR_VERSION, "profile": profile, "scale": scale, "seed": int(seed),
                       "params": params.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
