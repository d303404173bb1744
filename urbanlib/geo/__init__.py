"""Bring your own city: raw geodata (rasters, imagery, POIs, street views) -> urbanlib's canonical format.

Needs the ``geo`` extra (``pip install 'urbanlib[geo]'``). Entry points: :func:`build_city` and the
command ``python -m urbanlib.city build config.yml``; the config is described in
:mod:`urbanlib.geo.config`.
"""

from .build import build_city
from .config import CityConfig, from_dict, load_config

__all__ = ["CityConfig", "build_city", "from_dict", "load_config"]
