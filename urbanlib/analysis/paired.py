"""Paired statistics over units: the t interval and test, the minimum detectable effect, Benjamini-Hochberg.

A **unit** is what two quantities are paired on: one city and one pretraining seed (both numbers come
from runs that share that city's data, split and initialisation seed). Everything here works on the
per-unit differences ``d_i = a_i - b_i``.

- Interval and test: Student's t on the differences (what ``scipy.stats.ttest_rel`` computes):
  ``mean(d) ± t_{1-α/2, n-1} · sd(d)/√n`` and ``t = mean(d) / (sd(d)/√n)``.
- Minimum detectable effect (MDE): the true mean difference that a two-sided paired t-test at level
  ``alpha`` over ``n`` units with difference sd ``sd`` rejects with probability ``power``. It solves
  ``P(|T'| > t_{1-α/2, n-1}) = power`` where ``T'`` is noncentral t with ``n - 1`` degrees of freedom
  and noncentrality ``MDE·√n/sd`` (exact for normal differences; ``sd`` is the observed one, so the
  MDE is itself an estimate). For large n it approaches ``(z_{1-α/2} + z_{power}) · sd/√n``.
- Benjamini-Hochberg: step-up adjusted p-values across a family (here: the claims).

The units of one city are not independent draws of the city (they share its data), so the test is
about these five generated cities, not about cities at large; a city-level effect that varies between
cities shows up as a larger sd of the differences, not as a bias.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import optimize, stats

__all__ = ["bh_adjust", "mde", "mde_standardised", "pair_values", "paired_test"]


def pair_values(a, b) -> tuple[np.ndarray, np.ndarray, list]:
    """Align per-unit values: mappings/Series pair on their keys, sequences by position; NaN pairs dropped."""
    if isinstance(a, Mapping | pd.Series) or isinstance(b, Mapping | pd.Series):
        if not (isinstance(a, Mapping | pd.Series) and isinstance(b, Mapping | pd.Series)):
            raise TypeError("a and b must both be keyed by unit, or both be sequences")
        a, b = dict(a), dict(b)
        keys = [k for k in a if k in b]
        av = np.array([a[k] for k in keys], dtype=float)
        bv = np.array([b[k] for k in keys], dtype=float)
    else:
        av, bv = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
        if len(av) != len(bv):
            raise ValueError(f"paired values need equal lengths, got {len(av)} and {len(bv)}")
        keys = list(range(len(av)))
    ok = np.isfinite(av) & np.isfinite(bv)
    return av[ok], bv[ok], [k for k, keep in zip(keys, ok, strict=True) if keep]


@lru_cache(maxsize=256)
def mde_standardised(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The MDE in units of the differences' sd (Cohen's d_z) for a two-sided paired t-test over n units."""
    if n < 2:
        return math.nan
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def short(d):  # power at standardised effect d, minus the target
        ncp = d * math.sqrt(n)
        wrong_side = stats.nct.cdf(-crit, df, ncp)  # rejections on the other side: tiny, NaN when it underflows
        return stats.nct.sf(crit, df, ncp) + (wrong_side if math.isfinite(wrong_side) else 0.0) - power

    hi = 1.0
    while short(hi) < 0:  # widen the bracket (nct loses accuracy far beyond what any n needs)
        hi *= 2
    return float(optimize.brentq(short, 1e-9, hi, xtol=1e-10))


def mde(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable mean difference, in the units of the differences (e.g. ΔR²)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return float(sd * mde_standardised(int(n), alpha, power))


def paired_test(a, b, level: float = 0.95, alpha: float | None = None, power: float = 0.8) -> dict:
    """Paired t interval, test and MDE of a - b over units.

    Args:
        a: per-unit values of quantity a: a mapping unit -> value (paired on keys) or a sequence
            (paired by position).
        b: the same for quantity b.
        level: confidence level of the interval.
        alpha: level of the test and of the MDE (default ``1 - level``, so the interval and the
            test agree: p < alpha exactly when the interval excludes 0).
        power: power at which the MDE is computed.

    Returns:
        dict: ``n`` (units), ``units``, ``mean_diff``, ``sd_diff``, ``ci_low``, ``ci_high``,
        ``t``, ``p`` (two-sided), ``mde`` (absolute units), ``mean_b``. Fewer than 2 units: NaN
        statistics (``mean_diff`` still given for one).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    alpha = 1 - level if alpha is None else alpha
    av, bv, units = pair_values(a, b)
    d = av - bv
    n = len(d)
    out = {"n": n, "units": units, "mean_diff": float(d.mean()) if n else math.nan, "sd_diff": math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "t": math.nan, "p": math.nan, "mde": math.nan,
           "mean_b": float(bv.mean()) if n else math.nan, "level": level}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = stats.t.ppf((1 + level) / 2, df=n - 1) * se
    if se > 0:
        t = out["mean_diff"] / se
        p = float(2 * stats.t.sf(abs(t), df=n - 1))
    else:  # identical differences: no spread to test against
        t = math.copysign(math.inf, out["mean_diff"]) if out["mean_diff"] else math.nan
        p = 0.0 if out["mean_diff"] else 1.0
    out.update(sd_diff=sd, ci_low=out["mean_diff"] - half, ci_high=out["mean_diff"] + half, t=t, p=p,
               mde=mde(sd, n, alpha, power))
    return out


def bh_adjust(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (NaN entries stay NaN and do not count in the family).

    ``q_(i) = min_{j ≥ i} m · p_(j) / j`` over the m finite p-values sorted ascending, capped at 1.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if not m:
        return out
    order = np.argsort(p[ok], kind="mergesort")
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(q, 1.0)
    out[ok] = adjusted
    return out
