"""Experiments of the ``full`` results tier, as (experiment, unit) work items.

An experiment registers a function ``run(config, seed, scale) -> list[row dict]`` and a plan of
units (one config × seed each). ``make results`` runs every unit not yet in ``results/`` (so it can
be stopped and resumed across sessions); ``verify`` re-runs one committed unit and compares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Experiment:
    """A results-tier experiment: how to run one unit, which units to run, how close a re-run must be."""

    name: str
    run: Callable[[dict, int, str], list[dict]]
    plan: Callable[[str], list[tuple[str, dict, int]]]  # scale -> [(unit id, config, seed)]
    rtol: float = 1e-6  # relative tolerance for verify (training runs need looser ones)
    atol: float = 1e-9
    description: str = ""
    meta: dict = field(default_factory=dict)
    verify_in_ci: bool = True  # False for units that train models (minutes each): verified by a slow test
    needs_selection: bool = False  # trains with the chosen learning rates: waits for the selection experiment
    # (config, seed) -> sort key of the unit's group; units of one (seed, city) across experiments run
    # together, so the runs they share are still in the cache (None: the experiment runs before them, alone)
    group: Callable[[dict, int], tuple] | None = None


class NotReady(RuntimeError):
    """A unit whose inputs another unit still has to produce: the runner skips it for now, not fails."""


EXPERIMENTS: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    """Add an experiment to the registry (name must be unique)."""
    if exp.name in EXPERIMENTS and EXPERIMENTS[exp.name] is not exp:
        raise ValueError(f"experiment {exp.name!r} registered twice")
    EXPERIMENTS[exp.name] = exp
    return exp
