"""Generation-quality metrics (hand-computed examples) and the repetition-aware decoding options."""

import math

import numpy as np
import pytest
import torch

from urbanlib.eval.generation import (
    OWN,
    corpus_bleu,
    describe_report,
    distinct_n,
    generation_metrics,
    generation_report,
    mean_capture,
    ngrams,
    repeated_ngram_rate,
    words,
)


def test_words_split_like_the_clip_tokenizer():
    assert words("10 low-rise homes.") == ["1", "0", "low", "-", "rise", "homes", "."]
    assert words("1 0 low - rise homes .") == words("10 low-rise homes.")
    assert words("The Lawn, mostly GREEN") == ["the", "lawn", ",", "mostly", "green"]


def test_repeated_ngram_rate_hand_computed():
    toks = "the image . the image . the image".split()
    # 7 bigrams, 3 distinct: (the,image) (image,.) (.,the)
    assert repeated_ngram_rate(toks, 2) == pytest.approx(4 / 7)
    # 4-grams: "the image . the", "image . the image", ". the image .", then the first two again
    assert repeated_ngram_rate(toks, 4) == pytest.approx(2 / 5)
    assert repeated_ngram_rate("a b c d e".split(), 2) == 0.0
    assert repeated_ngram_rate(["a", "b"], 4) == 0.0  # no 4-gram at all


def test_distinct_n_pools_over_captions_without_crossing_them():
    caps = [["a", "b", "a"], ["a", "b", "c"]]
    assert distinct_n(caps, 1) == pytest.approx(3 / 6)
    # bigrams (a,b) (b,a) | (a,b) (b,c): 3 distinct of 4; (a,a) across the boundary never counts
    assert distinct_n(caps, 2) == pytest.approx(3 / 4)
    assert math.isnan(distinct_n([["a"]], 2))


def test_corpus_bleu_hand_computed():
    cand = "the cat sat on the mat".split()
    ref = "the cat is on the mat".split()
    # p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0; same length, so no brevity penalty
    assert corpus_bleu([cand], [[ref]], max_n=1) == pytest.approx(5 / 6)
    assert corpus_bleu([cand], [[ref]], max_n=2) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert corpus_bleu([cand], [[ref]], max_n=3) == pytest.approx(0.5)
    assert corpus_bleu([cand], [[ref]]) == 0.0  # no 4-gram match, no smoothing
    # clipping: "the" counts at most as often as in the reference
    assert corpus_bleu([["the"] * 4], [[["the", "cat", "on", "a"]]], max_n=1) == pytest.approx(1 / 4)
    # brevity penalty exp(1 - r/c) with r = 6, c = 2
    assert corpus_bleu([["the", "cat"]], [[cand]], max_n=1) == pytest.approx(math.exp(-2))
    # several references: clip by the largest count, r = closest length (ties -> shorter)
    # (lengths 2 and 4 around 3: the shorter gives no penalty, the longer would give exp(1 - 4/3))
    refs = [["the", "mat"], "the the cat sat".split()]
    assert corpus_bleu([["the", "the", "cat"]], [refs], max_n=1) == pytest.approx(1.0)
    # corpus level: counts are pooled before dividing (1/1 and 0/3 give p1 = 1/4, not a mean of ratios 1/2)
    assert corpus_bleu([["a"], ["b"] * 3], [[["a"]], [["c"] * 3]], max_n=1) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        corpus_bleu([cand], [])


def test_corpus_bleu_matches_nltk():
    bleu = pytest.importorskip("nltk.translate.bleu_score")
    rng = np.random.default_rng(0)
    vocab = list("abcdef")
    cands = [list(rng.choice(vocab, rng.integers(5, 12))) for _ in range(20)]
    refs = [[list(rng.choice(vocab, rng.integers(4, 13))) for _ in range(3)] for _ in range(20)]
    assert corpus_bleu(cands, refs) == pytest.approx(bleu.corpus_bleu(refs, cands), rel=1e-9)


class _ExactCapture:
    """Stand-in CAPTURE: 1 for identical texts, else 0."""

    def score(self, cand, ref):
        return {"capture": float(cand == ref)}


def test_mean_capture_averages_per_region_then_over_regions():
    cands = ["x", "y"]
    refs = [["x", "z"], ["q", "r", "y", "y"]]
    # region 1: (1 + 0) / 2; region 2: (0 + 0 + 1 + 1) / 4
    assert mean_capture(cands, refs, _ExactCapture()) == pytest.approx(0.5)


def test_generation_metrics_of_a_degenerate_decoder():
    refs = [["a park by the river ."], ["a road by the school ."]]
    same = ["the image . the image . the image"] * 2
    m = generation_metrics(same, refs, _ExactCapture(), rep_n=2)
    assert m["repeated 2-gram rate"] == pytest.approx(4 / 7)
    assert m["distinct-1"] == pytest.approx(3 / 16)
    assert m["distinct captions"] == 0.0 and m["CAPTURE"] == 0.0
    good = generation_metrics(["a park by the river .", "a road by the school ."], refs, _ExactCapture())
    assert good["BLEU-4"] == pytest.approx(1.0) and good["CAPTURE"] == 1.0 and good["distinct captions"] == 1.0
    assert good["repeated 4-gram rate"] == 0.0


def _tiny_model(captions):
    from urbanlib.models import Vocab, create_model
    from urbanlib.models.text import tokenize

    torch.manual_seed(0)
    return create_model("urbanclip-tiny", vocab=Vocab.from_tokenized(tokenize(captions, 24))).eval()


CAPTIONS = ["a park next to the river", "dense towers near the rail", "farm fields and a lake"]
THE, IMAGE, DOT = 518, 2867, 269  # open_clip tokenizer ids of "the", "image", "."


class _LoopingDecoder(torch.nn.Module):
    """A bigram 'decoder' that loops "the image . the image ..." and ranks <end> second everywhere.

    Compact ids (a :class:`Vocab`): 0 pad, 1 <start>, 2 <end>, 3 ".", 4 "the", 5 "image", 6 <unk>.
    """

    def __init__(self, context_length=24):
        from types import SimpleNamespace

        from urbanlib.models import Vocab

        super().__init__()
        vocab = Vocab([THE, IMAGE, DOT])
        self.full_to_compact, self.kept_ids = vocab.full_to_compact, vocab.kept_ids
        self.cfg = SimpleNamespace(context_length=context_length)
        self.logit_scale = torch.nn.Parameter(torch.zeros(()))
        table = torch.full((7, 7), -10.0)  # table[prev, next]
        table[:, 2] = 0.0  # <end> second best after every token
        table[1, 4] = table[4, 5] = table[5, 3] = table[3, 4] = 2.0  # <start> the image . the ...
        self.table = table

    def to_model_ids(self, ids):
        return self.full_to_compact[ids]

    def to_tokenizer_ids(self, ids):
        return self.kept_ids[ids]

    def image_tokens(self, images):
        return images.flatten(1)[:, None, :4]  # (B, 1, 4): ignored

    def multimodal_pooler(self, tokens):
        return tokens

    def decode(self, context, ids):
        return self.table[ids]  # (B, T, V)


def test_greedy_loops_until_the_length_limit_without_repetition_control():
    from urbanlib.models.generate import generate

    cap = generate(_LoopingDecoder(), torch.zeros(1, 3, 2, 2), max_len=10)[0]
    assert cap.text == "the image . the image . the image . the"
    assert not cap.ended and len(cap.ids) == 10
    assert repeated_ngram_rate(words(cap.text), 4) == pytest.approx(4 / 7)
    # beam search does not escape a loop the model is sure of: 10 x log p(top) = -1.27 beats any early
    # <end> (log p = -2.13 at the first step already)
    beam = generate(_LoopingDecoder(), torch.zeros(1, 3, 2, 2), max_len=10, beam_size=3)[0]
    assert beam.ids == cap.ids and not beam.ended


def test_no_repeat_ngram_blocks_the_loop():
    from urbanlib.models.generate import generate

    model, image = _LoopingDecoder(), torch.zeros(1, 3, 2, 2)
    # bigrams: after "the image . the" the bigram (the, image) is blocked, so <end> (second best) wins
    cap = generate(model, image, max_len=10, no_repeat_ngram=2)[0]
    assert cap.text == "the image . the" and cap.ended
    # 4-grams: "the image . the" may not be followed by "image" again
    cap = generate(model, image, max_len=10, no_repeat_ngram=4)[0]
    assert cap.text == "the image . the image ." and cap.ended
    # the log-prob is the model's where nothing was blocked: 6 top picks and <end>, each log_softmax of the row
    row = model.table[3].log_softmax(-1)
    assert cap.logprob == pytest.approx(6 * row[4].item() + row[2].item(), rel=1e-5)


def test_repetition_aware_options_are_off_by_default_and_never_repeat():
    from urbanlib.models.generate import generate

    model = _tiny_model(CAPTIONS)
    images = torch.randn(3, 3, 32, 32)
    plain = generate(model, images, max_len=20)
    assert plain == generate(model, images, max_len=20, no_repeat_ngram=0, repetition_penalty=1.0)
    for n in (1, 2):
        for beam in (1, 3):
            for cap in generate(model, images, max_len=20, beam_size=beam, no_repeat_ngram=n):
                grams = ngrams(cap.ids, n)
                assert len(grams) == len(set(grams))
    with pytest.raises(ValueError):
        generate(model, images, repetition_penalty=0.0)


def test_repetition_penalty_follows_ctrl():
    from urbanlib.models.generate import _next_logp

    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0]])
    beams = torch.tensor([[9, 0, 1]])  # <start> (id 9 here), then tokens 0 and 1 generated
    out = _next_logp(logits, beams, no_repeat=0, penalty=2.0)
    expected = torch.tensor([[1.0, -2.0, 0.5, 1.0]]).log_softmax(-1)  # 2/2 and -1*2; unseen unchanged
    assert torch.allclose(out, expected)
    blocked = _next_logp(logits, torch.tensor([[9, 0, 1, 0]]), no_repeat=2, penalty=1.0)
    assert blocked[0, 1] == float("-inf")  # (0, 1) was already said after 0
    assert torch.isfinite(blocked[0, [0, 2, 3]]).all()


class _Tensors:
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 32, 32, generator=g)
        self.satellite_mask = np.ones(n, bool)
        self.satellite_mask[0] = False

    def satellite_tensor(self, idx):
        return self.images[torch.as_tensor(np.asarray(idx))]


def test_generation_report_rows_and_sentence():
    model = _tiny_model(CAPTIONS)
    c0, c1, c2 = CAPTIONS
    texts = [["unused"], [c0, c1], [c0, c2], [c0, c1, c2], []]
    table = generation_report(model, _Tensors(5), texts, [0, 1, 2, 3, 4], max_len=6, capture=_ExactCapture())
    assert list(table.index) == ["greedy", "beam 3", OWN]
    assert (table["regions"] == 3).all()  # region 0 has no tile, region 4 no caption
    # the held-out first captions (all c0) are never among anybody's references (captions[1:])
    assert table.loc[OWN, "CAPTURE"] == 0.0 and table.loc[OWN, "CAPTURE, other tile"] == 0.0
    assert table.loc[OWN, "distinct captions"] == 0.0
    assert table.loc[OWN, "words"] == pytest.approx(6.0)
    text = describe_report(table)
    assert "3 held-out tiles" in text and "BLEU-4" in text and "CAPTURE" in text


def test_mismatched_references_remove_only_what_the_caption_says_about_its_tile():
    refs = [["a park by the river ."], ["a road by the school ."]]
    m = generation_metrics(["a park by the river .", "a road by the school ."], refs, _ExactCapture(),
                           other_references=refs[::-1])
    assert m["BLEU-4"] == pytest.approx(1.0) and m["CAPTURE"] == 1.0
    # against the other tile only "a", "by", "the", "." match (p1 = 8/12) and no 4-gram does, so BLEU-4 is 0
    assert m["BLEU-4, other tile"] == 0.0 and m["CAPTURE, other tile"] == 0.0
    assert "BLEU-4, other tile" not in generation_metrics(["a b"], [["a b"]])
