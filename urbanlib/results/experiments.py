"""The experiments of the ``full`` results tier (each registers itself on import)."""
