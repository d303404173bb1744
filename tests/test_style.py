"""The house style (urbanlib.style) and the figures that follow it."""

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from urbanlib import style  # noqa: E402


def test_numbers_never_show_nan_and_keep_one_line():
    assert style.mean_std(0.6, 0.0141) == "0.600\u00a0±\u00a00.014"
    assert style.mean_std(0.6, np.nan) == "0.600" and style.mean_std(np.nan, 0.1) == style.DASH
    assert style.effect(-0.0123) == "\u22120.012" and style.effect(0.5) == "+0.500" and style.effect(None) == "–"
    assert style.with_ci(0.01, -0.002, 0.03) == "+0.010\u00a0[\u22120.002,\u00a0+0.030]"
    assert style.with_ci(0.01, np.nan, np.nan) == "+0.010" and style.number("n/a") == style.DASH
    html = style.table(pd.DataFrame({"a": [1.23456, np.nan]})).to_html()
    assert "1.235" in html and "nan" not in html.lower() and "nowrap" in html


def test_one_indicator_order_everywhere():
    from urbanlib.data.dataset import INDICATORS

    assert list(style.INDICATOR_ORDER) == INDICATORS  # the dataset's order is the house order
    assert style.order_indicators(["crime", "x", "gdp", "population"]) == ["population", "gdp", "crime", "x"]
    assert style.indicator_groups(["crime", "gdp", "night_light"]) == [["gdp", "night_light"], ["crime"]]
    df = pd.DataFrame([[1, 2, 3]], columns=["crime", "model", "gdp"])
    assert list(style.table(df).data.columns) == ["gdp", "model", "crime"]


def test_figures_fit_the_book_width():
    assert style.figsize(7, 1)[0] <= style.BOOK_WIDTH
    assert style.grid_shape(7) == (3, 3) and style.grid_shape(2) == (1, 2)
    style.apply()
    assert matplotlib.rcParams["figure.dpi"] == style.DPI


def _transfer_rows():
    cities = ["a", "b", "c"]
    rows = [{"source": "a", "target": t, "indicator": i, "R2": (-8.0 if t == "c" else 0.5), "model": "M"}
            for t in cities for i in ("population", "gdp")]
    return pd.DataFrame(rows), cities


def test_transfer_heatmap_clips_the_scale_and_marks_out_of_range_cells():
    from urbanlib.analysis.transfer import plot_transfer_heatmaps, transfer_difference

    df, cities = _transfer_rows()
    fig = plot_transfer_heatmaps(df, ["gdp", "population"], "M", cities=cities)
    ax = fig.axes[0]
    lo, hi = ax.images[0].get_clim()
    assert (lo, hi) == style.R2_RANGE  # -8 does not stretch the scale
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("<-8.00") == 2 and "0.50" in texts  # the true value stays, marked
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a · population", "a · gdp"]  # only sources present
    assert fig.get_size_inches()[0] <= style.BOOK_WIDTH
    d = transfer_difference(df, df.assign(R2=df["R2"] - 0.25))
    assert np.allclose(d["R2"], 0.25)
    plt.close("all")


def test_ablation_differences_are_paired_with_an_interval():
    from urbanlib.analysis.ablations import ablation_differences, plot_ablation_differences

    rows = []
    for seed, shift in enumerate([0.0, 0.01, -0.01]):
        for model, base in (("full", 0.79), ("w/o A", 0.75), ("w/o B", 0.79)):
            rows.append({"model": model, "indicator": "gdp", "metric": "R2", "probe_seed": seed,
                         "value": base + shift + (0.002 * seed if model == "w/o B" else 0)})
    rows = pd.DataFrame(rows)
    d = ablation_differences(rows, ["full", "w/o A", "w/o B"], replicate="probe_seed")
    assert d.loc["w/o A", "diff"] == pytest.approx(-0.04) and d.loc["w/o A", "n"] == 3
    assert d.loc["w/o B", "ci_low"] < d.loc["w/o B", "diff"] < d.loc["w/o B", "ci_high"]
    fig = plot_ablation_differences(rows, ["full", "w/o A", "w/o B"], replicate="probe_seed")
    assert "w/o A (n=3)" in [t.get_text() for t in fig.axes[0].get_yticklabels()]
    plt.close("all")


def test_paper_tables_show_no_markup_and_similarity_no_nan():
    import urbanlib.paper as up
    from urbanlib.analysis.similarity import plot_matches

    t8 = up.table("urbanln", 8)
    assert not t8.astype(str).apply(lambda col: col.str.contains("<u>")).any().any()
    matches = pd.DataFrame({"query": [0], "query_city": ["a"], "match": [1], "target_city": ["b"], "rank": [1],
                            "similarity": [0.9]})
    images = np.zeros((2, 3, 4, 4), np.uint8)
    fig = plot_matches(matches, images, pd.DataFrame({"population": [np.nan, 3.0]}))
    text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "nan" not in text and "population: –" in text
    plt.close("all")


def test_data_figures_use_a_grid_at_the_book_width(tmp_path, monkeypatch):
    from urbanlib.data.synthcity import load_city
    from urbanlib.data.synthcity.plot import plot_gallery, plot_indicator_maps

    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path))
    ds = load_city("synth-ring", scale="smoke", seed=0, progress=False)
    fig = plot_indicator_maps(ds)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == len(ds.indicators) and len({round(ax.get_position().y0, 2) for ax in maps}) == 3  # 3 rows
    assert fig.get_size_inches()[0] <= style.BOOK_WIDTH
    fig = plot_gallery(ds, n=2)
    sizes = [t.get_fontsize() for ax in fig.axes for t in ax.texts]
    assert sizes and min(sizes) >= 8  # legible captions
    plt.close("all")


def test_show_renders_a_figure_built_without_pyplot(monkeypatch):
    from matplotlib.figure import Figure

    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1])
    style.show(fig)
    assert len(shown) == 1 and shown[0].data[:8] == b"\x89PNG\r\n\x1a\n"
