"""Analyses of issue 8 on synthetic arrays: clusters, cross-city similarity, transfer, efficiency, verdicts."""

import math
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from scipy import stats

from urbanlib.analysis import clusters, efficiency, similarity, transfer, verdicts

# ------------------------------------------------------------------------------------------ clusters


def _blobs(sizes=(40, 30, 20), dim=12, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(len(sizes), dim))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[truth] + rng.normal(0, spread, size=(len(truth), dim))
    perm = rng.permutation(len(truth))
    return x[perm], truth[perm]


def test_planted_clusters_are_recovered_and_numbered_by_size():
    x, truth = _blobs()
    labels = clusters.latent_clusters(x, k=3, seed=0)
    q = clusters.cluster_quality(labels, truth, np.ones(len(x)))
    assert q["nmi"] > 0.99
    assert q["nmi_p"] < 0.01
    # ids follow decreasing cluster size: the 40-blob is cluster 0, the 20-blob cluster 2
    assert np.array_equal(np.bincount(labels), [40, 30, 20])
    assert np.array_equal(labels, truth)


def test_random_features_give_nmi_near_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 8))
    zones = rng.integers(0, 3, size=150)
    q = clusters.cluster_quality(clusters.latent_clusters(x, k=3, seed=0), zones, rng.lognormal(5, 1, 150))
    assert q["nmi"] < 0.05
    assert abs(q["nmi"] - q["nmi_null_mean"]) < 0.03
    assert q["nmi_p"] > 0.01


def test_nan_rows_are_left_out():
    x, truth = _blobs()
    x[[0, 5]] = np.nan
    labels = clusters.latent_clusters(x, k=3, seed=0)
    assert labels[0] == labels[5] == -1
    assert (labels[np.isfinite(x).all(axis=1)] >= 0).all()
    zones = truth.astype(object)
    zones[[0, 5]] = "nowhere"  # would lower the NMI if the unclustered rows were counted
    q = clusters.cluster_quality(labels, zones, np.ones(len(x)))
    assert q["nmi"] > 0.99 and q["n_regions"] == len(x) - 2


def test_population_separation_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 1, -1])
    pop = np.array([10.0, 20.0, np.nan, 1000.0, 3000.0, 2000.0, 5.0])
    q = clusters.cluster_quality(labels, None, pop)
    y = np.log1p(pop[[0, 1, 3, 4, 5]])
    g0, g1 = y[:2], y[2:]
    eta2 = (2 * (g0.mean() - y.mean()) ** 2 + 3 * (g1.mean() - y.mean()) ** 2) / ((y - y.mean()) ** 2).sum()
    assert q["eta2"] == pytest.approx(eta2)
    h, p = stats.kruskal(g0, g1)
    assert q["kruskal_h"] == pytest.approx(h) and q["kruskal_p"] == pytest.approx(p)
    assert math.isnan(q["nmi"])
    pc = q["per_cluster"].set_index("cluster")
    assert pc.loc[0, "n"] == 3 and pc.loc[0, "median_population"] == 15.0
    assert pc.loc[1, "median_ln_population"] == pytest.approx(np.log1p(2000.0))


def test_eta2_high_when_population_follows_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    sep = clusters.cluster_quality(labels, None, np.exp(labels * 3 + rng.normal(0, 0.2, 90)))
    mixed = clusters.cluster_quality(labels, None, np.exp(rng.normal(0, 1, 90)))
    assert sep["eta2"] > 0.95 and sep["kruskal_p"] < 1e-10
    assert mixed["eta2"] < 0.15


def test_cluster_quality_rejects_bad_shapes():
    with pytest.raises(ValueError, match="population_density shape"):
        clusters.cluster_quality(np.zeros(3, int), None, np.ones(4))
    with pytest.raises(ValueError, match="need at least k=3"):
        clusters.latent_clusters(np.full((5, 2), np.nan), k=3)


def test_cluster_map_puts_labels_at_grid_cells():
    rows, cols = np.divmod(np.arange(12), 4)
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 0, 1, 1, -1, 2])
    fig = clusters.plot_cluster_map(labels, rows, cols)
    assert isinstance(fig, Figure)
    grid = np.ma.filled(fig.axes[0].images[0].get_array().astype(float), np.nan)
    assert grid.shape == (3, 4)
    assert grid[0, 2] == 1 and grid[1, 0] == 2 and grid[2, 3] == 2
    assert np.isnan(grid[2, 2])  # the unclustered region stays blank


def test_population_kde_draws_one_curve_per_cluster():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    fig = clusters.plot_population_kde(labels, np.exp(rng.normal(labels, 0.5)))
    assert isinstance(fig, Figure)
    assert len(fig.axes[0].get_legend().get_texts()) == 3


def test_cluster_samples_drawn_by_seed_from_valid_images():
    n = 30
    images = np.zeros((n, 3, 4, 4), np.uint8)
    labels = np.repeat([0, 1, 2], 10)
    valid = np.ones(n, bool)
    valid[:5] = False

    def picks(seed):
        fig = clusters.plot_cluster_samples(images, labels, valid, n_per_cluster=2, seed=seed)
        return [ax.get_title() for ax in fig.axes if ax.get_title()]

    a, b, c = picks(0), picks(0), picks(1)
    assert a == b and a != c
    assert len(a) == 6
    drawn = {int(t[1:]) for t in a}
    assert not drawn & set(range(5))


def test_images_from_tensors_picks_first_valid_street_view():
    from urbanlib.pipeline.tensors import RegionTensors

    street = np.zeros((2, 3, 3, 2, 2), np.uint8)
    street[0, 1] = 7
    street[1, 0] = 9
    mask = np.array([[False, True, True], [True, False, False]])
    t = RegionTensors(np.array(["a", "b"]), np.ones((2, 3, 2, 2), np.uint8), np.array([True, False]), street, mask)
    img, ok = clusters.images_from_tensors(t, "street")
    assert img[0].max() == 7 and img[1].max() == 9 and ok.all()
    img, ok = clusters.images_from_tensors(t, "satellite")
    assert ok.tolist() == [True, False]


@pytest.mark.slow  # umap-learn's numba JIT costs ~70 s per fresh process on this machine
def test_umap_view_is_seeded():
    x, truth = _blobs(sizes=(20, 20, 20), dim=6)
    x[3] = np.nan
    a = clusters.umap_embedding(x, n_neighbors=8, seed=0)
    b = clusters.umap_embedding(x, n_neighbors=8, seed=0)
    assert np.allclose(a, b, equal_nan=True) and np.isnan(a[3]).all() and np.isfinite(a[4]).all()
    assert isinstance(clusters.plot_umap(x, truth, n_neighbors=8), Figure)


# ---------------------------------------------------------------------------------------- similarity


def test_top_matches_hand_case():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, 1.0]])
    t = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 0.1], [np.nan, np.nan], [5.0, 0.0]])
    idx, sim = similarity.top_matches(q, t, k=2)
    assert idx[0].tolist() == [4, 2]  # cos 1.0, then 0.9988; the NaN target is never matched
    assert sim[0, 0] == pytest.approx(1.0) and sim[0, 1] == pytest.approx(2 / math.hypot(2, 0.1))
    assert idx[1].tolist() == [0, 1]
    assert idx[2].tolist() == [-1, -1] and np.isnan(sim[2]).all()


def test_top_matches_ties_go_to_lower_index():
    idx, _ = similarity.top_matches(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0], [3.0, 0.0], [1.0, 0.0]]), k=2)
    assert idx[0].tolist() == [1, 2]
    with pytest.raises(ValueError, match="k=4"):
        similarity.top_matches(np.ones((1, 2)), np.ones((3, 2)), k=4)


def test_draw_queries_is_seeded_and_respects_eligibility():
    eligible = np.arange(50) % 2 == 0
    a = similarity.draw_queries(10, 50, seed=3, eligible=eligible)
    assert np.array_equal(a, similarity.draw_queries(10, 50, seed=3, eligible=eligible))
    assert not np.array_equal(a, similarity.draw_queries(10, 50, seed=4, eligible=eligible))
    assert len(set(a)) == 10 and eligible[a].all()
    with pytest.raises(ValueError, match="cannot draw"):
        similarity.draw_queries(30, 50, seed=0, eligible=eligible)


def _three_cities(n=40, seed=0):
    """Cities whose regions have a latent level z; ln indicators follow z."""
    rng = np.random.default_rng(seed)
    cities = np.repeat(["A", "B", "C"], n)
    z = rng.uniform(0, 1, 3 * n)
    logs = pd.DataFrame({"population": 3 + 4 * z + rng.normal(0, 0.1, 3 * n),
                         "gdp": 2 + 3 * z + rng.normal(0, 0.1, 3 * n)})
    angle = z * np.pi / 2
    planted = np.c_[np.cos(angle), np.sin(angle)] + rng.normal(0, 0.01, (3 * n, 2))
    noise = rng.normal(size=(3 * n, 2))
    return cities, logs, planted, noise


def test_cross_city_matches_never_stay_in_the_query_city():
    cities, _, planted, _ = _three_cities()
    queries = similarity.draw_queries(6, len(cities), seed=0)
    m = similarity.cross_city_matches(planted, cities, queries, k=2)
    assert len(m) == 6 * 2 * 2
    assert (m["query_city"] != m["target_city"]).all()
    assert (cities[m["match"]] == m["target_city"]).all()
    assert (m.groupby(["query", "target_city"])["similarity"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_planted_features_give_smaller_gaps_than_random_pairs():
    cities, logs, planted, noise = _three_cities()
    queries = similarity.draw_queries(20, len(cities), seed=0)
    gap = similarity.match_gap({"planted": planted, "noise": noise}, cities, logs, queries, n_boot=300,
                               reference="noise", seed=0)
    assert list(gap.columns[:5]) == ["model", "indicator", "mean_gap", "ci_low", "ci_high"]
    assert set(gap["model"]) == {"planted", "noise", similarity.RANDOM}
    g = gap.set_index(["model", "indicator"])
    for ind in ("population", "gdp"):
        p, r = g.loc[("planted", ind)], g.loc[(similarity.RANDOM, ind)]
        assert p["mean_gap"] < 0.5 * r["mean_gap"]
        assert p["diff_ci_high"] < 0 and p["ref_ci_high"] < 0
        assert p["ci_low"] <= p["mean_gap"] <= p["ci_high"]
        nz = g.loc[("noise", ind)]
        assert nz["diff_ci_low"] < 0.3 and abs(nz["diff_vs_random"]) < 0.5 * r["mean_gap"]
        assert np.isnan(r["diff_vs_random"]) and np.isnan(nz["diff_vs_reference"])  # no self-comparisons
    assert (g["n_queries"] == 20).all()


def test_match_gap_skips_missing_indicators():
    cities, logs, planted, _ = _three_cities()
    logs.loc[:, "gdp"] = np.nan
    gap = similarity.match_gap({"planted": planted}, cities, logs, np.array([0, 50, 100]), n_boot=50)
    g = gap.set_index(["model", "indicator"])
    assert g.loc[("planted", "gdp"), "n_queries"] == 0 and np.isnan(g.loc[("planted", "gdp"), "mean_gap"])
    assert g.loc[("planted", "population"), "n_queries"] == 3


def test_plot_matches_shows_query_and_matches():
    cities, logs, planted, _ = _three_cities(n=10)
    m = similarity.cross_city_matches(planted, cities, np.array([3]), k=1)
    images = np.random.default_rng(0).integers(0, 255, (30, 3, 8, 8), dtype=np.uint8)
    captions = ["a long caption about roads and green areas " * 10] * 30
    fig = similarity.plot_matches(m, images, np.expm1(logs), captions=captions)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 3 and "query" in titles[0] and titles[1].count("cos =") == 1
    caption_text = fig.axes[3].texts[0].get_text()
    assert "…" in caption_text and len(caption_text.split("\n\n")[0]) < 200


# ------------------------------------------------------------------------------------------ transfer


def _transfer_table(shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for ind, base in (("population", 0.5), ("gdp", 0.2)):
        for s in "ABC":
            for t in "ABC":
                for seed_ in (0, 1):
                    rows.append({"source": s, "target": t, "indicator": ind, "seed": seed_,
                                 "R2": base + shift + (0.2 if s == t else 0) + rng.normal(0, 0.01)})
    return pd.DataFrame(rows)


def test_heatmap_annotates_seed_means_with_shared_limits():
    df = _transfer_table()
    fig = transfer.plot_transfer_heatmap(df, indicator="gdp")
    ax = fig.axes[0]
    means = df[df.indicator == "gdp"].groupby(["source", "target"])["R2"].mean()
    shown = [float(t.get_text()) for t in ax.texts]
    assert shown[1] == pytest.approx(means[("A", "B")], abs=0.005)  # row A, column B
    mesh = ax.collections[0]
    all_means = df.groupby(["indicator", "source", "target"])["R2"].mean()
    assert mesh.norm.vmin == pytest.approx(all_means.min()) and mesh.norm.vmax == pytest.approx(all_means.max())
    with pytest.raises(ValueError, match="name one"):
        transfer.plot_transfer_heatmap(df)
    with pytest.raises(ValueError, match="lacks column"):
        transfer.plot_transfer_heatmap(df.drop(columns="R2"), indicator="gdp")


def test_long_metric_value_rows_are_accepted():
    wide = _transfer_table()
    long = wide.rename(columns={"R2": "value"}).assign(metric="R2")
    long = pd.concat([long, long.assign(metric="RMSE", value=9.0)])
    a = transfer.compare_transfer(wide, wide.assign(R2=wide.R2 - 0.1))
    b = transfer.compare_transfer(long, wide.assign(R2=wide.R2 - 0.1))
    assert a.equals(b)  # the RMSE rows were not mixed in
    with pytest.raises(ValueError, match="no metric 'MAE'"):
        transfer.plot_transfer_heatmap(long, value="MAE", indicator="gdp")


def test_comparison_figure_and_counts():
    a, b = _transfer_table(shift=0.05), _transfer_table(seed=1)
    fig = transfer.plot_transfer_comparison({"UrbanCLIP": a, "PG-SimCLR": b}, indicators=["population"])
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["UrbanCLIP: population", "PG-SimCLR: population",
                                                 "UrbanCLIP − PG-SimCLR: population"]
    lims = {(ax.collections[0].norm.vmin, ax.collections[0].norm.vmax) for ax in panels[:2]}
    both = pd.concat([a.assign(m="a"), b.assign(m="b")])
    means = both[both.indicator == "population"].groupby(["m", "source", "target"])["R2"].mean()
    assert len(lims) == 1  # both model panels on one colour scale
    assert lims.pop() == pytest.approx((means.min(), means.max()))
    diff = [float(t.get_text()) for t in panels[2].texts]
    assert np.mean(diff) == pytest.approx(0.05, abs=0.02)
    summary = transfer.compare_transfer(a, b).set_index("indicator")
    assert summary.loc["all", "n_pairs"] == 12 and summary.loc["all", "n_a_better"] == 12
    assert summary.loc["gdp", "mean_a"] - summary.loc["gdp", "mean_b"] == pytest.approx(0.05, abs=0.02)
    with_diag = transfer.compare_transfer(a, b, include_diagonal=True).set_index("indicator")
    assert with_diag.loc["all", "n_pairs"] == 18


# ---------------------------------------------------------------------------------------- efficiency


def _tiny_builders():
    import open_clip

    from urbanlib.models import create_model
    from urbanlib.models.ipsi import stretch_clip
    from urbanlib.models.urbanln import UrbanLN, UrbanLNConfig

    def clip(device):
        return open_clip.CLIP(embed_dim=16, vision_cfg={"image_size": 16, "patch_size": 8, "width": 32, "layers": 1,
                                                        "head_width": 16},
                              text_cfg={"context_length": 77, "vocab_size": 300, "width": 32, "heads": 2,
                                        "layers": 1})

    return {"urbanclip-tiny": lambda d: create_model("urbanclip-tiny"), "clip": clip,
            "clip+ipsi": lambda d: stretch_clip(clip(d)),
            "urbanln": lambda d: UrbanLN(clip(d), UrbanLNConfig(queue_size=8))}


def test_count_parameters_counts_frozen_separately():
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    m[0].weight.requires_grad_(False)
    assert efficiency.count_parameters(m) == {"total": 11, "trainable": 5, "frozen": 6}


def test_meta_counts_equal_real_counts_on_tiny_models():
    meta = efficiency.parameter_counts(_tiny_builders(), device="meta")
    real = efficiency.parameter_counts(_tiny_builders(), device="cpu")
    cols = ["total", "trainable", "frozen", "image_encoder"]
    assert meta[cols].equals(real[cols])
    r = real.set_index("model")
    assert r.loc["clip+ipsi", "total"] - r.loc["clip", "total"] == (248 - 77) * 32
    assert r.loc["urbanln", "total"] == 2 * r.loc["clip+ipsi", "total"]  # student + EMA teacher
    assert r.loc["urbanln", "trainable"] == r.loc["clip+ipsi", "total"]


def test_paper_size_counts_without_allocating():
    counts = efficiency.paper_size_parameter_counts().set_index("model")
    assert (counts["built_on"] == "meta").all()
    clip = counts.loc["CLIP ViT-B/16", "total"]
    assert clip == 149_620_737  # open_clip's published size of ViT-B-16 (149.62 M)
    assert counts.loc["CLIP ViT-B/16 + IPSI", "total"] == clip + (248 - 77) * 512
    ln = counts.loc["UrbanLN (paper)"]
    assert ln["total"] == 2 * counts.loc["CLIP ViT-B/16 + IPSI", "total"] and ln["frozen"] == ln["trainable"]
    uc = counts.loc["UrbanCLIP (urbanclip-paper)"]
    assert uc["total"] == uc["trainable"] and uc["image_encoder"] > 85_000_000  # ViT-B/16 tower ~ 86 M


def test_measure_throughput_reports_its_conditions(monkeypatch):
    # a scripted clock (a real sleep's overshoot on a loaded machine is unbounded): the untimed warmup call
    # takes 1 s and the timed ones 0.01, 0.05 and 0.02 s, so only the median of the timed calls gives 4 / 0.02
    clock, durations, grad_seen = [0.0], iter([1.0, 0.01, 0.05, 0.02]), []
    monkeypatch.setattr(efficiency, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def fn(batch):
        grad_seen.append(torch.is_grad_enabled())
        clock[0] += next(durations)

    before = torch.get_num_threads()
    r = efficiency.measure_throughput(fn, torch.zeros(4, 3, 8, 8), warmup=1, repeats=3, threads=1)
    assert not any(grad_seen) and len(grad_seen) == 4
    assert r["images_per_s"] == pytest.approx(4 / 0.02) and r["min_s"] == pytest.approx(0.01)
    assert (r["batch_size"], r["resolution"], r["threads"], r["device"]) == (4, "8x8", 1, "cpu")
    assert torch.get_num_threads() == before
    monkeypatch.undo()  # the real clock again
    s = efficiency.measure_throughput(lambda b: None, {"image": torch.zeros(2, 3, 3, 8, 8)}, warmup=0, repeats=1)
    assert s["images_per_batch"] == 6 and s["batch_size"] == 2


def test_throughput_table_measures_every_model_in_one_run():
    models = {"fast": (lambda b: None, torch.zeros(2, 3, 8, 8)),
              "slow": (lambda b: time.sleep(0.02), torch.zeros(2, 3, 8, 8))}
    # five repeats: the median shrugs off a descheduled call or two on a loaded machine
    table = efficiency.throughput_table(models, warmup=0, repeats=5, threads=1).set_index("model")
    assert table.loc["fast", "images_per_s"] > 10 * table.loc["slow", "images_per_s"]
    assert (table["threads"] == 1).all() and (table["resolution"] == "8x8").all()


def test_plot_efficiency_returns_figure():
    counts = pd.DataFrame({"model": ["a", "b"], "total": [1e6, 2e6], "trainable": [1e6, 1e5]})
    speed = pd.DataFrame({"model": ["a", "b"], "images_per_s": [10.0, 5.0], "device": ["cpu", "cpu"]})
    fig = efficiency.plot_efficiency(counts, speed)
    assert isinstance(fig, Figure) and len(fig.axes) == 2


@pytest.mark.slow
def test_paper_config_real_build_matches_meta_counts():
    meta = efficiency.paper_size_parameter_counts("meta")
    real = efficiency.paper_size_parameter_counts("cpu")
    assert meta[["total", "trainable", "frozen", "image_encoder"]].equals(real[["total", "trainable", "frozen",
                                                                                "image_encoder"]])


@pytest.mark.slow
def test_urbanclip_paper_single_training_step():
    from urbanlib.models import create_model

    model = create_model("urbanclip-paper")
    cfg = model.cfg
    batch = {"image": torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size),
             "text": torch.randint(1, 1000, (2, cfg.context_length))}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = model.visual.conv1.weight.detach().clone()
    out = model(batch)
    out["loss"].backward()
    opt.step()
    assert torch.isfinite(out["loss"]) and {"contrastive_loss", "caption_loss"} <= set(out)
    assert not torch.equal(before, model.visual.conv1.weight)


@pytest.mark.slow
def test_urbanln_paper_single_training_step():
    from urbanlib.models.urbanln import UrbanLN, UrbanLNConfig

    model = UrbanLN(efficiency._clip_b16("cpu"), UrbanLNConfig(queue_size=16))
    batch = {"image": torch.randn(2, 3, 224, 224), "text": model.tokenize(["a road", "a park " * 100]).tokens,
             "region_index": torch.tensor([0, 1])}
    opt = model.make_optimizer(lr=1e-4)
    teacher_before = next(model.msd.teacher.parameters()).detach().clone()
    out = model(batch)
    out["loss"].backward()
    opt.step()
    model.after_optimizer_step(0)
    assert model.context_length == 248 and torch.isfinite(out["loss"])
    assert not torch.equal(teacher_before, next(model.msd.teacher.parameters()))
    assert model.msd.queue.n_filled == 2


# ------------------------------------------------------------------------------------------ verdicts


def test_paired_ci_matches_student_t_by_hand():
    a, b = [0.5, 0.6, 0.7, 0.55], [0.4, 0.45, 0.5, 0.5]
    ci = verdicts.paired_difference_ci(a, b, "a>b")
    d = np.subtract(a, b)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert ci["mean_diff"] == pytest.approx(0.125)
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((0.125 - half, 0.125 + half))
    ref = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((ref.low, ref.high))
    assert ci["relative_diff_pct"] == pytest.approx(100 * 0.125 / np.mean(b))
    assert verdicts.verdict(ci) == "supported"
    ci90 = verdicts.paired_difference_ci(a, b, "a>b", level=0.9)
    assert ci90["ci_high"] - ci90["ci_low"] < ci["ci_high"] - ci["ci_low"]


def test_verdict_directions():
    up, down, flat = [1.0, 1.1, 1.2], [0.0, 0.1, 0.2], [0.0, 1.0, -1.0]
    zero = [0.0, 0.0, 0.0]
    assert verdicts.verdict(verdicts.paired_difference_ci(up, zero, "a>b")) == "supported"
    assert verdicts.verdict(verdicts.paired_difference_ci(up, zero, "a<b")) == "contradicted"
    assert verdicts.verdict(verdicts.paired_difference_ci(zero, up, "a<b (RMSE)")) == "supported"
    assert verdicts.verdict(verdicts.paired_difference_ci(flat, zero, "a>b")) == "not supported"
    assert verdicts.verdict(verdicts.paired_difference_ci(down, [0.1, 0.2, 0.3], "a>b (36/36)")) == "contradicted"
    with pytest.raises(ValueError, match="two-quantity"):
        verdicts.paired_difference_ci(up, zero, "best_at")


def test_fewer_than_three_seeds_is_not_testable():
    ci = verdicts.paired_difference_ci([0.5, 0.6], [0.1, 0.2], "a>b")
    assert not ci["testable"] and ci["reason"] == verdicts.NEEDS_SEEDS and "≥3" in ci["reason"]
    assert ci["mean_diff"] == pytest.approx(0.4) and math.isnan(ci["ci_low"])
    assert verdicts.verdict(ci) == "not testable here"


def test_seed_keyed_values_pair_on_seeds():
    a = {0: 1.0, 1: 2.0, 2: 3.0, 7: 100.0}
    b = {2: 2.5, 1: 1.5, 0: 0.5}
    ci = verdicts.paired_difference_ci(a, b, "a>b")
    assert ci["n_units"] == 3 and ci["mean_diff"] == pytest.approx(0.5) and ci["sd_diff"] == 0
    assert verdicts.verdict(ci) == "supported"
    nan_pair = verdicts.paired_difference_ci([1.0, np.nan, 2.0, 3.0], [0.0, 0.0, 1.0, 2.0], "a>b")
    assert nan_pair["n_units"] == 3


def test_verdict_table_lists_every_claim():
    from urbanlib.paper import load_claims

    claims = load_claims()
    m = pd.DataFrame([
        {"claim_id": "UC02", "a": [0.6, 0.62, 0.61], "b": [0.5, 0.52, 0.49]},
        {"claim_id": "UC06", "a": [1.0, 1.1, 1.05], "b": [1.2, 1.3, 1.25]},  # RMSE, a<b claimed
        {"claim_id": "UC14", "a": [0.7, 0.72, 0.71], "b": [0.5, 0.5, 0.5]},  # UrbanViT beats UrbanCLIP here
        {"claim_id": "UC17", "a": [0.5, 0.6], "b": [0.7, 0.8]},
        {"claim_id": "UC18", "a": None, "b": None, "reason": "w/o L_LM run failed"},
        {"claim_id": "UC08", "a": [0.6, 0.6, 0.6], "b": [0.5, 0.4, 0.45], "direction": "a>b",
         "comparison": "vs PG-SimCLR"},
        {"claim_id": "UC08", "a": [0.6, 0.6, 0.6], "b": [0.59, 0.62, 0.6], "direction": "a>b",
         "comparison": "vs Tile2Vec"},
        {"claim_id": "LN27", "a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0]},
        # one wide, inconclusive comparison with a very low bound and one narrow contradiction:
        # the row is contradicted, so the contradicting comparison's numbers are the ones shown
        {"claim_id": "UC09", "a": [0.1, 0.9, -0.5], "b": [0.5, 0.4, 0.5], "direction": "a>b", "comparison": "wide"},
        {"claim_id": "UC09", "a": [0.4, 0.41, 0.4], "b": [0.5, 0.5, 0.52], "direction": "a>b", "comparison": "narrow"},
    ])
    table = verdicts.verdict_table(claims, m)
    assert list(table["claim_id"]) == list(claims["claim_id"])
    assert list(table.columns) == verdicts.TABLE_COLUMNS
    v = table.set_index("claim_id")
    assert v.loc["UC02", "verdict"] == "supported" and v.loc["UC02", "n_units"] == 3
    assert v.loc["UC06", "verdict"] == "supported" and v.loc["UC06", "ci_high"] < 0
    assert v.loc["UC14", "verdict"] == "contradicted"
    assert v.loc["UC17", "verdict"] == "not testable here" and v.loc["UC17", "reason"] == verdicts.NEEDS_SEEDS
    assert v.loc["UC18", "reason"] == "w/o L_LM run failed"
    assert v.loc["UC08", "verdict"] == "not supported"  # beats PG-SimCLR, ties Tile2Vec
    assert "vs Tile2Vec" in v.loc["UC08", "comparisons"]
    assert v.loc["UC08", "mean_diff"] == pytest.approx(-0.01 / 3)  # the weakest comparison is shown
    assert v.loc["LN27", "verdict"] == "not testable here" and "two-quantity" in v.loc["LN27", "reason"]
    assert v.loc["UC09", "verdict"] == "contradicted" and v.loc["UC09", "ci_high"] < 0
    assert v.loc["UC09", "mean_diff"] == pytest.approx((0.4 + 0.41 + 0.4 - 0.5 - 0.5 - 0.52) / 3)
    untouched = v.loc["UC01"]
    assert untouched["verdict"] == "not testable here" and untouched["reason"].startswith("not measured")
    assert set(table["verdict"]) <= set(verdicts.VERDICTS)
    empty = verdicts.verdict_table(claims, None)
    assert len(empty) == len(claims) and (empty["verdict"] == "not testable here").all()


def test_verdict_table_rejects_unknown_claims():
    from urbanlib.paper import load_claims

    with pytest.raises(ValueError, match="ZZ99"):
        verdicts.verdict_table(load_claims(), pd.DataFrame([{"claim_id": "ZZ99", "a": [1], "b": [1]}]))
    with pytest.raises(ValueError, match="row 0 \\(UC02\\)"):
        verdicts.verdict_table(load_claims(), pd.DataFrame([{"claim_id": "UC02", "a": [1, 2, 3], "b": [1, 2, 3],
                                                             "direction": "best_at"}]))
