"""SynthCity: determinism, canonical round trip, realism statistics, caption truth labels."""

import json

import numpy as np
import pandas as pd
import pytest

from urbanlib.data import INDICATORS, load, synthcity
from urbanlib.data.synthcity.captions import caption_scene, caption_scenes
from urbanlib.data.synthcity.stats import morans_i
from urbanlib.scales import get_scale


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthcity")


@pytest.fixture(scope="session")
def ring(cache):
    return synthcity.build("synth-ring", "smoke", seed=0, cache_dir=cache, progress=False)


@pytest.fixture(scope="session")
def ring_ds(ring):
    return load(ring)


def _image_bytes(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted((path / "images").rglob("*.png"))}


def test_morans_i_hand_computed():
    # 1x3 line [1, 2, 3]: z = [-1, 0, 1]; links (0,1),(1,2) both ways, W = 4; Σ w z_i z_j = 2*(0 + 0) = 0 -> I = 0
    assert morans_i(np.array([[1.0, 2.0, 3.0]])) == pytest.approx(0.0)
    # 2x2 [[1, 0], [0, 1]] (checkerboard): z = ±0.5, every link joins opposite signs -> I = -1
    assert morans_i(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(-1.0)
    # 1x4 [1, 1, 0, 0]: z = [.5,.5,-.5,-.5]; pairs: +.25, -.25, +.25 -> num = 2*.25 = .5, W = 6, Σz² = 1
    # I = 4/6 * 0.5 / 1 = 1/3
    assert morans_i(np.array([[1.0, 1.0, 0.0, 0.0]])) == pytest.approx(1 / 3)
    # NaN drops the region and its links: [1, nan, 0] has no links left
    assert np.isnan(morans_i(np.array([[1.0, np.nan, 0.0]])))
    # flat input with rows/cols gives the same answer as the grid
    assert morans_i(np.array([1.0, 1.0, 0.0, 0.0]), rows=[0, 0, 0, 0], cols=[0, 1, 2, 3]) == pytest.approx(1 / 3)


def test_deterministic_same_seed(ring, cache, tmp_path):
    again = synthcity.build("synth-ring", "smoke", seed=0, cache_dir=tmp_path, progress=False)
    assert again != ring  # a genuinely separate build, not the cached folder
    for name in ("regions.csv", "images.csv", "captions.jsonl", "scenes.jsonl"):
        assert (again / name).read_bytes() == (ring / name).read_bytes(), name
    assert _image_bytes(again) == _image_bytes(ring)


def test_different_seed_differs(ring, cache):
    other = synthcity.build("synth-ring", "smoke", seed=1, cache_dir=cache, progress=False)
    assert (other / "regions.csv").read_bytes() != (ring / "regions.csv").read_bytes()
    a, b = _image_bytes(ring), _image_bytes(other)
    common = set(a) & set(b)
    assert sum(a[k] != b[k] for k in common) > 0.9 * len(common)


def test_cache_is_content_addressed(ring, cache):
    assert synthcity.build("synth-ring", "smoke", seed=0, cache_dir=cache, progress=False) == ring
    changed = synthcity.GeneratorParams(rho=0.9)
    assert synthcity.city_dir("synth-ring", "smoke", 0, cache, changed) != ring
    meta = json.loads((ring / "meta.json").read_text())
    assert meta["generator_version"] == synthcity.GENERATOR_VERSION
    assert meta["params"]["rho"] == synthcity.DEFAULT_PARAMS.rho
    assert meta["scale"]["grid"] == get_scale("smoke").grid
    assert "name" not in meta["scale"]  # presets with the same data (default, full) share one city


def test_canonical_round_trip(ring_ds, tmp_path):
    from urbanlib.data import canonical

    ds = ring_ds
    n = get_scale("smoke").grid
    assert len(ds) == n * n
    assert ds.indicators == INDICATORS
    assert set(ds.images["kind"]) == {"satellite", "street"}
    assert all((ds.root / p).is_file() for p in ds.images["path"])
    assert {"zone", "latent_highrise", "latent_water", "poi_cat_food"} <= set(ds.regions.columns)
    canonical.write(ds, tmp_path)  # tables only; round trip them
    back = canonical.read(tmp_path)
    pd.testing.assert_frame_equal(back.regions, ds.regions, check_dtype=False)
    assert list(back.captions["text"]) == list(ds.captions["text"])
    assert back.captions["statements"].iloc[0] == ds.captions["statements"].iloc[0]


def test_load_city_returns_dataset(cache, ring):
    ds = synthcity.load_city("synth-ring", "smoke", seed=0, cache_dir=cache, progress=False)
    assert ds.root == ring
    assert ds.meta["generator"] == "synthcity"


def test_indicators_autocorrelated_and_missing(ring_ds):
    regions = ring_ds.regions
    for name in ("population", "gdp", "night_light", "poi_count"):
        i = morans_i(np.log1p(regions[name].to_numpy(float)), regions["row"], regions["col"])
        assert i > 0.1, (name, i)
    assert regions[INDICATORS].isna().any().sum() >= 2  # several indicators have gaps
    assert not regions[INDICATORS].isna().all(axis=0).any()  # but none is entirely missing
    poi = regions[[c for c in regions if c.startswith("poi_cat_")]].sum(axis=1)
    np.testing.assert_allclose(poi, regions["poi_count"])


def test_street_view_counts_vary(ring_ds):
    counts = ring_ds.images[ring_ds.images["kind"] == "street"].groupby("region_id").size()
    counts = counts.reindex(ring_ds.region_ids, fill_value=0)
    smoke_max = get_scale("smoke").max_street_views
    assert (counts == min(synthcity.DEFAULT_PARAMS.street_views_min, smoke_max)).all()  # 1.2.0: every region has views
    st = ring_ds.images[ring_ds.images["kind"] == "street"].merge(ring_ds.regions[["region_id", "lon", "lat"]],
                                                                    on="region_id", suffixes=("", "_c"))
    assert ((st["lon"] - st["lon_c"]).abs() < 0.005).all() and ((st["lat"] - st["lat_c"]).abs() < 0.005).all()


def test_captions_see_only_the_scene(ring, ring_ds):
    scenes = synthcity.read_scenes(ring)
    # regenerating captions from scenes.jsonl alone reproduces the stored captions exactly
    regen = caption_scenes(scenes, synthcity.DEFAULT_PARAMS, seed=0, progress=False)
    assert list(regen["text"]) == list(ring_ds.captions["text"])
    # two regions with different indicators, given the same scene, get identical captions
    regs = ring_ds.regions.set_index("region_id")
    sat = [s for s in scenes if s["kind"] == "satellite"]
    a = sat[0]
    b = next(s for s in sat[1:] if regs.loc[s["region_id"], "poi_count"] != regs.loc[a["region_id"], "poi_count"])
    twin = dict(b, objects=a["objects"])
    out = caption_scenes([a, twin], synthcity.DEFAULT_PARAMS, seed=0, progress=False)
    half = len(out) // 2
    assert list(out["text"][:half]) == list(out["text"][half:])
    assert set(out["region_id"]) == {a["region_id"], b["region_id"]}


def test_truth_labels_consistent(ring, ring_ds):
    scenes = {s["image"]: s for s in synthcity.read_scenes(ring)}
    kinds = set()
    for _, row in ring_ds.captions.iterrows():
        present = {o["cls"] for o in scenes[row["image"]]["objects"]}
        assert row["text"] == " ".join(s["text"] for s in row["statements"])
        for s in row["statements"]:
            kinds.add(s["kind"])
            if s["kind"] == "hallucination":
                assert s["object"] not in present and s["true"] is False
            elif s["kind"] == "fact":
                assert s["object"] in present and s["true"] is True
            elif s["kind"] == "wrong_quantity":
                assert s["object"] in present and s["true"] is False
    assert kinds == {"fact", "hallucination", "filler", "wrong_quantity"}
    assert (ring_ds.captions["omissions"] > 0).any()


def test_caption_lengths_and_sources(ring_ds):
    caps = ring_ds.captions
    long_words = caps.loc[caps["style"] == "long", "text"].str.split().str.len()
    assert long_words.between(100, 250).all()
    short = caps[caps["style"] == "short"]
    assert set(short["image"]) <= set(ring_ds.images.loc[ring_ds.images["kind"] == "satellite", "path"])
    per_sentence = short["text"].str.split().str.len() / short["statements"].str.len()
    assert 10 <= per_sentence.mean() <= 22
    assert set(caps["source"]) == {c.name for c in synthcity.DEFAULT_PARAMS.captioners}


def test_shared_blind_spots_follow_rho(ring):
    scenes = [s for s in synthcity.read_scenes(ring) if s["kind"] == "satellite"]

    def agreement(rho):
        params = synthcity.GeneratorParams(rho=rho)
        caps = params.captioners
        same = 0
        total = 0
        for s in scenes:
            sets = [frozenset(st["object"] for st in caption_scene(s["objects"], "satellite", s["size"], c, "long",
                                                                    params, 0)["statements"]
                              if st["kind"] == "hallucination") for c in caps[:2]]
            if sets[0] and sets[1]:
                same += len(sets[0] & sets[1]) / len(sets[0] | sets[1])
                total += 1
        return same / max(total, 1)

    assert agreement(0.95) > agreement(0.0) + 0.1

    def omission_corr(rho):
        params = synthcity.GeneratorParams(rho=rho)
        a, b = ([caption_scene(s["objects"], "satellite", s["size"], c, "long", params, 0)["omissions"]
                 for s in scenes] for c in params.captioners[:2])
        return np.corrcoef(a, b)[0, 1]

    assert omission_corr(0.95) > omission_corr(0.0) + 0.1


@pytest.mark.parametrize("profile", synthcity.PROFILES)
def test_every_profile_generates(profile, cache):
    ds = synthcity.load_city(profile, "smoke", seed=0, cache_dir=cache, progress=False)
    assert len(ds) == get_scale("smoke").grid ** 2 and ds.cities == [profile]
    assert ds.regions["zone"].nunique() >= 3


def test_profiles_listed_and_unknown_rejected():
    assert len(synthcity.PROFILES) >= 4
    with pytest.raises(KeyError, match="unknown SynthCity profile"):
        synthcity.load_profile("atlantis")


def test_version_change_invalidates_cache(monkeypatch, cache, ring):
    from urbanlib.data.synthcity import config

    monkeypatch.setattr(config, "GENERATOR_VERSION", "synthcity-test-bump")
    assert synthcity.city_dir("synth-ring", "smoke", 0, cache) != ring


def test_a_city_another_process_finished_first_is_kept_and_no_temporary_is_left(monkeypatch, tmp_path):
    import importlib

    build = importlib.import_module("urbanlib.data.synthcity.build")
    out = synthcity.city_dir("synth-ring", "smoke", 0, tmp_path)
    write = build.canonical.write

    def write_while_another_process_finishes(ds, data_dir):
        write(ds, data_dir)
        out.mkdir()
        (out / "meta.json").write_text('{"by": "the other process"}')

    monkeypatch.setattr(build.canonical, "write", write_while_another_process_finishes)
    assert synthcity.build("synth-ring", "smoke", seed=0, cache_dir=tmp_path, progress=False) == out
    assert json.loads((out / "meta.json").read_text()) == {"by": "the other process"}
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_city_summary(ring_ds):
    from urbanlib.data.synthcity.stats import city_summary

    s = city_summary(ring_ds, pixel_sample=8)
    assert list(s["indicator"]) == INDICATORS
    assert (s["missing"] > 0).sum() >= 2 and 0 < s["pix_mean"].iloc[0] < 255


def test_plots_return_figures(ring_ds):
    from matplotlib.figure import Figure

    from urbanlib.data.synthcity import plot

    for fig in (plot.plot_indicator_maps(ring_ds), plot.plot_land_use(ring_ds), plot.plot_gallery(ring_ds, n=2)):
        assert isinstance(fig, Figure) and fig.axes
    gallery = plot.plot_gallery(ring_ds, n=1, style="short")
    texts = [t.get_text() for t in gallery.axes[3].texts]
    assert texts and all(t[0] in "✓✗" for t in texts)


def test_street_view_counts_start_at_the_minimum_and_grow_with_roads():
    from types import SimpleNamespace

    from urbanlib.data.synthcity.render_street import street_view_count

    rng = np.random.default_rng(0)
    layout = SimpleNamespace(road_level=np.array([[0, 3]]), urban=np.array([[0.1, 1.0]]))
    quiet = [street_view_count(layout, 0, 0, 8, 1.6, rng, min_views=4) for _ in range(200)]
    busy = [street_view_count(layout, 0, 1, 8, 1.6, rng, min_views=4) for _ in range(200)]
    assert set(quiet) == {4} and min(busy) >= 4 and max(busy) == 8 and np.mean(busy) > 5
    assert street_view_count(layout, 0, 1, 2, 1.6, rng, min_views=4) == 2  # capped by the scale
    assert street_view_count(layout, 0, 1, 0, 1.6, rng, min_views=4) == 0
