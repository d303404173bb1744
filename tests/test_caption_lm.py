"""The caption LM of urbanlib's own (UrbanCLIP's text tower trained on captions alone): it learns the
captions' language, its region features follow the captions, a trained run is reused, bad input is refused."""

import numpy as np
import pandas as pd
import pytest

from urbanlib.data.report import DataError
from urbanlib.eval.caption_lm import CaptionLMConfig, train_caption_lm

WORDS = {"urban": ["tower", "road", "cars", "houses", "bridge"], "rural": ["field", "trees", "river", "farm", "grass"]}


def _captions(n_regions: int = 48, per_region: int = 3, seed: int = 0) -> pd.DataFrame:
    """Regions alternate urban / rural; each caption names words of its kind only, in a fixed frame."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_regions):
        kind = "urban" if r % 2 == 0 else "rural"
        for _ in range(per_region):
            rows.append({"region_id": f"r{r:02d}", "text": f"the image shows {' and '.join(rng.choice(WORDS[kind], 3))}"})
    return pd.DataFrame(rows)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_it_learns_the_captions_and_its_features_separate_the_kinds(cache):
    caps = _captions()
    ids = [f"r{r:02d}" for r in range(50)]  # two regions without a caption
    run = train_caption_lm(caps, ids, CaptionLMConfig.for_scale("smoke", epochs=4))
    s = run.summary
    assert s["held-out LM loss (best)"] < 0.8 * s["held-out LM loss at step 0"]
    assert s["stopped by"] in ("patience", "cap") and s["steps"] > 0
    f = run.features
    assert f.shape[0] == 50 and np.isnan(f[48:]).all() and np.isfinite(f[:48]).all()
    urban, rural = f[0:48:2], f[1:48:2]
    between = np.linalg.norm(urban.mean(0) - rural.mean(0))
    within = np.linalg.norm(urban - urban.mean(0), axis=1).mean()
    assert between > 0.5 * within  # the kinds' mean features sit apart


def test_a_trained_run_is_reused_and_the_features_are_deterministic(cache):
    caps = _captions()
    ids = [f"r{r:02d}" for r in range(48)]
    a = train_caption_lm(caps, ids, CaptionLMConfig.for_scale("smoke"))
    log = (a.out_dir / "losses.csv").read_text()
    b = train_caption_lm(caps, ids, CaptionLMConfig.for_scale("smoke"))
    assert b.out_dir == a.out_dir and (b.out_dir / "losses.csv").read_text() == log  # loaded, not retrained
    np.testing.assert_allclose(a.features, b.features, rtol=1e-6)
    c = train_caption_lm(caps, ids, CaptionLMConfig.for_scale("smoke", seed=1))
    assert c.out_dir != a.out_dir


def test_bad_captions_are_refused_by_name(cache):
    with pytest.raises(DataError, match="'text'"):
        train_caption_lm(pd.DataFrame({"region_id": ["a"], "caption": ["x"]}), ["a"])
    with pytest.raises(DataError, match="at least one batch"):
        train_caption_lm(_captions(n_regions=4, per_region=1), ["r00", "r01", "r02", "r03"],
                         CaptionLMConfig.for_scale("smoke"))
