"""The ``full`` results tier: tidy CSVs with provenance, resumable runs, re-run verification."""

from .registry import EXPERIMENTS, Experiment, register
from .store import append_rows, read_results

__all__ = ["EXPERIMENTS", "Experiment", "append_rows", "read_results", "register"]
