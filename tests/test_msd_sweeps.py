"""The SynthCity-only MSD sweeps: regenerated captions are faithful at noise 1 and scale with noise."""

from __future__ import annotations

import pytest

from urbanlib.experiments.caption_quality import caption_rates


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    import os

    old = os.environ.get("URBANLIB_CACHE")
    os.environ["URBANLIB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    from urbanlib.pipeline.city import open_city

    try:
        yield open_city("synth-ring", "smoke", 0, progress=False)
    finally:
        if old is None:
            os.environ.pop("URBANLIB_CACHE", None)
        else:
            os.environ["URBANLIB_CACHE"] = old


def test_noise_one_regenerates_the_citys_own_long_captions(city):
    from urbanlib.experiments.msd_sweeps import noisy_long_captions

    regen = noisy_long_captions(city, 1.0).set_index(["image", "source"])["text"]
    caps = city.ds.captions
    sat = set(city.ds.images.loc[city.ds.images["kind"] == "satellite", "path"])
    own = caps[(caps["style"] == "long") & caps["image"].isin(sat)].set_index(["image", "source"])["text"]
    assert len(regen) == len(own) > 0
    assert (regen.sort_index() == own.sort_index()).all()


def test_hallucination_follows_the_noise_factor(city):
    from urbanlib.experiments.msd_sweeps import noisy_long_captions

    rates = {n: caption_rates(noisy_long_captions(city, n))["hallucination"].mean() for n in (0.0, 1.0, 2.0)}
    assert rates[0.0] == 0.0
    assert rates[0.0] < rates[1.0] < rates[2.0]
    with pytest.raises(ValueError, match="noise"):
        noisy_long_captions(city, -1.0)


def test_sweeps_refuse_real_data(city):
    from dataclasses import replace

    from urbanlib.experiments.msd_sweeps import noisy_long_captions

    real = replace(city, ds=replace(city.ds, meta={**city.ds.meta, "generator": "release"}))
    with pytest.raises(ValueError, match="need SynthCity"):
        noisy_long_captions(real, 1.0)


def test_queue_sweep_refuses_a_non_positive_cap(city):
    from urbanlib.experiments.msd_sweeps import queue_false_negative_sweep

    with pytest.raises(ValueError, match="queue fractions must be > 0"):
        queue_false_negative_sweep(city, fractions=(0.5, 0.0))
