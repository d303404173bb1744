"""urbanlib: UrbanCLIP and UrbanLN, re-implemented as a reproducible paper book."""

__version__ = "0.1.0"

import warnings as _warnings

# tqdm.auto warns once per kernel when ipywidgets is absent and falls back to text bars, which is
# what the static book wants; keep the warning out of every rendered page.
_warnings.filterwarnings("ignore", message="IProgress not found")
