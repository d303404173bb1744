"""The verdict table: every claim of the register, tested by paired t-tests over city x seed units.

A **unit** is one city and one pretraining seed; both quantities of a comparison come from runs that
share it, so the test is on the per-unit differences ``d = a - b`` (:mod:`urbanlib.analysis.paired`:
today's ``full`` tier gives n = 5 cities x 3 seeds = 15 units). Each comparison gets the mean paired
difference with its 95% t interval, the two-sided paired t-test p, and its minimum detectable effect
(MDE) at power 0.8 (noncentral t, from the observed sd of the differences and n).

Decision rule, per claim, at α = 0.05 (two-sided); a claim holds K ≥ 1 comparisons ("best among all
baselines" and "a > b > c" are several), each with a claimed direction:

- **supported**: every comparison is significant in the claimed direction (p < α with the mean on the
  claimed side, i.e. its 95% interval excludes 0 there). An intersection-union test: the claim's p is
  the largest of the comparisons' claimed-side p-values, with no multiplicity correction needed.
- **contradicted**: some comparison is significant in the opposite direction after a Bonferroni
  correction within the claim (K · p < α; for K = 1 its interval excludes 0 on the other side). The
  claim's p is that corrected p.
- **underpowered**: neither, and every comparison that is not significant in the claimed direction
  has an MDE larger than the effect the paper reports for it (the paper's relative % converted to
  absolute units through the paper's baseline value where one is mapped, see
  ``urbanlib/paper/claim_measures.yml``): the test could not have seen the paper's effect.
- **not supported**: neither, and some such comparison could have detected the paper's effect, or
  the paper reports no effect size to judge power by.
- **not testable here**: no measurement (the reason is stated: the papers' real cities, hub weights,
  a count rather than a measurement, a result not computed yet), fewer than 3 paired units, or
  fewer units than the tier plans for the comparison (``planned_units``: 5 cities x 3 seeds = 15
  for most; 3 seeds for a one-city sweep or one transfer pair): an incomplete tier gives no
  verdict, and the reason says how many units are in and what the test reads so far.

The Benjamini-Hochberg adjusted p across all tested claims is shown beside the raw p (``p_bh``); the
verdict uses the raw p, so read a supported claim with ``p_bh ≥ 0.05`` as one that may not survive
the number of claims tested. A claim whose units come from one city only says so in its reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from .paired import bh_adjust, paired_test

__all__ = [
    "ALPHA",
    "MIN_UNITS",
    "NEEDS_UNITS",
    "POWER",
    "TABLE_COLUMNS",
    "VERDICTS",
    "bh_survivors",
    "counts",
    "paired_difference_ci",
    "readable_table",
    "styled_verdicts",
    "verdict",
    "verdict_table",
]

ALPHA = 0.05  # two-sided level of every test
POWER = 0.8  # power at which the minimum detectable effect is computed
MIN_UNITS = 3
NEEDS_UNITS = f"needs ≥{MIN_UNITS} paired units (city x pretraining seed)"  # a reason; the verdict is its own column
MIN_SEEDS, NEEDS_SEEDS = MIN_UNITS, NEEDS_UNITS  # the names of the per-seed version (issue 8)
VERDICTS = ("supported", "not supported", "underpowered", "contradicted", "not testable here")
TABLE_COLUMNS = ["claim_id", "paper", "section", "question", "short", "claim", "direction", "paper_value", "verdict",
                 "n_units", "n_cities", "mean_diff", "ci_low", "ci_high", "p", "p_bh", "mde", "metric",
                 "paper_units", "paper_effect", "paper_effect_abs", "effect_paper", "ci_low_paper",
                 "ci_high_paper", "mde_paper", "baseline", "baseline_source", "relative_diff_pct", "reason",
                 "comparisons"]


def _direction(direction: str) -> str:
    """Normalise a register direction to ``"a>b"`` / ``"a<b"``; anything else raises ValueError."""
    d = str(direction).replace(" ", "")
    if d.startswith("a>b") and not d.startswith("a>b>"):
        return "a>b"
    if d.startswith("a<b") and not d.startswith("a<b<"):
        return "a<b"
    raise ValueError(f"direction {direction!r} is not a two-quantity comparison ('a>b' or 'a<b')")


def paired_difference_ci(a_by_unit, b_by_unit, direction: str = "a>b", level: float = 0.95,
                         power: float = POWER) -> dict:
    """Mean paired difference a - b over units with its t interval, two-sided p and MDE.

    Args:
        a_by_unit: per-unit values of quantity a: a mapping unit -> value (paired on keys) or a
            sequence (paired by position).
        b_by_unit: the same for quantity b.
        direction: the claim's direction (``"a>b"`` or ``"a<b"``; register spellings such as
            ``"a>b (36/36)"`` accepted).
        level: confidence level; the test's α is ``1 - level``.
        power: power of the minimum detectable effect.

    Returns:
        dict: the keys of :func:`urbanlib.analysis.paired.paired_test` plus ``n_units`` (and its old
        name ``n_seeds``), ``direction``, ``p_claimed`` / ``p_opposite`` (the two-sided-equivalent
        p for the claimed and the opposite side: 2 x the one-sided p, capped at 1),
        ``relative_diff_pct`` (100 · mean(a - b) / |mean(b)|), ``testable`` and ``reason``
        (:data:`NEEDS_UNITS` with fewer than 3 units: no interval, the mean is still given).
    """
    direction = _direction(direction)
    out = paired_test(a_by_unit, b_by_unit, level=level, power=power)
    n = out["n"]
    out.update(n_units=n, n_seeds=n, seeds=out["units"], direction=direction, testable=n >= MIN_UNITS,
               reason="" if n >= MIN_UNITS else NEEDS_UNITS, relative_diff_pct=math.nan,
               p_claimed=math.nan, p_opposite=math.nan)
    if n and out["mean_b"]:
        out["relative_diff_pct"] = float(100 * out["mean_diff"] / abs(out["mean_b"]))
    if n < MIN_UNITS:
        out.update(ci_low=math.nan, ci_high=math.nan, p=math.nan, mde=math.nan)
        return out
    sign = 1 if direction == "a>b" else -1
    t = sign * out["t"] if not math.isnan(out["t"]) else 0.0
    out["p_claimed"] = float(min(1.0, 2 * stats.t.sf(t, n - 1)))
    out["p_opposite"] = float(min(1.0, 2 * stats.t.cdf(t, n - 1)))
    return out


def verdict(ci: dict, direction: str | None = None) -> str:
    """The verdict of one comparison from its interval (no power judgement: see :func:`verdict_table`).

    Args:
        ci: the result of :func:`paired_difference_ci`.
        direction: overrides ``ci["direction"]``.

    Returns:
        "supported", "contradicted", "not supported" or "not testable here".
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
    """True for None/NaN/empty (no per-unit values measured)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return hasattr(value, "__len__") and len(value) == 0


def _number(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v


def _paper_terms(ci: dict, m) -> dict:
    """The paper's effect for one comparison in absolute and paper units, and ours and the MDE in paper units."""
    units, effect, base = m.get("paper_units"), _number(m.get("paper_effect")), _number(m.get("baseline"))
    out = {"paper_units": units if isinstance(units, str) else None, "paper_effect": effect,
           "paper_effect_abs": math.nan, "effect_paper": math.nan, "ci_low_paper": math.nan,
           "ci_high_paper": math.nan, "mde_paper": math.nan, "baseline": base,
           "baseline_source": m.get("baseline_source") if isinstance(m.get("baseline_source"), str) else None}
    if out["paper_units"] == "abs":
        out.update(paper_effect_abs=effect, effect_paper=ci["mean_diff"], ci_low_paper=ci["ci_low"],
                   ci_high_paper=ci["ci_high"], mde_paper=ci["mde"])
    elif out["paper_units"] == "%" and math.isfinite(base) and base:
        scale = 100 / abs(base)
        out.update(paper_effect_abs=effect / scale, effect_paper=ci["mean_diff"] * scale,
                   ci_low_paper=ci["ci_low"] * scale, ci_high_paper=ci["ci_high"] * scale, mde_paper=ci["mde"] * scale)
    return out


def _decide(results: list[dict], alpha: float) -> tuple[str, dict, float]:
    """(verdict, deciding comparison, claim p) of K tested comparisons; the rule of the module docstring.

    The claim's p is ``min(p_sup, p_con)``: ``p_sup`` the intersection-union p of "every comparison in
    the claimed direction" (the largest claimed-side p), ``p_con`` the Bonferroni p of "some comparison
    in the opposite direction" (K x the smallest opposite-side p). For K = 1 it is the two-sided p, and
    for any K it is below α exactly when the verdict is supported or contradicted.
    """
    k = len(results)

    def margin(r):  # distance of the interval's bound from 0 on the claimed side
        return r["ci_low"] if r["direction"] == "a>b" else -r["ci_high"]

    contra = min(results, key=lambda r: r["p_opposite"])
    weakest = max(results, key=lambda r: (r["p_claimed"], -margin(r)))
    p_con, p_sup = min(1.0, k * contra["p_opposite"]), weakest["p_claimed"]
    p = min(p_sup, p_con)
    if p_con < alpha:
        return "contradicted", contra, p
    if p_sup < alpha:
        return "supported", weakest, p
    failing = [r for r in results if r["p_claimed"] >= alpha]
    powered = [r for r in failing if not (math.isfinite(r["paper_effect_abs"]) and r["mde"] > r["paper_effect_abs"])]
    if not powered:
        return "underpowered", weakest, p
    return "not supported", max(powered, key=lambda r: (r["p_claimed"], -margin(r))), p


def _fmt_comparison(r: dict) -> str:
    return (f"{r['label']}: {r['mean_diff']:+.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}], p={r['p']:.2g}, "
            f"MDE {r['mde']:.3f} (n={r['n_units']})")


_NOT_PAIRWISE = ("direction {direction!r} is not a two-quantity comparison; it needs one measurement row per "
                "comparison with its own 'a>b'/'a<b' direction")  # a reason, for a claim like "a > b > c"
_SHOWN = ("n_units", "n_cities", "mean_diff", "ci_low", "ci_high", "mde", "metric", "relative_diff_pct", "paper_units",
          "paper_effect", "paper_effect_abs", "effect_paper", "ci_low_paper", "ci_high_paper", "mde_paper", "baseline",
          "baseline_source")  # the columns a claim takes from the comparison that decides it


@dataclass
class _Measured:
    """One measurement row after :func:`_measure`: its tested comparison, or None, and what it adds to the reason."""

    notes: list[str]  # in row order; empty strings are dropped when the reason is joined
    result: dict | None = None  # paired_difference_ci + paper terms + label, n_cities, metric, planned_units


def _text(m, key: str) -> str:
    """The row's string in ``key``, or "" (a missing column reads NaN)."""
    value = m.get(key)
    return value if isinstance(value, str) else ""


def _names(m, key: str) -> list:
    """The row's list in ``key`` (cities), or [] (a missing column reads NaN)."""
    value = m.get(key)
    return value if isinstance(value, list | tuple) else []


def _row_direction(i, m, claim) -> str | None:
    """The direction of measurement row ``i``: its own, else the claim's; None if the claim's is not pairwise.

    A row's own direction that is not pairwise is an error in the measurements, so it raises.
    """
    explicit = _text(m, "direction")
    try:
        return _direction(explicit or claim.direction)
    except ValueError as err:
        if explicit:
            raise ValueError(f"measurements row {i} ({claim.claim_id}): {err}") from None
        return None


def _measure(i, m, claim, level: float, power: float) -> _Measured:
    """Test the comparison of one measurement row, or say why it cannot be tested."""
    given = _text(m, "reason")
    a_missing, b_missing = _blank(m["a"]), _blank(m["b"])
    if a_missing and b_missing and given:
        return _Measured([given])  # nothing measured, and the measurement says why
    direction = _row_direction(i, m, claim)
    if direction is None:
        return _Measured([_NOT_PAIRWISE.format(direction=claim.direction)])
    if a_missing or b_missing:
        return _Measured([given or "not measured in this run"])
    ci = paired_difference_ci(m["a"], m["b"], direction, level, power)
    if not ci["testable"]:
        return _Measured([given, ci["reason"]])  # given: measured, with a note (e.g. group members absent)
    cities, planned_cities, scope = _names(m, "cities"), _names(m, "planned_cities"), _text(m, "scope")
    if scope:
        scope_note = f"{scope} (n = {ci['n_units']})"
    elif len(planned_cities or cities) == 1:
        one = (planned_cities or cities)[0]
        scope_note = f"one city only ({one}): a one-city sweep, its units are the pretraining seeds"
    else:
        scope_note = ""
    metric = m.get("metric") if isinstance(m.get("metric"), str) else None  # "" stays "", unlike _text(...) or None
    result = {**ci, **_paper_terms(ci, m), "label": _text(m, "comparison"), "n_cities": len(cities),
              "metric": metric, "planned_units": _number(m.get("planned_units"))}
    return _Measured([given, scope_note], result)


def _judge(results: list[dict], untested: bool, alpha: float) -> tuple[str, dict, float, list[str]]:
    """The claim's verdict from its tested comparisons, with the notes that lead its reason.

    :func:`_decide` applies the rule to the tested comparisons; then a tier that has not run every
    planned unit leaves the claim untestable, and so does a comparison that could not be tested,
    unless the tested ones already contradict the claim.

    Returns:
        (verdict, the comparison shown, the claim's p (NaN when not testable), notes).
    """
    read, shown, p = _decide(results, alpha)
    incomplete = [f"{r['label']}: {r['n_units']} of {int(r['planned_units'])} planned units" for r in results
                  if math.isfinite(r["planned_units"]) and r["n_units"] < r["planned_units"]]
    verdict = read
    if incomplete or (untested and read != "contradicted"):
        verdict, p = "not testable here", math.nan
    notes = []
    if verdict == "underpowered":
        notes.append(f"the test could not see the paper's effect: MDE {shown['mde']:.3f} > the paper's "
                     f"{shown['paper_effect_abs']:.3f} (absolute units)")
    elif verdict == "not supported" and math.isfinite(shown["paper_effect_abs"]):
        notes.append(f"the test could have seen the paper's effect: MDE {shown['mde']:.3f} ≤ the paper's "
                     f"{shown['paper_effect_abs']:.3f} (absolute units)")
    if len(results) > 1:
        notes.append(f"{len(results)} comparisons; shown: {shown['label']}")
    if incomplete:
        notes.append(f"tier incomplete, no verdict yet ({'; '.join(incomplete)}); so far the test reads '{read}'")
    return verdict, shown, p, notes


def _claim_row(claim, ms: pd.DataFrame, level: float, alpha: float, power: float) -> dict:
    """One verdict-table row: each of the claim's measurement rows measured, then the claim judged."""
    row = {c: math.nan for c in TABLE_COLUMNS}
    row.update(claim_id=claim.claim_id, paper=claim.paper, section=claim.section, claim=claim.claim,
               short=getattr(claim, "short", "") or claim.claim, question=getattr(claim, "question", ""),
               direction=claim.direction, paper_value=claim.paper_value, verdict="not testable here",
               n_units=0, n_cities=0, reason="", comparisons="", paper_units=None, baseline_source=None,
               metric=None)
    if ms.empty:
        note = getattr(claim, "testable_here_note", "") or ""
        row["reason"] = "not measured in this run" + (f" ({note})" if note else "")
        return row
    measured = [_measure(i, m, claim, level, power) for i, m in ms.iterrows()]
    notes = [note for m in measured for note in m.notes]
    results = [m.result for m in measured if m.result is not None]
    for k, r in enumerate(results, start=1):  # unnamed ones numbered among the tested, as `comparisons` lists them
        r["label"] = r["label"] or f"comparison {k}"
    if results:
        verdict, shown, p, lead = _judge(results, len(results) < len(measured), alpha)
        row.update({k: shown[k] for k in _SHOWN})
        row.update(verdict=verdict, p=p, comparisons="; ".join(_fmt_comparison(r) for r in results))
        notes = lead + notes
    row["reason"] = "; ".join(dict.fromkeys(n for n in notes if n))
    return row


def verdict_table(claims: pd.DataFrame, measurements: pd.DataFrame | None, level: float = 0.95,
                  power: float = POWER) -> pd.DataFrame:
    """One row per claim of the register: verdict, effect with CI, p and BH-adjusted p, MDE, or why untested.

    Args:
        claims: the register, :func:`urbanlib.paper.load_claims` (``claim_id``, ``paper``,
            ``section``, ``claim``, ``direction``, ``paper_value``, ``testable_here_note``),
            optionally with ``short`` and ``question`` columns.
        measurements: one row per comparison (:func:`urbanlib.results.verdicts.measurements`):
            ``claim_id``; ``a`` and ``b``, per-unit values (mapping unit -> value, or sequences
            paired by position; None when not measured); optional ``reason``, ``direction``,
            ``comparison`` (a label), ``cities``, ``scope``, ``metric`` and the paper's effect:
            ``paper_effect``, ``paper_units`` (``"%"`` or ``"abs"``), ``baseline``,
            ``baseline_source``. None or an empty frame: nothing measured.
        level: confidence level of every interval; the tests' α is ``1 - level``.
        power: power of the minimum detectable effects.

    Returns:
        DataFrame with columns :data:`TABLE_COLUMNS`, in register order, ALL claims. The numbers of a
        claim with several comparisons are those of the comparison that decides its verdict (the
        weakest for "supported", the contradicting one for "contradicted"); ``comparisons`` lists
        them all. ``mde`` and ``mean_diff`` are in the metric's units (ΔR²); the ``*_paper``
        columns in the paper's (% of ``baseline`` for a relative claim).

    Raises:
        ValueError: naming the measurement row whose ``claim_id`` is not in the register, or whose
            direction is not a two-quantity comparison.
    """
    for col in ("claim_id", "paper", "section", "claim", "direction", "paper_value"):
        if col not in claims.columns:
            raise ValueError(f"claims lack column {col!r}")
    if measurements is None:
        measurements = pd.DataFrame(columns=["claim_id", "a", "b"])
    for col in ("claim_id", "a", "b"):
        if col not in measurements.columns:
            raise ValueError(f"measurements lack column {col!r} (need claim_id, a, b)")
    unknown = set(measurements["claim_id"]) - set(claims["claim_id"])
    for i, row in measurements.iterrows():
        if row["claim_id"] in unknown:
            raise ValueError(f"measurements row {i}: claim_id {row['claim_id']!r} is not in the claims register")
    alpha = 1 - level
    rows = [_claim_row(c, measurements[measurements["claim_id"] == c.claim_id], level, alpha, power)
            for c in claims.itertuples(index=False)]
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table["p_bh"] = bh_adjust(table["p"].astype(float))
    return table


def _num(x, digits=3, signed=False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p_text(p) -> str:
    if not math.isfinite(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _effect_text(r) -> str:
    if not math.isfinite(r["mean_diff"]) or r["verdict"] == "not testable here":
        return ""
    unit = {"R2": "ΔR²", "RMSE": "ΔRMSE", "MAE": "ΔMAE"}.get(r["metric"], "Δ")
    text = f"{_num(r['mean_diff'], signed=True)} [{_num(r['ci_low'])}, {_num(r['ci_high'])}] {unit}"
    if r["paper_units"] == "%" and math.isfinite(r["effect_paper"]):
        text += f" = {r['effect_paper']:+.1f}% [{r['ci_low_paper']:.1f}, {r['ci_high_paper']:.1f}]"
    return text


def _mde_text(r) -> str:
    if not math.isfinite(r["mde"]) or r["verdict"] == "not testable here":
        return ""
    text = _num(r["mde"])
    if r["paper_units"] == "%" and math.isfinite(r["mde_paper"]):
        text += f" = {r['mde_paper']:.1f}%"
    elif r["paper_units"] is None:
        text += " (the paper gives no effect size)"
    return text


def readable_table(table: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The verdict table as a reader sees it, every number a string to 3 decimals.

    Columns: short claim, verdict, n, effect [95% CI] (absolute and, for a relative claim, in % of the
    conversion baseline), p, p (BH), MDE, the paper's value, the reason. Untestable rows carry their
    reason and empty number cells, never NaN.
    """
    out = pd.DataFrame({
        "claim": table["claim_id"] + " " + table["short"].astype(str),
        "verdict": table["verdict"],
        "n": [str(int(n)) if n else "" for n in table["n_units"]],
        "effect [95% CI]": [_effect_text(r) for _, r in table.iterrows()],
        "p": [_p_text(p) for p in table["p"]],
        "p (BH)": [_p_text(p) for p in table["p_bh"]],
        "MDE (power 0.8)": [_mde_text(r) for _, r in table.iterrows()],
        "paper": table["paper_value"].replace("", "–"),
        "reason": table["reason"].fillna(""),
    })
    return out[list(columns)] if columns else out


VERDICT_COLOURS = {"supported": "#1a7f37", "contradicted": "#cf222e", "underpowered": "#9a6700",
                   "not supported": "#57606a", "not testable here": "#8c959f"}


def styled_verdicts(table: pd.DataFrame):
    """:func:`readable_table` as a pandas Styler: the verdict a coloured badge, the index hidden."""
    shown = readable_table(table)

    def badge(v):
        return (f"background-color: {VERDICT_COLOURS.get(v, '#8c959f')}; color: white; border-radius: 0.6em; "
                "padding: 0.1em 0.5em; white-space: nowrap")

    return (shown.style.hide(axis="index").map(badge, subset=["verdict"])
            .set_properties(subset=["effect [95% CI]", "MDE (power 0.8)"], **{"white-space": "nowrap"}))


def counts(table: pd.DataFrame) -> pd.Series:
    """Number of claims per verdict, in the order of :data:`VERDICTS` (zeros kept)."""
    return table["verdict"].value_counts().reindex(list(VERDICTS), fill_value=0).rename("claims")


def bh_survivors(table: pd.DataFrame, alpha: float = ALPHA) -> list[str]:
    """Claim ids whose verdict is supported or contradicted and whose BH-adjusted p is below ``alpha``."""
    keep = table["verdict"].isin(["supported", "contradicted"]) & (table["p_bh"] < alpha)
    return list(table.loc[keep, "claim_id"])
