"""urbanlib: UrbanCLIP and UrbanLN, re-implemented as a reproducible paper book."""

__version__ = "0.1.0"
