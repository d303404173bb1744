"""From committed ``full``-tier rows to the verdict table's measurements: which numbers answer which claim.

The mapping is data, ``urbanlib/paper/claim_measures.yml`` (its header documents the fields); this
module only reads it. Each comparison gives two quantities per **unit**, one city and one pretraining
seed (``"synth-ring:0"``), so today's 5 profiles x 3 seeds make n = 15 paired units; a transfer claim
about one (source, target) pair has the seeds as units. The statistics are
:mod:`urbanlib.analysis.verdicts`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from urbanlib.analysis.verdicts import verdict_table
from urbanlib.paper import load_claims, load_tables
from urbanlib.results.store import read_results
from urbanlib.results.tier import ABLATION_GROUPS, BENCHMARK_GROUPS, load_all
from urbanlib.scales import get_scale

MEASURES_YML = Path(__file__).resolve().parents[1] / "paper" / "claim_measures.yml"
DEFAULT_INDICATORS = {"urbanclip": "urbanclip", "urbanln": "bj"}  # a paper's own indicator set
PAIR_SCOPE = "each comparison is one (source, target) pair: its units are the pretraining seeds"
MEASUREMENT_COLUMNS = ["claim_id", "comparison", "a", "b", "direction", "reason", "paper_effect",
                       "paper_units", "baseline", "baseline_source", "metric", "experiment", "cities", "scope",
                       "planned_units", "planned_cities"]


@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    doc = yaml.safe_load(Path(path).read_text())
    for key in ("indicator_sets", "groups", "questions", "claims"):
        if key not in doc:
            raise ValueError(f"{path}: missing section {key!r}")
    return doc


def load_measures(path: str | Path | None = None) -> dict:
    """The claim -> measurement mapping (sections ``indicator_sets``, ``groups``, ``questions``, ``claims``)."""
    return _load(str(path or MEASURES_YML))


def complete_cities(rows: pd.DataFrame, split: str = "random") -> list[str]:
    """Cities (sources, for transfer) whose stored units cover every seed any city has, on ``split``.

    Verdicts pair on units, so an incomplete city still contributes the units it has; this list is
    what the verdict page reports as fully stored.
    """
    if rows.empty:
        return []
    task_split = rows["task"].astype(str).str.split("/", n=1).str[1]
    r = rows if "transfer" in set(rows["experiment"]) else rows[task_split.fillna(split) == split]
    seeds = r.groupby("city")["seed"].apply(lambda s: frozenset(s.astype(int)))
    if seeds.empty:
        return []
    every = frozenset().union(*seeds)
    return sorted(c for c, s in seeds.items() if s == every)


# ----------------------------------------------------------------------------------- per-unit values


def _tidy(rows: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """Rows with ``indicator``, ``split`` (benchmark/ablations) or ``target`` (transfer) and ``unit``."""
    if rows.empty:
        return rows.assign(indicator=[], split=[], target=[], unit=[])
    task = rows["task"].astype(str).str.split("/", n=1, expand=True)
    second = task[1] if task.shape[1] > 1 else pd.Series("random", index=rows.index)
    if experiment == "transfer":
        out = rows.assign(target=task[0], indicator=second, split="random")
        out = out[out["target"] != out["city"]]  # cross-city pairs only, as the paper
    else:
        out = rows.assign(indicator=task[0], split=second.fillna("random"), target="")
    return out.assign(unit=out["city"].astype(str) + ":" + out["seed"].astype(int).astype(str))


class _Frames:
    """The three committed experiments, read once, tidied."""

    def __init__(self, results_dir=None, frames: dict | None = None):
        names = ("benchmark", "ablations", "transfer")
        raw = frames or {n: read_results(n, results_dir) for n in names}
        self.rows = {n: _tidy(raw.get(n, pd.DataFrame()), n) for n in names}

    def values(self, experiment, model, metric, indicators, split="random", pair=None) -> dict:
        """Unit -> mean of ``<metric>_mean`` over ``indicators`` (and targets, for transfer) for one model."""
        r = self.rows[experiment]
        if r.empty:
            return {}
        r = r[(r["model"] == model) & (r["metric"] == f"{metric}_mean") & (r["split"] == split)
              & r["indicator"].isin(indicators)]
        if pair is not None:  # one (source, target): the seeds are the units
            r = r[(r["city"] == pair[0]) & (r["target"] == pair[1])]
            return {f"seed {int(s)}": float(v) for s, v in r.groupby("seed")["value"].mean().items()}
        return r.groupby("unit")["value"].mean().to_dict()

    def present(self, experiment) -> set:
        r = self.rows[experiment]
        return set(r["model"]) if not r.empty else set()

    def best(self, experiment, members, indicators, split="random", units: set | None = None) -> str:
        """The member with the highest mean R2 over ``indicators`` and ``units`` ('' if none has rows there).

        ``units`` are those of the other side of the comparison: a member is judged on the units it
        will be paired on, not on a city the other side lacks.
        """
        means = {}
        for m in members:
            v = self.values(experiment, m, "R2", indicators, split)
            v = [x for u, x in v.items() if units is None or u in units]
            if v:
                means[m] = np.nanmean(v)
        return max(means, key=means.get) if means else ""


# ----------------------------------------------------------------------------------- side specs


def _side(spec: str, groups: dict, frames: _Frames, ctx: dict, units: set | None = None) -> tuple[dict, str, str, list]:
    """Evaluate a side spec to (unit -> value, label, reason, models read); see the YAML header for the grammar.

    ``units``: the other side's units, on which a ``best(GROUP)`` member is chosen.
    """
    expr, _, inds = str(spec).partition(" @ ")
    indicators = [i.strip() for i in inds.split(",")] if inds else ctx["indicators"]
    values, names, models = [], [], []
    for name in expr.split(" - "):
        name = name.strip()
        if m := re.fullmatch(r"best\((\w+)\)", name):
            name = frames.best(ctx["experiment"], groups[m.group(1)], indicators, ctx["split"], units)
            if not name:
                return {}, spec, f"no member of group {m.group(1)!r} has {ctx['experiment']} rows", []
            names.append(f"{name} (best of {m.group(1)} by mean R2 on these units)")
        else:
            names.append(name)
        v = frames.values(ctx["experiment"], name, ctx["metric"], indicators, ctx["split"], ctx.get("pair"))
        if not v:
            return {}, spec, f"no '{name}' {ctx['metric']} rows in the committed {ctx['experiment']} results", []
        values.append(v)
        models.append(name)
    if len(values) == 2:
        out = {u: values[0][u] - values[1][u] for u in values[0] if u in values[1]}
    else:
        out = values[0]
    label = " - ".join(names) + (f" @ {inds}" if inds else "")
    return out, label, "", models


def parse_paper_effect(text: str) -> tuple[float, str] | None:
    """The paper's effect from a ``paper_value`` string: ``(magnitude, "%")``, ``(magnitude, "abs")`` or None.

    ``"6.1%"`` and ``"-10.45%"`` are relative changes; ``"0.411 vs 0.365"`` an absolute difference
    (0.046); ``"26.45% vs 10.45%"`` a difference of relative changes in percentage points (16.0).
    Anything else (ranges, lists, counts) has no single effect and gives None.
    """
    num = r"[-+]?\d*\.?\d+"
    s = str(text).strip()
    if m := re.fullmatch(rf"({num})%", s):
        return abs(float(m.group(1))), "%"
    if m := re.fullmatch(rf"({num})%\s+vs\s+({num})%", s):
        return abs(float(m.group(1)) - float(m.group(2))), "%"
    if m := re.fullmatch(rf"({num})\s+vs\s+({num})", s):
        return abs(float(m.group(1)) - float(m.group(2))), "abs"
    return None


def paper_baseline(query: dict, tables: pd.DataFrame | None = None) -> tuple[float, str]:
    """Mean of the tables.csv cells a baseline query selects, and a label naming them.

    ``model: best`` takes, per (city, task), the best row that is not UrbanLN's own or an
    improvement row (highest R2, lowest RMSE/MAE), as the papers' improvement rows do.
    """
    t = load_tables() if tables is None else tables
    metric = query.get("metric", "R2")
    t = t[(t["paper"] == query["paper"]) & (t["table"] == str(query["table"])) & (t["metric"] == metric)]
    t = t[~t["model"].str.contains("mprovement") & (t["model"] != "") & (t["task"] != "mean_over_indicators")]
    for col in ("city", "task"):
        if query.get(col):
            t = t[t[col].isin(query[col])]
    model = query["model"]
    if model == "best":
        t = t[~t["model"].str.startswith("UrbanLN")].dropna(subset=["value"])
        pick = t.groupby(["city", "task"])["value"]
        cells = pick.max() if metric == "R2" else pick.min()
    else:
        cells = t[t["model"] == model].dropna(subset=["value"])["value"]
    label = f"{query['paper']} Table {query['table']}, {'best baseline' if model == 'best' else model} {metric}"
    return (float(cells.mean()) if len(cells) else float("nan")), label


# ----------------------------------------------------------------------------------- measurements


def _row(cid, comparison, a=None, b=None, direction=None, reason="", **extra) -> dict:
    row = dict.fromkeys(MEASUREMENT_COLUMNS)
    row.update(claim_id=cid, comparison=comparison, a=a, b=b, direction=direction, reason=reason, **extra)
    return row


def _expand(measure: dict, groups: dict, frames: _Frames, ctx: dict) -> list[tuple[dict, dict, str]]:
    """One (measure, ctx, skipped-note) per comparison: ``each(GROUP)`` and ``each: pair`` expanded."""
    if m := re.fullmatch(r"each\((\w+)\)", str(measure["b"])):
        present = frames.present(ctx["experiment"])
        members = groups[m.group(1)]
        absent = [x for x in members if x not in present]
        note = f"not in the committed rows: {', '.join(absent)}" if absent else ""
        return [({**measure, "b": x, "label": measure.get("label") or f"{measure['a']} vs {x}"}, ctx, note)
                for x in members if x in present] or [({**measure, "b": members[0]}, ctx, note)]
    if measure.get("each") == "pair":
        r = frames.rows["transfer"]
        pairs = sorted(set(zip(r["city"], r["target"], strict=True))) if not r.empty else []
        return [({**measure, "label": f"{s}->{t} {ind}"}, {**ctx, "pair": (s, t), "indicators": [ind]}, "")
                for s, t in pairs for ind in ctx["indicators"]] or [(measure, ctx, "")]
    return [(measure, ctx, "")]


def _paper_units(measure: dict, claim_value: str, groups: dict, frames: _Frames, ctx: dict, tables) -> dict:
    """The paper's effect for one comparison and the baseline that converts a relative % to absolute units."""
    out = {"paper_effect": None, "paper_units": None, "baseline": None, "baseline_source": None}
    parsed = parse_paper_effect(measure.get("paper_effect", claim_value))
    if parsed is None:
        return out
    out["paper_effect"], out["paper_units"] = parsed
    if out["paper_units"] != "%":
        return out
    spec = measure.get("baseline") or {}
    if "paper" in spec and ctx["metric"] == "R2":
        out["baseline"], out["baseline_source"] = paper_baseline(spec, tables)
        return out
    v, label, _, _ = _side(spec.get("ours", str(measure["b"])), groups, frames, ctx)
    out["baseline"] = float(np.mean(list(v.values()))) if v else None
    why = (f"{ctx['metric']} depends on the target's scale, which differs from the paper's" if ctx["metric"] != "R2"
           else "" if "ours" in spec else "the paper's tables give no baseline for it")
    out["baseline_source"] = f"our {label}" + (f" ({why})" if why else "")
    return out


def tier_plan(scale: str = "full") -> dict[str, dict[str, set[str]]]:
    """Experiment -> model -> the units (``"city:seed"``) the tier plans it on; ``""`` keys every unit of it.

    A model of a one-city group (the μ sweep) is planned on the book's city alone; a model no group
    names (the random-init twins the benchmark adds) on every unit of its experiment. Transfer's
    units are its sources and seeds (a comparison of one (source, target) pair has the seeds alone,
    see :func:`_planned`).
    """
    groups = {"benchmark": {g: models for g, models in BENCHMARK_GROUPS.items()},
              "ablations": {g: uc + ln for g, (uc, ln) in ABLATION_GROUPS.items()}, "transfer": {}}
    out = {}
    for experiment, members in groups.items():
        plan = {}
        for _, config, seed in load_all()[experiment].plan(scale):
            city = config.get("city", config.get("source"))
            if city == "all":  # the shared stage 0
                continue
            plan.setdefault("", set()).add(f"{city}:{seed}")
            for model in members.get(config.get("group"), []):
                plan.setdefault(model, set()).add(f"{city}:{seed}")
        out[experiment] = plan
    return out


def _planned(plan: dict | None, experiment: str, models: list[str], pair) -> tuple[float, list]:
    """How many units (and which cities) the tier plans for a comparison of ``models``: NaN without a plan."""
    if plan is None:
        return float("nan"), []
    if pair is not None:
        return float(get_scale("full").pretrain_seeds), [pair[0]]
    by_model = plan.get(experiment, {})
    units = set(by_model.get("", set()))
    for name in models:
        units &= by_model.get(name, by_model.get("", set()))
    return float(len(units)), sorted({u.split(":")[0] for u in units})


def measurements(claims: pd.DataFrame, results_dir=None, measures: dict | None = None,
                 frames: dict | None = None, plan: dict | None = None) -> pd.DataFrame:
    """One row per (claim, comparison), columns :data:`MEASUREMENT_COLUMNS`; reasons where untestable.

    Args:
        claims: the register (:func:`urbanlib.paper.load_claims`).
        results_dir: where the committed CSVs are (default: the repository's ``results/``).
        measures: the mapping (default :func:`load_measures`).
        frames: optional ``{"benchmark": df, "ablations": df, "transfer": df}`` instead of reading.
        plan: :func:`tier_plan`, to say how many units each comparison will have when the tier is
            complete (``planned_units``, ``planned_cities``); None leaves them empty.

    Returns:
        DataFrame: ``a``/``b`` are dicts unit -> value (None where not measured), ``cities`` the
        cities the comparison's units come from.
    """
    doc = measures or load_measures()
    f = _Frames(results_dir, frames)
    tables = load_tables()
    rows = []
    for claim in claims.itertuples(index=False):
        entry = doc["claims"].get(claim.claim_id)
        if entry is None:
            rows.append(_row(claim.claim_id, "", reason=claim.testable_here_note or "no measurement mapped"))
            continue
        if "untestable" in entry:
            rows.append(_row(claim.claim_id, "", reason=entry["untestable"]))
            continue
        for measure in entry["measures"]:
            experiment = measure.get("experiment", "benchmark")
            inds = measure.get("indicators", DEFAULT_INDICATORS[claim.paper])
            ctx = {"experiment": experiment, "metric": measure.get("metric", "R2"),
                   "split": measure.get("split", "random"),
                   "indicators": doc["indicator_sets"][inds] if isinstance(inds, str) else list(inds)}
            for m, c, note in _expand(measure, doc["groups"], f, ctx):
                a, a_label, why_a, a_models = _side(m["a"], doc["groups"], f, c)
                b, b_label, why_b, b_models = _side(m["b"], doc["groups"], f, c, units=set(a))
                planned, planned_cities = _planned(plan, experiment, a_models + b_models, c.get("pair"))
                why = why_a or why_b
                if f.rows[experiment].empty:
                    why = f"not measured yet: the full tier has no '{experiment}' rows (run `make results`)"
                label = m.get("label") or f"{a_label} vs {b_label}"
                units = sorted(set(a) & set(b))
                cities = sorted({u.split(":")[0] for u in units}) if "pair" not in c else [c["pair"][0]]
                rows.append(_row(claim.claim_id, label, a or None, b or None, m.get("direction"),
                                 "; ".join(x for x in (why, note) if x), metric=c["metric"], experiment=experiment,
                                 cities=cities, scope=PAIR_SCOPE if "pair" in c else "", planned_units=planned,
                                 planned_cities=planned_cities,
                                 **_paper_units(m, claim.paper_value, doc["groups"], f, c, tables)))
    return pd.DataFrame(rows, columns=MEASUREMENT_COLUMNS)


def labelled_claims(claims: pd.DataFrame | None = None, measures: dict | None = None) -> pd.DataFrame:
    """The register with the mapping's ``short`` label and ``question`` key per claim."""
    doc = measures or load_measures()
    claims = load_claims() if claims is None else claims
    entry = {cid: doc["claims"].get(cid, {}) for cid in claims["claim_id"]}
    return claims.assign(short=[entry[c].get("short", "") for c in claims["claim_id"]],
                         question=[entry[c].get("question", "") for c in claims["claim_id"]])


def verdicts(results_dir=None, claims: pd.DataFrame | None = None, frames: dict | None = None) -> pd.DataFrame:
    """The verdict table on the committed ``full`` tier (:func:`urbanlib.analysis.verdicts.verdict_table`).

    A comparison with fewer units stored than the tier plans for it (:func:`tier_plan`) gives no
    verdict yet: its row says how many of the planned units are in.
    """
    claims = labelled_claims(claims)
    return verdict_table(claims, measurements(claims, results_dir, frames=frames, plan=tier_plan()))
