"""The verdict table: every claim of the register, tested on paired pretraining seeds (issue 8).

A directional claim "a > b" (or "a < b") is tested on the per-seed differences d_s = a_s - b_s,
one per pretraining seed, paired because both quantities come from runs sharing that seed's data
split and initialisation. The Student-t interval ``mean(d) ± t_{(1+level)/2, n-1} · sd(d)/√n``
decides:

- **supported**: the interval excludes 0 on the claimed side;
- **contradicted**: it excludes 0 on the opposite side;
- **not supported**: it contains 0;
- **not testable here**: fewer than 3 seeds, no measurement, or a claim that is not a two-quantity
  comparison (the reason is stated).

A claim that decomposes into several comparisons ("best among all baselines", "a > b > c") is
given one measurement row per comparison, each with its own direction; it is supported only if
every comparison is (an intersection-union test, so no multiplicity correction is needed), and
contradicted if any comparison is. Every claim of the register appears in the table, whatever
its verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "MIN_SEEDS",
    "NEEDS_SEEDS",
    "VERDICTS",
    "paired_difference_ci",
    "verdict",
    "verdict_table",
]

MIN_SEEDS = 3
NEEDS_SEEDS = f"not testable here: needs ≥{MIN_SEEDS} pretraining seeds (full tier)"
VERDICTS = ("supported", "not supported", "contradicted", "not testable here")
TABLE_COLUMNS = ["claim_id", "paper", "section", "claim", "direction", "paper_value", "verdict", "n_seeds",
                 "mean_diff", "ci_low", "ci_high", "relative_diff_pct", "reason", "comparisons"]


def _direction(direction: str) -> str:
    """Normalise a register direction to ``"a>b"`` / ``"a<b"``; anything else raises ValueError."""
    d = str(direction).replace(" ", "")
    if d.startswith("a>b") and not d.startswith("a>b>"):
        return "a>b"
    if d.startswith("a<b") and not d.startswith("a<b<"):
        return "a<b"
    raise ValueError(f"direction {direction!r} is not a two-quantity comparison ('a>b' or 'a<b')")


def _pair(a, b) -> tuple[np.ndarray, np.ndarray, list]:
    """Align per-seed values: mappings/Series pair on seed keys, sequences by position; NaN pairs dropped."""
    if isinstance(a, Mapping | pd.Series) or isinstance(b, Mapping | pd.Series):
        if not (isinstance(a, Mapping | pd.Series) and isinstance(b, Mapping | pd.Series)):
            raise TypeError("a_by_seed and b_by_seed must both be keyed by seed, or both be sequences")
        a, b = pd.Series(a, dtype=float), pd.Series(b, dtype=float)
        seeds = [s for s in a.index if s in b.index]
        av, bv = a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy()
    else:
        av, bv = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
        if len(av) != len(bv):
            raise ValueError(f"paired values need equal lengths, got {len(av)} and {len(bv)}")
        seeds = list(range(len(av)))
    ok = np.isfinite(av) & np.isfinite(bv)
    return av[ok], bv[ok], [s for s, k in zip(seeds, ok, strict=True) if k]


def paired_difference_ci(a_by_seed, b_by_seed, direction: str = "a>b", level: float = 0.95) -> dict:
    """Mean paired difference a - b over pretraining seeds with a Student-t confidence interval.

    Args:
        a_by_seed: per-seed values of quantity a: a mapping/Series seed -> value (paired on
            seeds) or a sequence (paired by position).
        b_by_seed: the same for quantity b.
        direction: the claim's direction (``"a>b"`` or ``"a<b"``, register spellings such as
            ``"a>b (36/36)"`` accepted); recorded, and used by :func:`verdict`.
        level: confidence level.

    Returns:
        dict: ``n_seeds``, ``seeds``, ``mean_diff`` (a - b), ``sd_diff``, ``ci_low``,
        ``ci_high``, ``level``, ``relative_diff_pct`` (100 · mean(a - b) / |mean(b)|),
        ``direction``, ``testable`` and ``reason`` (:data:`NEEDS_SEEDS` with fewer than 3 seeds;
        the CI is then NaN but the mean difference is still given).
    """
    direction = _direction(direction)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    a, b, seeds = _pair(a_by_seed, b_by_seed)
    d = a - b
    n = len(d)
    out = {"n_seeds": n, "seeds": seeds, "mean_diff": float(d.mean()) if n else math.nan,
           "sd_diff": float(d.std(ddof=1)) if n > 1 else math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "level": level, "relative_diff_pct": math.nan, "direction": direction,
           "testable": n >= MIN_SEEDS, "reason": "" if n >= MIN_SEEDS else NEEDS_SEEDS}
    if n and abs(b.mean()) > 0:
        out["relative_diff_pct"] = float(100 * d.mean() / abs(b.mean()))
    if n >= MIN_SEEDS:
        half = stats.t.ppf((1 + level) / 2, df=n - 1) * out["sd_diff"] / math.sqrt(n)
        out["ci_low"], out["ci_high"] = out["mean_diff"] - half, out["mean_diff"] + half
    return out


def verdict(ci: dict, direction: str | None = None) -> str:
    """The verdict of one comparison from :func:`paired_difference_ci`'s result.

    Args:
        ci: the result dict.
        direction: overrides ``ci["direction"]``.

    Returns:
        One of :data:`VERDICTS`.
    """
    if not ci.get("testable", False):
        return "not testable here"
    sign = 1 if _direction(direction or ci["direction"]) == "a>b" else -1
    lo, hi = ci["ci_low"], ci["ci_high"]
    if (sign > 0 and lo > 0) or (sign < 0 and hi < 0):
        return "supported"
    if (sign > 0 and hi < 0) or (sign < 0 and lo > 0):
        return "contradicted"
    return "not supported"


def _blank(value) -> bool:
    """True for None/NaN (no per-seed values measured)."""
    if value is None:
        return True
    return isinstance(value, float) and math.isnan(value)


def _combine(verdicts: Sequence[str]) -> str:
    """Verdict of a conjunction of comparisons."""
    if "contradicted" in verdicts:
        return "contradicted"
    if "not testable here" in verdicts:
        return "not testable here"
    if all(v == "supported" for v in verdicts):
        return "supported"
    return "not supported"


def verdict_table(claims: pd.DataFrame, measurements: pd.DataFrame | None, level: float = 0.95) -> pd.DataFrame:
    """One row per claim of the register with its verdict, effect size and CI, or the reason it is untested.

    Args:
        claims: the register, :func:`urbanlib.paper.load_claims` (``claim_id``, ``paper``,
            ``section``, ``claim``, ``direction``, ``paper_value``, ``testable_here_note``).
        measurements: one row per comparison: ``claim_id``; ``a`` and ``b``, per-seed values
            (mapping seed -> value, or sequences paired by position; None when not measured);
            optional ``reason`` (why not measured), ``direction`` (needed when the claim's own
            direction is not ``a>b``/``a<b``, e.g. ``best_at``) and ``comparison`` (a label such
            as ``"vs PG-SimCLR"``). None or an empty frame: nothing measured.
        level: confidence level of every interval.

    Returns:
        DataFrame with columns :data:`TABLE_COLUMNS`, in register order, ALL claims. For a
        claim with several comparisons the numbers are those of the comparison that decides the
        verdict: among the comparisons whose own verdict is the row's, the weakest (smallest
        margin on the claimed side); ``comparisons`` lists them all.

    Raises:
        ValueError: naming the measurement row whose ``claim_id`` is not in the register, or
            whose direction is not a two-quantity comparison.
    """
    for col in ("claim_id", "paper", "section", "claim", "direction", "paper_value"):
        if col not in claims.columns:
            raise ValueError(f"claims lack column {col!r}")
    if measurements is None:
        measurements = pd.DataFrame(columns=["claim_id", "a", "b"])
    for col in ("claim_id", "a", "b"):
        if col not in measurements.columns:
            raise ValueError(f"measurements lack column {col!r} (need claim_id, a, b)")
    known = set(claims["claim_id"])
    for i, row in measurements.iterrows():
        if row["claim_id"] not in known:
            raise ValueError(f"measurements row {i}: claim_id {row['claim_id']!r} is not in the claims register")

    rows = []
    for claim in claims.itertuples(index=False):
        base = {"claim_id": claim.claim_id, "paper": claim.paper, "section": claim.section, "claim": claim.claim,
                "direction": claim.direction, "paper_value": claim.paper_value, "verdict": "not testable here",
                "n_seeds": 0, "mean_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "relative_diff_pct": math.nan, "reason": "", "comparisons": ""}
        ms = measurements[measurements["claim_id"] == claim.claim_id]
        note = getattr(claim, "testable_here_note", "") or ""
        if ms.empty:
            base["reason"] = "not measured in this run" + (f" ({note})" if note else "")
            rows.append(base)
            continue
        results, verdicts, labels, reasons = [], [], [], []
        for i, m in ms.iterrows():
            label = str(m.get("comparison", "") or f"comparison {len(labels) + 1}")
            if _blank(m["a"]) and _blank(m["b"]) and isinstance(m.get("reason"), str) and m.get("reason"):
                reasons.append(m["reason"])  # nothing measured, and the measurement says why
                verdicts.append("not testable here")
                continue
            explicit = m.get("direction") if "direction" in ms.columns else None
            if isinstance(explicit, str) and explicit:
                try:
                    direction = _direction(explicit)
                except ValueError as err:
                    raise ValueError(f"measurements row {i} ({claim.claim_id}): {err}") from None
            else:
                try:
                    direction = _direction(claim.direction)
                except ValueError:
                    reasons.append(f"direction {claim.direction!r} is not a two-quantity comparison; it needs one "
                                   "measurement row per comparison with its own 'a>b'/'a<b' direction")
                    verdicts.append("not testable here")
                    continue
            if _blank(m["a"]) or _blank(m["b"]):
                why = m.get("reason", "") if "reason" in ms.columns else ""
                reasons.append(str(why) if isinstance(why, str) and why else "not measured in this run")
                verdicts.append("not testable here")
                continue
            ci = paired_difference_ci(m["a"], m["b"], direction, level)
            v = verdict(ci)
            if ci["reason"]:
                reasons.append(ci["reason"])
            results.append((label, ci))
            verdicts.append(v)
            labels.append(label)
        base["verdict"] = _combine(verdicts)
        base["reason"] = "; ".join(dict.fromkeys(reasons))
        if results:
            def margin(item):  # distance of the CI bound from 0 on the claimed side (NaN: untested, last)
                ci = item[1]
                m = ci["ci_low"] if ci["direction"] == "a>b" else -ci["ci_high"]
                return m if not math.isnan(m) else math.inf

            # show the comparison that decides the verdict: the weakest among those with the row's
            # verdict (a contradicting one for "contradicted"); otherwise the weakest of all
            deciding = [r for r, v in zip(results, [verdict(ci) for _, ci in results], strict=True)
                        if v == base["verdict"]] or results
            _, weakest = min(deciding, key=margin)
            base.update(n_seeds=weakest["n_seeds"], mean_diff=weakest["mean_diff"], ci_low=weakest["ci_low"],
                        ci_high=weakest["ci_high"], relative_diff_pct=weakest["relative_diff_pct"])
            base["comparisons"] = "; ".join(
                f"{lab}: {ci['mean_diff']:+.4g} [{ci['ci_low']:.4g}, {ci['ci_high']:.4g}] (n={ci['n_seeds']})"
                for lab, ci in results)
        rows.append(base)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
