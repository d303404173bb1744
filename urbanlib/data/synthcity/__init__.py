"""SynthCity: a procedural, seeded city generator — urbanlib's embedded offline benchmark.

``build(profile, scale, seed)`` writes a city in urbanlib's canonical format (cached by generator
version and parameters); ``load_city`` returns it as an :class:`~urbanlib.data.UrbanDataset`.
"""

from .build import PROFILES, build, city_dir, default_cache_dir, load_city, read_scenes
from .config import DEFAULT_PARAMS, GENERATOR_VERSION, POI_CATEGORIES, ZONES, GeneratorParams, load_profile
from .stats import morans_i

__all__ = ["DEFAULT_PARAMS", "GENERATOR_VERSION", "POI_CATEGORIES", "PROFILES", "ZONES", "GeneratorParams", "build",
           "city_dir", "default_cache_dir", "load_city", "load_profile", "morans_i", "read_scenes"]
