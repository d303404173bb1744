"""Caption generation from UrbanCLIP's multimodal decoder: greedy and beam search.

Written over :class:`~urbanlib.models.urbanclip.UrbanCLIP` (no KV cache: the decoder re-reads the
prefix each step, fine at caption lengths). For the ``coca`` variant use its ``generate`` (open_clip's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .text import tokenizer
from .vocab import EOT_ID, SOT_ID


@dataclass
class Caption:
    """One generated caption: tokenizer ids (without <start>/<end>), summed log-prob, text."""

    ids: list[int]
    logprob: float
    text: str


def _special(model, token: int) -> int:
    return int(model.to_model_ids(torch.tensor([token], device=model.logit_scale.device))[0])


def _finish(model, ids: list[int], logprob: float) -> Caption:
    full = model.to_tokenizer_ids(torch.tensor(ids, dtype=torch.long)).tolist()
    full = [t for t in full if t >= 0]  # drop <unk>
    text = tokenizer(model.cfg.context_length).decode(full).strip()
    return Caption(full, logprob, text)


@torch.no_grad()
def generate(model, images: torch.Tensor, max_len: int | None = None, beam_size: int = 1,
             length_penalty: float = 0.0) -> list[Caption]:
    """Caption each image.

    Args:
        model: an ``UrbanCLIP`` (anything with ``image_tokens``, ``multimodal_pooler``, ``decode``).
        images: (B, 3, H, W).
        max_len: most generated tokens (default and cap: context_length - 2).
        beam_size: 1 = greedy, else beam search over whole hypotheses.
        length_penalty: beam ranking uses ``logprob / len**length_penalty`` (0 = raw sum).

    Returns:
        One :class:`Caption` per image.
    """
    was_training = model.training
    model.eval()
    cap = model.cfg.context_length - 2
    max_len = min(max_len or cap, cap)
    sot, eot = _special(model, SOT_ID), _special(model, EOT_ID)
    context = model.multimodal_pooler(model.image_tokens(images))  # (B, Q, width_t)
    out = [_beam(model, context[b:b + 1], sot, eot, max_len, beam_size, length_penalty)
           for b in range(len(images))]
    model.train(was_training)
    return out


def _beam(model, context, sot, eot, max_len, k, alpha) -> Caption:
    """Beam search for one image; ``context`` (1, Q, width). k = 1 is greedy."""
    beams = torch.full((1, 1), sot, dtype=torch.long, device=context.device)  # (n_beams, t)
    scores = torch.zeros(1, device=context.device)
    finished: list[tuple[float, list[int], float]] = []
    for _ in range(max_len):
        logp = model.decode(context.expand(len(beams), -1, -1), beams)[:, -1].float().log_softmax(-1)  # (n, V)
        total = (scores[:, None] + logp).flatten()  # (n*V,)
        top, idx = total.topk(min(2 * k, total.numel()))
        vocab = logp.shape[-1]
        next_beams, next_scores = [], []
        for s, i in zip(top.tolist(), idx.tolist(), strict=True):
            b, tok = divmod(i, vocab)
            seq = beams[b].tolist()[1:]
            if tok == eot:
                finished.append((s / max(1, len(seq) + 1) ** alpha, seq, s))
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
        finished += [(s / max(1, len(b) - 1) ** alpha, b[1:], s)
                     for b, s in zip(beams.tolist(), scores.tolist(), strict=True)]
    _, ids, logprob = max(finished, key=lambda f: f[0])
    return _finish(model, ids, logprob)
