"""The caption LM of urbanlib's own (UrbanCLIP's text tower trained on captions alone): it is causal, it learns
to predict the next token (not the current one), it is deterministic by seed, a trained run is reused, and bad
input is refused by name."""

import numpy as np
import pandas as pd
import pytest
import torch

from urbanlib.data.report import DataError
from urbanlib.eval.caption_lm import CaptionLM, CaptionLMConfig, train_caption_lm
from urbanlib.models.text import tokenize, tokenizer
from urbanlib.models.vocab import Vocab

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


def test_a_token_state_never_sees_the_tokens_after_it():
    config = CaptionLMConfig.for_scale("smoke")
    ids = tokenize(["the image shows a road", "the image shows green fields and trees"], config.context_length)
    torch.manual_seed(0)
    model = CaptionLM(config, Vocab.from_tokenized(ids)).eval()
    with torch.no_grad():
        states, _ = model.token_states(ids)
    np.testing.assert_allclose(states[0, :4].numpy(), states[1, :4].numpy(), atol=1e-5)  # shared prefix
    assert not np.allclose(states[0, 4].numpy(), states[1, 4].numpy())  # "road" vs "green"


def test_it_learns_to_predict_the_next_token(cache):
    caps = _captions()
    ids = [f"r{r:02d}" for r in range(50)]  # two regions without a caption
    config = CaptionLMConfig.for_scale("smoke", epochs=4)
    run = train_caption_lm(caps, ids, config)
    s = run.summary
    assert s["held-out LM loss (best)"] < 0.8 * s["held-out LM loss at step 0"]
    assert s["stopped by"] in ("patience", "cap") and s["steps"] > 0
    f = run.features
    assert f.shape[0] == 50 and np.isnan(f[48:]).all() and np.isfinite(f[:48]).all()
    # every caption reads "<start> the image shows ...": after "<start> the" the next token is "image"
    # (a model taught the current token instead would say "the")
    with torch.no_grad():
        logits = run.model.eval().next_token_logits(tokenize(["the"], config.context_length))[0, 1]  # after "the"
    predicted = run.model.vocab.decode(logits.argmax().view(1))
    assert tokenizer(config.context_length).decode(predicted.tolist()).strip() == "image"


def test_two_fresh_runs_agree_and_a_trained_run_is_reused(tmp_path, monkeypatch):
    caps, ids = _captions(), [f"r{r:02d}" for r in range(48)]
    runs = []
    for name in ("a", "b"):
        monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path / name))
        runs.append(train_caption_lm(caps, ids, CaptionLMConfig.for_scale("smoke")))
    np.testing.assert_allclose(runs[0].features, runs[1].features, rtol=1e-5, atol=1e-6)  # trained twice
    log = (runs[1].out_dir / "losses.csv").read_text()
    again = train_caption_lm(caps, ids, CaptionLMConfig.for_scale("smoke"))
    assert again.out_dir == runs[1].out_dir and (again.out_dir / "losses.csv").read_text() == log  # loaded
    np.testing.assert_allclose(again.features, runs[1].features, rtol=1e-6)
    other = train_caption_lm(caps, ids, CaptionLMConfig.for_scale("smoke", seed=1))
    assert not np.allclose(other.features, again.features)


def test_bad_captions_are_refused_by_name(cache):
    with pytest.raises(DataError, match="'text'"):
        train_caption_lm(pd.DataFrame({"region_id": ["a"], "caption": ["x"]}), ["a"])
    with pytest.raises(DataError, match="at least one batch"):
        train_caption_lm(_captions(n_regions=4, per_region=1), ["r00", "r01", "r02", "r03"],
                         CaptionLMConfig.for_scale("smoke"))
    with pytest.raises(DataError, match="none of the 144 caption rows"):
        train_caption_lm(_captions(), ["x1", "x2"])
    with pytest.raises(DataError, match="repeat"):
        train_caption_lm(_captions(), ["r00", "r00"])
    with pytest.raises(ValueError, match="val_fraction"):
        CaptionLMConfig(val_fraction=2.0)
