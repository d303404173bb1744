"""From committed ``full``-tier rows to the verdict table: which measurement answers which claim.

Each testable claim of ``urbanlib/paper/claims.csv`` is mapped to per-pretraining-seed values of two
quantities, pooled over the SynthCity profiles whose seeds are all stored (:func:`complete_cities`)
and (unless the claim names one) over indicators, on the random split. Claims about the papers' real cities, captioners or quantities SynthCity does not
have get an explicit reason instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from urbanlib.results.store import read_results

BASELINES_UC = ["Autoencoder", "PCA", "ResNet-18 (land-use stand-in)", "Tile2Vec", "READ", "PG-SimCLR"]
INDICATOR = {"carbon": "carbon", "population": "population", "GDP": "gdp"}


def complete_cities(rows: pd.DataFrame, split: str = "random") -> list[str]:
    """Cities (sources, for transfer) whose stored units cover every seed any city has, on ``split``.

    Pooling a seed over cities is only a fair pairing when every seed pools the same cities, so a
    city whose seeds are still being computed is left out of the verdicts until it is complete.
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


def _complete(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["city"].isin(complete_cities(rows))] if not rows.empty else rows


def _per_seed(rows: pd.DataFrame, model: str, metric: str, indicators=None, split: str = "random") -> dict:
    """Seed -> mean over cities and indicators of ``<metric>_mean`` for one model."""
    r = rows[(rows["model"] == model) & (rows["metric"] == f"{metric}_mean")]
    if r.empty:
        return {}
    task = r["task"].str.split("/", expand=True)
    r = r.assign(indicator=task[0], split=task[1] if task.shape[1] > 1 else split)
    r = r[r["split"] == split]
    if indicators is not None:
        r = r[r["indicator"].isin(indicators)]
    return r.groupby("seed")["value"].mean().to_dict()


def _transfer_per_seed(rows: pd.DataFrame, model: str, indicators=None, pair=None) -> dict:
    """Seed -> mean cross-city transfer R2 of ``model`` (optionally one (source, target) pair only)."""
    r = rows[(rows["model"] == model) & (rows["metric"] == "R2_mean")]
    if r.empty:
        return {}
    task = r["task"].str.split("/", expand=True)
    r = r.assign(target=task[0], indicator=task[1])
    r = r[r["target"] != r["city"]]  # cross-city pairs only, as the paper
    if indicators is not None:
        r = r[r["indicator"].isin(indicators)]
    if pair is not None:
        r = r[(r["city"] == pair[0]) & (r["target"] == pair[1])]
    return r.groupby("seed")["value"].mean().to_dict()


def _transfer_pairs(rows: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(source, target, indicator) cross-city pairs present in the transfer rows."""
    if rows.empty:
        return []
    task = rows["task"].str.split("/", expand=True)
    t = rows.assign(target=task[0], indicator=task[1])
    t = t[t["target"] != t["city"]]
    return sorted(set(zip(t["city"], t["target"], t["indicator"], strict=True)))


# Claims that are not a comparison over pretraining seeds, and where they are checked instead.
CHECKED_ELSEWHERE = {
    "UC02": "about Beijing; on SynthCity the direction is tested by UC01, pooled over the profiles",
    "UC03": "about Shanghai; on SynthCity the direction is tested by UC01, pooled over the profiles",
    "UC04": "about Guangzhou; on SynthCity the direction is tested by UC01, pooled over the profiles",
    "UC05": "about Shenzhen; on SynthCity the direction is tested by UC01, pooled over the profiles",
    "UC28": "a property of the architecture, not a measurement: one UrbanCLIP step runs each tower once for both "
            "losses (tests/test_urbanclip_model.py::test_one_forward_pass_per_step_yields_both_losses)",
    "LN05": "about Shanghai; on SynthCity the same test as LN04 (best on every task), which is run",
    "LN06": "about Shenzhen; on SynthCity the same test as LN04 (best on every task), which is run",
    "LN21": "'changes little' has no threshold to test; the mu sweep and its spread over seeds are on the Results page",
    "LN22": "a count, not a measurement over seeds: exact paper-size parameter counts are on the efficiency page",
    "LN23": "a count, not a measurement over seeds: trainable against total parameters are on the efficiency page",
    "LN25": "qualitative (no criterion for 'balance'); accuracy is on the benchmark, speed on the efficiency page",
    "LN26": "'high' has no threshold to test; the transfer heatmaps show the cross-city R2",
    "LN27": "arithmetic of the method, not a measurement: 20 + 57 x 4 = 248 holds (tests/test_ipsi.py)",
    "LN30": "on SynthCity the same test as LN04 (best on every task); the paper's own Tables 7-8 contradict it",
}


def measurements(claims: pd.DataFrame, results_dir=None) -> pd.DataFrame:
    """One measurement row per (claim, comparison) from the committed results; reasons where untestable."""
    bench = _complete(read_results("benchmark", results_dir))
    abl = _complete(read_results("ablations", results_dir))
    tr = _complete(read_results("transfer", results_dir))
    rows = []

    def add(cid, a, b, direction=None, comparison="", reason=""):
        rows.append({"claim_id": cid, "a": a or None, "b": b or None, "direction": direction,
                     "comparison": comparison, "reason": reason if not (a and b) else ""})

    def need(df, name):
        return f"not measured yet: the full tier has no '{name}' rows (run `make results`)" if df.empty else ""

    b = lambda m, met="R2", ind=None: _per_seed(bench, m, met, ind)  # noqa: E731
    ab = lambda m, met="R2": _per_seed(abl, m, met)  # noqa: E731
    for met, cid in (("R2", "UC01"), ("RMSE", "UC06"), ("MAE", "UC07")):
        add(cid, b("UrbanCLIP", met), b("PG-SimCLR", met), reason=need(bench, "benchmark"))
    for base in BASELINES_UC:
        add("UC08", b("UrbanCLIP"), b(base), "a>b", f"vs {base}", need(bench, "benchmark"))
    for ind, cid in (("carbon", "UC10"), ("population", "UC11"), ("GDP", "UC12")):
        add(cid, b("UrbanCLIP", ind=[INDICATOR[ind]]), b("PG-SimCLR", ind=[INDICATOR[ind]]),
            reason=need(bench, "benchmark"))
    gains = {k: {s: b("UrbanCLIP", ind=[v]).get(s, np.nan) - b("PG-SimCLR", ind=[v]).get(s, np.nan)
                 for s in b("UrbanCLIP")} for k, v in INDICATOR.items()}
    add("UC09", gains["carbon"], gains["population"], "a>b", "carbon gain vs population gain", need(bench, "benchmark"))
    add("UC09", gains["population"], gains["GDP"], "a>b", "population gain vs GDP gain", need(bench, "benchmark"))
    for base in [x for x in BASELINES_UC if x != "PG-SimCLR"]:
        add("UC13", b("PG-SimCLR"), b(base), "a>b", f"vs {base}", need(bench, "benchmark"))
    add("UC14", b("UrbanViT"), b("UrbanCLIP"), reason=need(bench, "benchmark"))
    add("UC15", b("UrbanViT"), b("ResNet-18 (land-use stand-in)"), reason=need(bench, "benchmark"))
    add("UC16", ab("w/o refined text"), ab("UrbanCLIP"), reason=need(abl, "ablations"))
    add("UC17", b("Text-SimCLR"), b("UrbanCLIP"), reason=need(bench, "benchmark"))
    add("UC18", ab("w/o L_LM"), ab("UrbanCLIP"), reason=need(abl, "ablations"))
    add("UC19", ab("w/o L_Con"), ab("UrbanCLIP"), reason=need(abl, "ablations"))
    add("UC20", ab("w/o L_Con"), ab("w/o L_LM"), reason=need(abl, "ablations"))
    add("UC22", _transfer_per_seed(tr, "UrbanCLIP"), _transfer_per_seed(tr, "PG-SimCLR"), reason=need(tr, "transfer"))
    for ind, cid in (("carbon", "UC23"), ("population", "UC24"), ("GDP", "UC25")):
        add(cid, _transfer_per_seed(tr, "UrbanCLIP", [INDICATOR[ind]]),
            _transfer_per_seed(tr, "PG-SimCLR", [INDICATOR[ind]]), reason=need(tr, "transfer"))
    pairs = _transfer_pairs(tr)
    for src, tgt, ind in pairs:
        add("UC21", _transfer_per_seed(tr, "UrbanCLIP", [ind], (src, tgt)),
            _transfer_per_seed(tr, "PG-SimCLR", [ind], (src, tgt)), "a>b", f"{src}->{tgt} {ind}")
    if not pairs:
        add("UC21", None, None, reason=need(tr, "transfer"))
    for model in ("UrbanCLIP", "PG-SimCLR"):
        t = {k: _transfer_per_seed(tr, model, [INDICATOR[k]]) for k in INDICATOR}
        add("UC26", t["carbon"], t["population"], "a>b", f"{model}: carbon vs population", need(tr, "transfer"))
        add("UC26", t["population"], t["GDP"], "a>b", f"{model}: population vs GDP", need(tr, "transfer"))
    ln, ln_sv = "UrbanLN (satellite)", "UrbanLN (street)"
    all_base = [*BASELINES_UC, "UrbanViT", "Text-SimCLR", "UrbanVLP", "ResNet-18 (random)"]
    means = {m: np.nanmean(list(b(m).values())) if b(m) else -np.inf for m in all_base}
    best = max(means, key=means.get) if means else ""
    for met, cid in (("R2", "LN01"), ("RMSE", "LN02"), ("MAE", "LN03")):
        add(cid, b(ln, met), b(best, met) if best else {}, comparison=f"vs {best} (best baseline by mean R2)",
            reason=need(bench, "benchmark"))
    for m in (ln, ln_sv):
        for base in all_base:
            add("LN04", b(m), b(base), "a>b", f"{m} vs {base}", need(bench, "benchmark"))
    add("LN07", b(ln_sv), b(best) if best else {}, comparison=f"street view vs {best}", reason=need(bench, "benchmark"))
    for met, direction in (("R2", "a>b"), ("RMSE", "a<b"), ("MAE", "a<b")):
        add("LN08", b(ln_sv, met), b(best, met) if best else {}, direction, f"street view vs {best}, {met}",
            need(bench, "benchmark"))
    for ind in ("crime", "poi_count"):
        add("LN09", b(ln, ind=[ind]), b(best, ind=[ind]) if best else {}, "a<b", f"satellite vs {best}, {ind}",
            need(bench, "benchmark"))
    add("LN12", b(ln), b("UrbanCLIP"), "a>b", "vs UrbanCLIP (RemoteCLIP needs its hub weights: not compared)",
        need(bench, "benchmark"))
    add("LN10", b(ln_sv, ind=["crime", "poi_count"]), b(ln, ind=["crime", "poi_count"]), reason=need(bench, "benchmark"))
    add("LN11", b(ln, ind=["population"]), b(ln_sv, ind=["population"]), reason=need(bench, "benchmark"))
    for name, cid in (("w/o Refinement", "LN15"), ("w/o Consensus", "LN16"), ("w/o IPSI", "LN17"),
                      ("w/o MSD", "LN19")):
        add(cid, ab(name), ab("UrbanLN"), reason=need(abl, "ablations"))
    full = ab("UrbanLN")
    drop = {k: {s: full[s] - ab(k).get(s, np.nan) for s in full} for k in ("w/o IPSI", "w/o Refinement")}
    add("LN18", drop["w/o IPSI"], drop["w/o Refinement"], "a>b", reason=need(abl, "ablations"))
    for mu in ("0.3", "0.4", "0.6"):
        add("LN20", ab("mu=0.5"), ab(f"mu={mu}"), "a>b", f"vs mu={mu}", need(abl, "ablations"))
    for cid, why in CHECKED_ELSEWHERE.items():
        add(cid, None, None, reason=f"not testable here: {why}")
    out = pd.DataFrame(rows)
    measured = set(out["claim_id"])
    for c in claims.itertuples():
        if c.claim_id not in measured:
            out = pd.concat([out, pd.DataFrame([{"claim_id": c.claim_id, "a": None, "b": None,
                                                 "reason": f"not testable here: {c.testable_here_note}"}])],
                            ignore_index=True)
    return out
