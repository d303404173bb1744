"""Caption generation from UrbanCLIP's multimodal decoder: greedy and beam search.

Written over :class:`~urbanlib.models.urbanclip.UrbanCLIP` (no KV cache: the decoder re-reads the
prefix each step, fine at caption lengths). For the ``coca`` variant use its ``generate`` (open_clip's).

The paper does not say how it decodes. The defaults are plain greedy / beam search over the model's
log-probabilities, with no repetition control. Two common repetition-aware options are available
and off by default: ``no_repeat_ngram`` (a token that would complete an n-gram already present in
the hypothesis gets probability 0, as in fairseq and Hugging Face) and ``repetition_penalty``
(CTRL, Keskar et al. 2019: logits of tokens already generated are divided by the penalty when
positive and multiplied by it when negative). SynthCity's captions repeat phrases such as
``"of the image ."`` in every sentence, so blocking n-grams also blocks legitimate text; the
generation-quality report (:mod:`urbanlib.eval.generation`) measures both options.

Why the defaults stay off (synth-ring, default scale, 51 test tiles, measured when these options were
added): looping captions ("... the image . the image .") came from under-training, not from the
decoding rule. After 36 steps the decoder ignores the image under every setting (BLEU-4 against the
tile's captions minus against another tile's: greedy +0.001, beam +0.028, no-repeat-4 +0.011,
penalty 1.2 +0.031; a real caption: +0.095), and the options only hide the loops. After 600 steps
greedy repeats no more 4-grams than the real captions (6% against 7%) and neither option raises
greedy's CAPTURE gap (greedy +0.070, no-repeat-4 +0.058, penalty 1.2 +0.065; beam 3 +0.071, beam 3
with no-repeat-4 +0.080: one seed and 51 tiles, no clear gain).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .text import tokenizer
from .vocab import EOT_ID, SOT_ID


@dataclass
class Caption:
    """One generated caption.

    Attributes:
        ids: tokenizer ids, without <start>/<end>.
        logprob: summed log-probability under the model (of the tokens and, if ``ended``, of <end>),
            with the decoding constraints applied.
        text: decoded text.
        ended: True when the decoder chose <end>; False when it ran out of length.
    """

    ids: list[int]
    logprob: float
    text: str
    ended: bool = True


def _special(model, token: int) -> int:
    return int(model.to_model_ids(torch.tensor([token], device=model.logit_scale.device))[0])


def _finish(model, ids: list[int], logprob: float, ended: bool) -> Caption:
    full = model.to_tokenizer_ids(torch.tensor(ids, dtype=torch.long)).tolist()
    full = [t for t in full if t >= 0]  # drop <unk>
    text = tokenizer(model.cfg.context_length).decode(full).strip()
    return Caption(full, logprob, text, ended)


@torch.no_grad()
def generate(model, images: torch.Tensor, max_len: int | None = None, beam_size: int = 1,
             length_penalty: float = 0.0, no_repeat_ngram: int = 0,
             repetition_penalty: float = 1.0) -> list[Caption]:
    """Caption each image.

    Args:
        model: an ``UrbanCLIP`` (anything with ``image_tokens``, ``multimodal_pooler``, ``decode``).
        images: (B, 3, H, W).
        max_len: most generated tokens (default and cap: context_length - 2).
        beam_size: 1 = greedy, else beam search over whole hypotheses.
        length_penalty: beam ranking uses ``logprob / len**length_penalty`` (0 = raw sum).
        no_repeat_ngram: if n > 0, never repeat an n-gram of tokens within a caption (0 = off, the default).
        repetition_penalty: CTRL's penalty on tokens already generated (1 = off, the default).

    Returns:
        One :class:`Caption` per image.
    """
    if no_repeat_ngram < 0 or repetition_penalty <= 0:
        raise ValueError("no_repeat_ngram must be >= 0 and repetition_penalty > 0")
    was_training = model.training
    model.eval()
    cap = model.cfg.context_length - 2
    max_len = min(max_len or cap, cap)
    sot, eot = _special(model, SOT_ID), _special(model, EOT_ID)
    context = model.multimodal_pooler(model.image_tokens(images))  # (B, Q, width_t)
    rules = (no_repeat_ngram, repetition_penalty)
    out = [_beam(model, context[b:b + 1], sot, eot, max_len, beam_size, length_penalty, rules)
           for b in range(len(images))]
    model.train(was_training)
    return out


def _next_logp(logits: torch.Tensor, beams: torch.Tensor, no_repeat: int, penalty: float) -> torch.Tensor:
    """Log-probabilities (n, V) of the next token from raw logits (n, V), with the repetition rules applied.

    ``beams`` (n, t) holds <start> and the tokens generated so far (model ids).
    """
    gen = beams[:, 1:]  # (n, t-1) generated tokens
    if penalty != 1.0 and gen.shape[1]:
        seen = logits.gather(1, gen)  # (n, t-1)
        logits = logits.scatter(1, gen, torch.where(seen > 0, seen / penalty, seen * penalty))
    logp = logits.log_softmax(-1)
    if no_repeat and gen.shape[1] >= no_repeat:
        for b, seq in enumerate(gen.tolist()):
            prefix = tuple(seq[len(seq) - no_repeat + 1:]) if no_repeat > 1 else ()
            banned = [seq[i + no_repeat - 1] for i in range(len(seq) - no_repeat + 1)
                      if tuple(seq[i:i + no_repeat - 1]) == prefix]
            logp[b, banned] = float("-inf")
    return logp


def _beam(model, context, sot, eot, max_len, k, alpha, rules) -> Caption:
    """Beam search for one image; ``context`` (1, Q, width). k = 1 is greedy."""
    beams = torch.full((1, 1), sot, dtype=torch.long, device=context.device)  # (n_beams, t)
    scores = torch.zeros(1, device=context.device)
    finished: list[tuple[float, list[int], float, bool]] = []  # (rank score, ids, logprob, ended)
    for _ in range(max_len):
        logits = model.decode(context.expand(len(beams), -1, -1), beams)[:, -1].float()  # (n, V)
        logp = _next_logp(logits, beams, *rules)
        total = (scores[:, None] + logp).flatten()  # (n*V,)
        top, idx = total.topk(min(2 * k, total.numel()))
        vocab = logp.shape[-1]
        next_beams, next_scores = [], []
        for s, i in zip(top.tolist(), idx.tolist(), strict=True):
            if s == float("-inf"):
                break
            b, tok = divmod(i, vocab)
            seq = beams[b].tolist()[1:]
            if tok == eot:
                finished.append((s / max(1, len(seq) + 1) ** alpha, seq, s, True))
            else:
                next_beams.append(beams[b].tolist() + [tok])
                next_scores.append(s)
            if len(next_beams) == k:
                break
        best_done = max((f[0] for f in finished), default=float("-inf"))
        if not next_beams or (len(finished) >= k and best_done >= max(next_scores) / (len(next_beams[0])) ** alpha):
            break
        beams = torch.tensor(next_beams, device=context.device)
        scores = torch.tensor(next_scores, device=context.device)
        if k == 1 and finished:
            break
    else:  # ran out of length: unfinished hypotheses compete too
        finished += [(s / max(1, len(b) - 1) ** alpha, b[1:], s, False)
                     for b, s in zip(beams.tolist(), scores.tolist(), strict=True)]
    _, ids, logprob, ended = max(finished, key=lambda f: f[0])
    return _finish(model, ids, logprob, ended)
