"""The experiments of the ``full`` results tier, registered on import; :func:`load_all` lists them.

Each states its own re-run tolerance (GPU and CPU kernels differ in the last bits) and, when its
units consume one city's and seed's runs, the group that keeps them together (see the runner).
"""

from __future__ import annotations

import numpy as np

from urbanlib.baselines import NotAvailable, run_baseline
from urbanlib.baselines.autoencoder import AutoencoderConfig
from urbanlib.baselines.base import BaselineInputs
from urbanlib.baselines.read import READConfig
from urbanlib.baselines.resnet import ResNetConfig
from urbanlib.baselines.simclr import SimCLRConfig
from urbanlib.baselines.tile2vec import Tile2VecConfig
from urbanlib.baselines.urbanvlp import UrbanVLPConfig
from urbanlib.data import stats, synthcity
from urbanlib.data.synthcity import PROFILES
from urbanlib.eval.probe import ProbeConfig, fit_probes
from urbanlib.experiments.ablations import run_ablations
from urbanlib.experiments.benchmark import SUPERVISED, run_benchmark
from urbanlib.experiments.caption_probes import caption_probe_rows
from urbanlib.experiments.transfer import transfer_scores
from urbanlib.pipeline.city import SPLITS, open_city  # every probe-based unit scores both splits
from urbanlib.pipeline.features import pretraining_record, run_features
from urbanlib.pipeline.hparams import DEV_CITY, DEV_SEED, GRIDS, candidate_scores, choose, selection_split
from urbanlib.pipeline.urbanclip import pretrain_urbanclip
from urbanlib.pipeline.urbanln import pretrain_stage0, pretrain_urbanln
from urbanlib.results.store import read_results
from urbanlib.scales import get_scale

from .registry import EXPERIMENTS, Experiment, NotReady, register

BOOK_CITY = "synth-ring"  # the city whose pages make book runs live (notebooks/runs.yml)


def _synthcity_stats(config: dict, seed: int, scale: str) -> list[dict]:
    """Text-free statistics of one generated city: what SynthCity is calibrated against."""
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
    return [(f"{p}-s{s}", {"profile": p}, s) for p in PROFILES for s in range(get_scale(scale).pretrain_seeds)]


register(Experiment(
    name="synthcity_stats", run=_synthcity_stats, plan=_synthcity_plan, rtol=1e-9, atol=1e-12,
    description="Moran's I, mean/std of ln(y+1) and missingness per indicator, per SynthCity profile and seed",
))


def _caption_probes(config: dict, seed: int, scale: str) -> list[dict]:
    """Caption-only probes of one generated city and split seed (no pretraining): the real-captions candidates."""
    cities = {split: open_city(config["city"], scale, seed, split=split, progress=False) for split in SPLITS}
    return [{"city": config["city"], **row} for row in caption_probe_rows(cities)]


def _caption_probes_plan(scale: str):
    return [(f"{p}-s{s}", {"city": p}, s) for p in PROFILES for s in range(get_scale(scale).pretrain_seeds)]


register(Experiment(
    name="caption_probes", run=_caption_probes, plan=_caption_probes_plan, rtol=1e-4, atol=1e-5,
    verify_in_ci=False,  # MiniLM embeddings and MLP heads on a full-scale city: minutes, verified by the slow test
    description="Caption-only probes per SynthCity profile and seed, short and long captions, both splits: "
                "TF-IDF + ridge, MiniLM + ridge, TF-IDF ++ MiniLM + ridge, MiniLM + MLP probe, and the one "
                "validation chooses (one-SE rule, as on the Real captions page); no pretraining",
))


BASELINE_FAMILIES = {  # learning-rate family -> (baseline it trains, the config whose for_scale sizes it)
    "Autoencoder": ("Autoencoder", AutoencoderConfig),
    "Tile2Vec": ("Tile2Vec", Tile2VecConfig),
    "READ": ("READ", READConfig),
    "ResNet-18 land-use": ("ResNet-18 (land-use stand-in)", ResNetConfig),
    "UrbanVLP": ("UrbanVLP", UrbanVLPConfig),
}


def _selection(config: dict, seed: int, scale: str) -> list[dict]:
    """One learning-rate candidate of one family on the development city, scored on the probe's validation regions."""
    family, lr = config["family"], float(config["lr"])
    city = open_city(config["city"], scale, seed, progress=False)
    info = {}
    if family == "UrbanCLIP":
        run = pretrain_urbanclip(city, progress=False, train_overrides={"lr": lr})
        feats, info = run_features(run, city.tensors), run.info
    elif family == "UrbanLN stage 0":
        run = pretrain_stage0(scale=city.scale, seed=seed, progress=False, lr=lr)
        feats, info = run_features(run, city.tensors), run.info
    elif family == "UrbanLN":
        scores = candidate_scores(read_results("selection"))
        scores = scores[(scores["family"] == "UrbanLN stage 0") & (scores["scale"] == scale)]
        stage0 = choose(scores, scale)
        if set(scores["lr"]) < set(GRIDS["UrbanLN stage 0"]):
            raise NotReady("UrbanLN's candidates fine-tune the chosen stage 0: stage 0's candidates come first")
        run = pretrain_urbanln(city, progress=False, lr=lr, stage0_lr=stage0["UrbanLN stage 0"])
        feats, info = run_features(run, city.tensors), run.info
    elif family == "SimCLR ViT":
        out = run_baseline("UrbanViT", BaselineInputs.from_city(city),
                           SimCLRConfig.for_scale(city.scale, lr=lr))
        feats, info = out.features, out.info.get("training", {})
    elif family in BASELINE_FAMILIES:
        name, config_cls = BASELINE_FAMILIES[family]
        out = run_baseline(name, BaselineInputs.from_city(city, supervised=name in SUPERVISED),
                           config_cls.for_scale(city.scale, lr=lr))
        feats, info = out.features, out.info["training"]
    else:
        raise KeyError(f"unknown family {family!r}")
    res = fit_probes(feats, city.ds.log_targets(), selection_split(city.split), list(range(city.scale.probe_seeds)),
                     ProbeConfig.for_scale(city.scale), indicators=city.ds.indicators)
    r2 = res.metrics[res.metrics["metric"] == "R2"].groupby("indicator")["value"].mean()
    task = f"lr={lr:g}"
    rows = [{"city": config["city"], "model": family, "task": task, "metric": f"val_R2/{ind}", "value": float(v)}
            for ind, v in r2.items()]
    rows.append({"city": config["city"], "model": family, "task": task, "metric": "val_r2", "value": float(r2.mean())})
    for k in ("best_val_loss", "steps", "best_step", "cpu_s"):
        if info.get(k) is not None:
            rows.append({"city": config["city"], "model": family, "task": task, "metric": k, "value": float(info[k])})
    if info.get("stopped_by"):
        rows.append({"city": config["city"], "model": family, "task": task, "metric": "stopped_by_patience",
                     "value": float(info["stopped_by"] == "patience")})
    return rows


def _selection_plan(scale: str):
    # the cheap families first (their units also measure the tier's costs early); stage 0 before the
    # UrbanLN fine-tuning it feeds
    order = ["UrbanCLIP", "SimCLR ViT", "Autoencoder", "Tile2Vec", "READ", "ResNet-18 land-use", "UrbanVLP",
             "UrbanLN stage 0", "UrbanLN"]
    return [(f"{f.replace(' ', '_')}-lr{lr:g}", {"family": f, "lr": lr, "city": DEV_CITY}, DEV_SEED)
            for f in order for lr in GRIDS[f]]


register(Experiment(
    name="selection", run=_selection, plan=_selection_plan, rtol=1e-4, atol=1e-5, verify_in_ci=False,
    description="Learning-rate candidates per method family on the development city and seed: the probe's "
                "R2 on validation regions (never test), with the run's length and stopping reason",
))


BENCHMARK_GROUPS = {  # one resumable unit per (city, seed, group): a pretraining run with all that probes it
    "urbanclip": ["UrbanCLIP", "UrbanCLIP (random init)", "Captions only (MiniLM, short)",
                  "Captions only (MiniLM, long)", "UrbanCLIP + captions (fusion)"],
    "urbanln": ["UrbanLN (satellite)", "UrbanLN (street)", "UrbanLN stage 0 (satellite)", "UrbanLN stage 0 (street)",
                "CLIP (random init, satellite)", "CLIP (random init, street)"],
    # the baselines in two units of at most ~45 CPU-minutes: the ViT family (three SimCLR ViTs and
    # UrbanVLP's two) is about 45 minutes alone, the conv nets and fixed encoders about 15
    "baselines": ["PCA", "Autoencoder", "ResNet-18 (random)", "ResNet-18 (land-use stand-in)", "ResNet-18 (ImageNet)",
                  "Tile2Vec", "READ", "MuseCL", "RemoteCLIP"],
    "baselines-vit": ["PG-SimCLR", "UrbanViT", "Text-SimCLR", "UrbanVLP"],
    # the baselines trained from scratch, at their run's initialisation (no training: a few CPU-minutes),
    # in a unit of their own: added to "baselines", they would be missing from its units stored before
    "twins": ["Autoencoder (random init)", "Tile2Vec (random init)", "READ (random init)", "UrbanVLP (random init)"],
}


def _pretraining_rows(city, feats: dict, seed: int) -> list[dict]:
    """``results/pretraining.csv`` rows of the runs behind the probed features (once per run).

    Pretraining runs (features with a ``.run``) and trained baselines (``info["training"]``, their
    facts as :func:`urbanlib.baselines.training.training_facts` wrote them, with ``cka_to_init``
    over all regions). A supervised baseline's run depends on the split's labels; the features here
    are those of ``city``'s split, named in its ``variant``.
    """
    rows, seen = [], set()
    for name, f in feats.items():
        run = getattr(f, "run", None)
        info = getattr(f, "info", None) or {}
        if run is None:
            t = info.get("training")
            if isinstance(t, dict):
                rows.append({"table": "pretraining", "model": name,
                             "variant": f"labels of the {city.split.name} split" if name in SUPERVISED else "",
                             "city": city.name, "seed": seed, "protocol": city.protocol, "lr": t.get("lr"),
                             "steps": t.get("steps"), "best_step": t.get("best_step"), "step_cap": t.get("step_cap"),
                             "best_val_loss": t.get("best_val_loss"), "stopped_by": t.get("stopped_by"),
                             "cka_to_init": info.get("cka_to_init"), "train_cpu_s": t.get("cpu_s")})
            continue
        if (run.run_dir, f.info.get("imagery")) in seen:
            continue
        seen.add((run.run_dir, f.info.get("imagery")))
        rows.append(pretraining_record(run, city.tensors, name, city.name, seed, protocol=city.protocol,
                                       imagery=f.info.get("imagery", "satellite")))
    return rows


def _benchmark(config: dict, seed: int, scale: str) -> list[dict]:
    """One group of the benchmark's models on one city and pretraining seed, probed on both splits.

    Pretraining is label-free on the city's tiles (the "all-tiles" protocol), so each encoder is
    trained once and probed on the random and the blocked split; rows are the mean and std over
    probe seeds. ``group == "stage0"`` trains the seed's shared stage-0 CLIP (city ``all``).
    """
    if config["group"] == "stage0":
        run = pretrain_stage0(scale=scale, seed=seed, progress=False)
        i = run.info
        return [{"city": "all", "model": "UrbanLN stage 0", "task": "pretraining", "metric": k, "value": float(i[k])}
                for k in ("best_val_loss", "steps", "best_step", "cpu_s")] + [
            {"table": "pretraining", "model": "UrbanLN stage 0", "variant": "", "city": "all", "seed": seed,
             "protocol": "all-tiles", "lr": i["lr"], "steps": i["steps"], "best_step": i["best_step"],
             "step_cap": i["step_cap"], "best_val_loss": i["best_val_loss"], "stopped_by": i["stopped_by"],
             "cka_to_init": float("nan"), "train_cpu_s": i["cpu_s"]}]
    models = BENCHMARK_GROUPS[config["group"]]
    rows, pre = [], []
    for split in SPLITS:
        city = open_city(config["city"], scale, seed, split=split, progress=False)
        metrics, f, _ = run_benchmark(city, models, log=lambda *a: None)
        pre += [r for r in _pretraining_rows(city, f, seed) if r not in pre]  # READ: one run per split
        agg = metrics.groupby(["model", "indicator", "metric"])["value"].agg(["mean", "std"]).reset_index()
        n_test = metrics.groupby("model")["n_test"].max() if "n_test" in metrics else {}
        for r in agg.itertuples():
            for stat in ("mean", "std"):
                rows.append({"city": config["city"], "model": r.model, "task": f"{r.indicator}/{split}",
                             "metric": f"{r.metric}_{stat}", "value": float(getattr(r, stat))})
        for model, n in dict(n_test).items():
            rows.append({"city": config["city"], "model": model, "task": f"all/{split}", "metric": "n_test",
                         "value": float(n)})
        pre += [{"table": "not_available", "model": name, "city": config["city"], "seed": seed, "split": split,
                 "reason": out.reason} for name, out in f.items() if isinstance(out, NotAvailable)]
    return rows + pre


def _profiles_book_city_first() -> list[str]:
    """The SynthCity profiles, the book's live city first: an interrupted run has answered it first."""
    return sorted(PROFILES, key=lambda p: p != BOOK_CITY)


def _group_by(key: str):
    """The runner's group of a unit: (pretraining seed, city rank), the shared stage 0 (city "all") first."""
    def group(config: dict, seed: int) -> tuple:
        city = config[key]
        return (seed, -1 if city == "all" else _profiles_book_city_first().index(city))
    return group


def _benchmark_plan(scale: str):
    n = get_scale(scale).pretrain_seeds
    # seed by seed, the shared stage 0 first: each finished seed adds one unit per city to every claim
    plan = []
    for s in range(n):
        plan.append((f"all-s{s}-stage0", {"city": "all", "group": "stage0"}, s))
        plan += [(f"{p}-s{s}-{g}", {"city": p, "group": g}, s) for p in _profiles_book_city_first()
                 for g in BENCHMARK_GROUPS]
    return plan


register(Experiment(
    name="benchmark", run=_benchmark, plan=_benchmark_plan, group=_group_by("city"), rtol=1e-4, atol=1e-5, verify_in_ci=False, needs_selection=True,
    description="R2/RMSE/MAE (mean and std over probe seeds) of every model and its random-init twin, per "
                "SynthCity profile and pretraining seed, on both splits; task is '<indicator>/<split>'",
))


PROTOCOL_MODELS = {  # benchmark row -> its row in results/protocol.csv: the same model, pretrained under "train-only"
    "UrbanCLIP": "UrbanCLIP [train-only]",
    "UrbanCLIP (random init)": "UrbanCLIP (random init) [train-only]",
}


def _protocol(config: dict, seed: int, scale: str) -> list[dict]:
    """UrbanCLIP and its random-init twin under the stricter "train-only" protocol, on one city and seed.

    The benchmark's UrbanCLIP rows use the papers' "all-tiles" protocol (label-free pretraining on
    every tile); this unit measures what pretraining only on the probe's train regions changes.
    """
    city = open_city(config["city"], scale, seed, split=config["split"], progress=False, protocol="train-only")
    metrics, feats, _ = run_benchmark(city, list(PROTOCOL_MODELS), log=lambda *a: None)
    agg = metrics.groupby(["model", "indicator", "metric"])["value"].agg(["mean", "std"]).reset_index()
    rows = [{"city": config["city"], "model": PROTOCOL_MODELS[r.model], "task": f"{r.indicator}/{config['split']}",
             "metric": f"{r.metric}_{stat}", "value": float(getattr(r, stat))}
            for r in agg.itertuples() for stat in ("mean", "std")]
    return rows + [{**r, "variant": "train-only protocol"} for r in _pretraining_rows(city, feats, seed)]


def _protocol_plan(scale: str):
    return [(f"{BOOK_CITY}-random-s{s}", {"city": BOOK_CITY, "split": "random"}, s)
            for s in range(get_scale(scale).pretrain_seeds)]


register(Experiment(
    name="protocol", run=_protocol, plan=_protocol_plan, group=_group_by("city"), rtol=1e-4, atol=1e-5, verify_in_ci=False,
    needs_selection=True,
    description="UrbanCLIP pretrained only on the probe's train regions ('train-only'), against the tier's "
                "'all-tiles' protocol, on the book's city, random split",
))


def _transfer(config: dict, seed: int, scale: str) -> list[dict]:
    """Transfer R2/RMSE/MAE from one source city to every profile, for the models of the transfer figures."""
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
    return [(f"{p}-s{s}", {"source": p}, s) for p in _profiles_book_city_first() for s in range(get_scale(scale).pretrain_seeds)]


register(Experiment(
    name="transfer", run=_transfer, plan=_transfer_plan, group=_group_by("source"), rtol=1e-4, atol=1e-5, verify_in_ci=False, needs_selection=True,
    description="Cross-city transfer: encoder and probe trained on 'city' (the source), tested on every profile; "
                "task is '<target>/<indicator>'",
))


ABLATION_GROUPS = {  # UrbanCLIP Fig. 4; UrbanLN Fig. 3 and the Table 4 mu sweep, in units of at most ~45 CPU-min
    "urbanclip": (["UrbanCLIP", "w/o refined text", "w/o L_LM", "w/o L_Con", "UrbanViT", "Text-SimCLR"], []),
    "urbanln-a": ([], ["UrbanLN", "w/o Refinement", "w/o Consensus", "w/o IPSI", "stage 0 only (reference)"]),
    "urbanln-b": ([], ["UrbanLN", "w/o MSD", "one captioner (sim-qwen)"]),
    "urbanln-mu": ([], ["UrbanLN", "mu=0.3", "mu=0.4", "mu=0.6"]),  # the book's city only (ONE_CITY_GROUPS)
}
# groups run on the book's city alone (its 3 seeds), to fit the tier's 40 CPU-hours: their claims are
# one-city sweeps, and the verdict table says so
ONE_CITY_GROUPS = ("urbanln-mu",)


def _ablations(config: dict, seed: int, scale: str) -> list[dict]:
    """One group of both papers' ablations on one city and pretraining seed, random split."""
    city = open_city(config["city"], scale, seed, progress=False)
    uc, ln = ABLATION_GROUPS[config["group"]]
    metrics, feats = run_ablations(city, urbanclip=uc, urbanln=ln)
    agg = metrics.groupby(["model", "indicator", "metric"])["value"].agg(["mean", "std"]).reset_index()
    rows = [{"city": config["city"], "model": r.model, "task": f"{r.indicator}/random", "metric": f"{r.metric}_{stat}",
             "value": float(getattr(r, stat))} for r in agg.itertuples() for stat in ("mean", "std")]
    for name, f in feats.items():
        if getattr(f, "run", None) is not None and name not in ("UrbanCLIP", "UrbanLN"):  # those: the benchmark's
            rows.append(pretraining_record(f.run, city.tensors, "UrbanCLIP" if name in uc else "UrbanLN", city.name,
                                           seed, variant=name, protocol=city.protocol))
    return rows


def _ablations_plan(scale: str):
    return [(f"{p}-s{s}-{g}", {"city": p, "group": g}, s) for s in range(get_scale(scale).pretrain_seeds)
            for p in _profiles_book_city_first() for g in ABLATION_GROUPS
            if g not in ONE_CITY_GROUPS or p == BOOK_CITY]


register(Experiment(
    name="ablations", run=_ablations, plan=_ablations_plan, group=_group_by("city"), rtol=1e-4, atol=1e-5, verify_in_ci=False, needs_selection=True,
    description="UrbanCLIP Fig. 4 and UrbanLN Fig. 3 ablations and the Table 4 mu sweep, per profile and seed",
))


def load_all() -> dict[str, Experiment]:
    """The registered experiments (importing this module registered them), in the order they run."""
    return EXPERIMENTS
