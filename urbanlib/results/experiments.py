"""The experiments of the ``full`` results tier (each registers itself on import).

Later issues add training experiments here (pretraining × probe seeds); each states its own
re-run tolerance, since GPU/CPU kernels differ in the last bits.
"""

from __future__ import annotations

import numpy as np

from .registry import Experiment, register

BOOK_CITY = "synth-ring"  # the city whose pages make book runs live (notebooks/runs.yml)


def _synthcity_stats(config: dict, seed: int, scale: str) -> list[dict]:
    """Text-free statistics of one generated city: what SynthCity is calibrated against."""
    from urbanlib.data import stats, synthcity

    ds = synthcity.load_city(config["profile"], scale=scale, seed=seed, progress=False)
    rows = []
    moran = stats.morans_table(ds).set_index("indicator")["morans_i"]
    logs = ds.log_targets()
    for j, ind in enumerate(ds.indicators):
        col = logs[:, j]
        for metric, value in (("morans_i", moran[ind]), ("mean_log", np.nanmean(col)),
                              ("std_log", np.nanstd(col)), ("missing_frac", float(np.isnan(col).mean()))):
            rows.append({"city": config["profile"], "model": "synthcity", "task": ind, "metric": metric,
                         "value": float(value)})
    return rows


def _synthcity_plan(scale: str):
    from urbanlib.data.synthcity import PROFILES
    from urbanlib.scales import get_scale

    return [(f"{p}-s{s}", {"profile": p}, s) for p in PROFILES for s in range(get_scale(scale).pretrain_seeds)]


register(Experiment(
    name="synthcity_stats", run=_synthcity_stats, plan=_synthcity_plan, rtol=1e-9, atol=1e-12,
    description="Moran's I, mean/std of ln(y+1) and missingness per indicator, per SynthCity profile and seed",
))


def _benchmark(config: dict, seed: int, scale: str) -> list[dict]:
    """Every model of the benchmark on one city, split and pretraining seed: mean and std over probe seeds."""
    from urbanlib.pipeline.benchmark import BENCHMARK_MODELS, run_benchmark
    from urbanlib.pipeline.city import open_city

    city = open_city(config["city"], scale, seed, split=config["split"], progress=False)
    metrics, _, _ = run_benchmark(city, BENCHMARK_MODELS, log=lambda *a: None)
    agg = metrics.groupby(["model", "indicator", "metric"])["value"].agg(["mean", "std"]).reset_index()
    rows = []
    for r in agg.itertuples():
        for stat in ("mean", "std"):
            rows.append({"city": config["city"], "model": r.model, "task": f"{r.indicator}/{config['split']}",
                         "metric": f"{r.metric}_{stat}", "value": float(getattr(r, stat))})
    return rows


def _profiles_book_city_first() -> list[str]:
    """The SynthCity profiles, the book's live city first: an interrupted run has answered it first."""
    from urbanlib.data.synthcity import PROFILES

    return sorted(PROFILES, key=lambda p: p != BOOK_CITY)


def _benchmark_plan(scale: str):
    from urbanlib.scales import get_scale

    n = get_scale(scale).pretrain_seeds
    # random split first, one city's seeds together: each finished block already answers the claims
    return [(f"{p}-{split}-s{s}", {"city": p, "split": split}, s)
            for split in ("random", "blocked") for p in _profiles_book_city_first() for s in range(n)]


register(Experiment(
    name="benchmark", run=_benchmark, plan=_benchmark_plan, rtol=1e-4, atol=1e-5, verify_in_ci=False,
    description="R2/RMSE/MAE (mean and std over probe seeds) of every model, per SynthCity profile, split "
                "and pretraining seed; task is '<indicator>/<split>'",
))


def _transfer(config: dict, seed: int, scale: str) -> list[dict]:
    """Transfer R2/RMSE/MAE from one source city to every profile, for the models of the transfer figures."""
    from urbanlib.data.synthcity import PROFILES
    from urbanlib.pipeline.city import open_city
    from urbanlib.pipeline.transfer import transfer_scores

    cities = [open_city(p, scale, seed, progress=False) for p in PROFILES]
    source = next(c for c in cities if c.name == config["source"])
    rows = []
    for model in ("UrbanCLIP", "PG-SimCLR", "UrbanLN (satellite)", "UrbanLN (street)"):
        df = transfer_scores(source, cities, model)
        if df.empty:
            continue
        agg = df.groupby(["target", "indicator", "metric"])["value"].agg(["mean", "std"]).reset_index()
        for r in agg.itertuples():
            for stat in ("mean", "std"):
                rows.append({"city": config["source"], "model": model, "task": f"{r.target}/{r.indicator}",
                             "metric": f"{r.metric}_{stat}", "value": float(getattr(r, stat))})
    return rows


def _transfer_plan(scale: str):
    from urbanlib.scales import get_scale

    return [(f"{p}-s{s}", {"source": p}, s) for p in _profiles_book_city_first() for s in range(get_scale(scale).pretrain_seeds)]


register(Experiment(
    name="transfer", run=_transfer, plan=_transfer_plan, rtol=1e-4, atol=1e-5, verify_in_ci=False,
    description="Cross-city transfer: encoder and probe trained on 'city' (the source), tested on every profile; "
                "task is '<target>/<indicator>'",
))


def _ablations(config: dict, seed: int, scale: str) -> list[dict]:
    """Every ablation of both papers (and the mu sweep) on one city and pretraining seed, random split."""
    from urbanlib.pipeline.ablations import run_ablations
    from urbanlib.pipeline.city import open_city

    city = open_city(config["city"], scale, seed, progress=False)
    metrics, _ = run_ablations(city)
    agg = metrics.groupby(["model", "indicator", "metric"])["value"].agg(["mean", "std"]).reset_index()
    return [{"city": config["city"], "model": r.model, "task": f"{r.indicator}/random", "metric": f"{r.metric}_{stat}",
             "value": float(getattr(r, stat))} for r in agg.itertuples() for stat in ("mean", "std")]


def _ablations_plan(scale: str):
    from urbanlib.scales import get_scale

    return [(f"{p}-s{s}", {"city": p}, s) for p in _profiles_book_city_first() for s in range(get_scale(scale).pretrain_seeds)]


register(Experiment(
    name="ablations", run=_ablations, plan=_ablations_plan, rtol=1e-4, atol=1e-5, verify_in_ci=False,
    description="UrbanCLIP Fig. 4 and UrbanLN Fig. 3 ablations and the Table 4 mu sweep, per profile and seed",
))
