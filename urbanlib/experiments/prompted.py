"""UrbanCLIP §3.5.2, "prompt-guided downstream tasks": predict an indicator from a prompted decoder.

The paper sketches the option (Fig. 2d): feed "The carbon emission is [MASK]" and let the text
decoder predict the next token autoregressively; it reports no numbers. Here the trained
UrbanCLIP stays frozen; its multimodal decoder reads the tile (cross-attention to the pooled image
tokens) and an indicator prompt (:data:`INDICATOR_PROMPTS`, start token first, no end token), and
the prediction is read from the decoder's representation at the prompt's last position, the one
whose LM head would predict the [MASK] token (after ``ln_final``, before the LM projection):

- **fixed prompt**: that representation is a frozen feature (one per indicator), probed exactly as
  the benchmark probes frozen image features (:func:`urbanlib.eval.probe.fit_probes`: an MLP head
  per indicator and probe seed, trained on the split's train regions with early stopping on its
  validation regions);
- **learned prompt** (the paper's "continuous vectors", prompt tuning): the prompt's input
  embeddings, initialised from the fixed prompt's tokens, are trained jointly with the same MLP
  head on the train regions (early stopping on the validation regions), through the frozen model.

Words of a prompt outside the decoder's (caption) vocabulary are its ``<unk>`` token
(:func:`unknown_words` lists them): the decoder was trained on captions, which name no indicator.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from urbanlib.data.splits import Split
from urbanlib.eval.probe import (
    EarlyStopping,
    ProbeConfig,
    draw_head_weights,
    fit_probes,
    masked_mse,
    metrics_on_test,
    standardise_targets,
)
from urbanlib.models.text import tokenize, tokenizer
from urbanlib.models.vocab import EOT_ID, PAD_ID

INDICATOR_PROMPTS: dict[str, str] = {  # the paper's example is carbon's; the others follow its form
    "population": "The population is",
    "gdp": "The GDP is",
    "carbon": "The carbon emission is",
    "night_light": "The night light is",
    "poi_count": "The number of POIs is",
    "comments": "The number of comments is",
    "crime": "The crime is",
}
START_ONLY = ""  # the control: the start token alone (no indicator words)


def prompt_for(indicator: str) -> str:
    """The fixed prompt of an indicator (a generic "The <name> is" for one not in :data:`INDICATOR_PROMPTS`)."""
    return INDICATOR_PROMPTS.get(indicator, f"The {indicator.replace('_', ' ')} is")


def prompt_ids(model, prompt: str) -> torch.Tensor:
    """The prompt in the model's ids: (T,) long, the start token then the prompt's tokens (no end, no padding)."""
    ids = tokenize([prompt], model.cfg.context_length)[0]
    ids = ids[(ids != PAD_ID) & (ids != EOT_ID)]
    return model.to_model_ids(ids)


def unknown_words(model, prompt: str) -> list[str]:
    """The prompt's BPE tokens outside the model's vocabulary (they all read as its ``<unk>`` token)."""
    tok = tokenizer(model.cfg.context_length)
    full = tok.encode(prompt)
    if getattr(model, "full_to_compact", None) is None:
        return []
    unk = len(model.kept_ids) - 1
    return [tok.decode([t]).strip() for t in full if int(model.full_to_compact[t]) == unk]


class PromptReader:
    """A frozen UrbanCLIP's decoder as a function of (tile, prompt embeddings) -> next-token state.

    The image side is computed once per tile: the multimodal pooler's output and, per decoder
    layer, the cross-attention keys and values (:meth:`image_memory`). The prompt side runs the
    unimodal text tower on the prompts alone (they do not depend on the tile), then the decoder
    layers over every (tile, prompt) pair. Equals ``model.decode`` on the prompt's ids (tested).

    Args:
        model: a trained :class:`~urbanlib.models.urbanclip.UrbanCLIP` (left unchanged; its
            parameters get ``requires_grad=False``).
    """

    def __init__(self, model):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.width = model.decoder.width

    @torch.no_grad()
    def image_memory(self, images: torch.Tensor, batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, the cross-attention (keys, values) of the tiles: each (N, heads, S, head_dim)."""
        m = self.model
        ctx = torch.cat([m.multimodal_pooler(m.image_tokens(images[s:s + batch_size]))
                         for s in range(0, len(images), batch_size)])  # (N, S, width)
        out = []
        for cross in m.decoder.cross_attn:
            att = cross.attn
            c, h, d = att.embed_dim, att.num_heads, att.head_dim
            kv = F.linear(cross.ln_1_kv(ctx), att.in_proj_weight[c:], att.in_proj_bias[c:])  # (N, S, 2C)
            k, v = kv.view(len(ctx), ctx.shape[1], 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (N, heads, S, d)
            out.append((k.contiguous(), v.contiguous()))
        return out

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """The text tower's input embeddings of model ids (T,) -> (T, width)."""
        return self.model.text.token_embedding(ids).detach().clone()

    def prompt_tokens(self, embeds: torch.Tensor) -> torch.Tensor:
        """The unimodal text tower over prompt embeddings (H, T, width) -> (H, T, width) (causal; [CLS] dropped).

        Prompts shorter than T are right-padded: with causal attention a padded position never
        changes an earlier one.
        """
        tower = self.model.text
        h, t, _ = embeds.shape
        x = torch.cat([embeds, tower.cls_emb.view(1, 1, -1).expand(h, 1, -1)], dim=1)  # (H, T+1, width)
        x = x + tower.positional_embedding[: t + 1]
        return tower.transformer(x, causal=True)[:, :-1]

    def next_token_state(self, memory: list[tuple[torch.Tensor, torch.Tensor]], tokens: torch.Tensor,
                         last: torch.Tensor) -> torch.Tensor:
        """The decoder's state at each prompt's last position for every tile: (N, H, width).

        Args:
            memory: :meth:`image_memory` of N tiles.
            tokens: (H, T, width) :meth:`prompt_tokens` of H prompts.
            last: (H,) long, the position of each prompt's last real token.
        """
        dec = self.model.decoder
        n, (hp, t, c) = memory[0][0].shape[0], tokens.shape
        x = tokens[None].expand(n, hp, t, c).reshape(n * hp, t, c)  # (N*H, T, C)
        for block, cross, (k, v) in zip(dec.resblocks, dec.cross_attn, memory, strict=True):
            x = block(x, causal=True)
            att = cross.attn
            q = F.linear(cross.ln_1(x), att.in_proj_weight[:c], att.in_proj_bias[:c])  # (N*H, T, C)
            # the H prompts of one tile attend to the same keys: queries stacked along the length axis
            q = q.view(n, hp * t, att.num_heads, att.head_dim).transpose(1, 2)  # (N, heads, H*T, d)
            a = F.scaled_dot_product_attention(q, k, v)  # (N, heads, H*T, d)
            x = x + att.out_proj(a.transpose(1, 2).reshape(n * hp, t, c))
            x = x + cross.mlp(cross.ln_2(x))
        x = x.view(n, hp, t, c)[:, torch.arange(hp), last]  # (N, H, C)
        return dec.ln_final(x)

    def logits(self, state: torch.Tensor) -> torch.Tensor:
        """The LM head over a next-token state (..., width) -> (..., vocab)."""
        return state @ self.model.decoder.text_projection


def _pad(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (T_i, C) tensors to (H, T, C); returns them and each one's last position (H,)."""
    t = max(len(s) for s in seqs)
    out = torch.zeros(len(seqs), t, seqs[0].shape[1])
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, torch.tensor([len(s) - 1 for s in seqs])


@torch.no_grad()
def prompt_features(model, images: torch.Tensor, prompts: list[str], batch_size: int = 64) -> np.ndarray:
    """Fixed-prompt features: (N, P, width) next-token states of N tiles under P prompts."""
    reader = PromptReader(model)
    emb, last = _pad([reader.token_embeddings(prompt_ids(model, p)) for p in prompts])
    tokens = reader.prompt_tokens(emb)
    out = [reader.next_token_state(reader.image_memory(images[s:s + batch_size]), tokens, last)
           for s in range(0, len(images), batch_size)]
    return torch.cat(out).numpy().astype(np.float32)


def fixed_prompt_probes(features: np.ndarray, targets: np.ndarray, split: Split, seeds, indicators: list[str],
                        config: ProbeConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """Probe each indicator's fixed-prompt feature (``features[:, j]``) for that indicator only.

    Returns:
        ``(metrics, predictions)``: tidy rows like :func:`fit_probes` (indicator, seed, metric, value,
        n_test) and (S, N, T) predictions.
    """
    rows, preds = [], []
    for j, name in enumerate(indicators):
        res = fit_probes(features[:, j], targets[:, [j]], split, seeds, config, indicators=[name])
        rows.append(res.metrics)
        preds.append(res.predictions[..., 0])
    return pd.concat(rows, ignore_index=True), np.stack(preds, axis=-1)


@dataclass
class PromptTuning:
    """Training of the learned (continuous) prompt and its head; the head and its early stopping are the probe's."""

    prompt_lr: float = 3e-3  # AdamW step of the prompt embeddings: the probe's step (no separate choice)
    max_epochs: int = 200  # full-batch epochs at most (each runs the decoder over every train tile and prompt)
    chunk: int = 64  # tiles per forward pass (memory)

    def to_dict(self) -> dict:
        """Plain dict, for provenance."""
        return asdict(self)


def _init_head(seeds: list[int], n_ind: int, sizes: list[int]) -> list[torch.Tensor]:
    """The probe's per-(seed, indicator) heads (:func:`draw_head_weights`, stream 35 for §3.5), flattened to H = S*T.

    Returns ``[W0 (H, F, d1), b0 (H, d1), ...]``, head h = s * T + t: one axis for the heads lets
    :meth:`_PromptProbe.predict` pick the active ones by index.
    """
    return [torch.from_numpy(p.reshape(-1, *p.shape[2:])) for p in draw_head_weights(seeds, n_ind, sizes, stream=(35,))]


def _head(params: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """(N, H, F) standardised states -> (N, H) predictions, head h on column h.

    Not the probe's forward pass: there all heads read the same features (layer 0 is one shared
    matmul); here each head reads its own prompt's state, so every layer is a per-head product.
    """
    h = z
    for i, (w, b) in enumerate(zip(params[::2], params[1::2], strict=True)):
        h = torch.einsum("nhf,hfo->nho", h, w) + b  # (N, H, out)
        if i < len(params) // 2 - 1:
            h = torch.relu(h)
    return h[..., 0]


def learned_prompt_probes(model, images: torch.Tensor, targets: np.ndarray, split: Split, seeds,
                          indicators: list[str], config: ProbeConfig, tuning: PromptTuning | None = None,
                          prompts: list[str] | None = None, log=None) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Prompt tuning: per indicator and probe seed, a learned prompt and an MLP head, trained on train regions.

    The prompt's input embeddings start at the fixed prompt's (so epoch 0 is the fixed-prompt
    probe's starting point); the state is standardised with the train regions' statistics at that
    start and fed to the probe's MLP (``config.hidden``). Full-batch AdamW on the standardised
    ln(y + 1) targets of the train regions (head: ``config.lr`` and ``config.weight_decay``;
    prompt: ``tuning.prompt_lr``, no decay); each (seed, indicator) keeps its validation-best
    prompt and head and stops after ``config.patience`` epochs without improvement. The heads never
    interact (separate parameters, a summed loss, a frozen model), and a stopped one is no longer
    computed.

    Args:
        model: the trained UrbanCLIP (frozen).
        images: (N, 3, H, W) CLIP-normalised tiles of every region.
        targets: (N, T) ln(y + 1), NaN where unknown.
        split: the probe's split.
        seeds: probe seeds.
        indicators: the T names.
        config: the probe's settings (head, lr, patience).
        tuning: prompt-tuning settings.
        prompts: the T starting prompts (default :func:`prompt_for` each indicator).
        log: optional callable for a one-line summary.

    Returns:
        ``(metrics, predictions (S, N, T), info)``; ``info`` has the epochs run and best epochs.
    """
    start = time.perf_counter()
    tuning = tuning or PromptTuning()
    seeds = [int(s) for s in seeds]
    S, T = len(seeds), len(indicators)
    tr, va, te = (np.asarray(split[s], dtype=int) for s in ("train", "val", "test"))
    probe = _PromptProbe(model, images, prompts or [prompt_for(i) for i in indicators], seeds, (tr, va),
                         config, tuning)
    y = np.asarray(targets, np.float64)
    ys, y_mu, y_sd = standardise_targets(y, tr)
    epoch, best_ep = probe.fit(_head_targets(ys, tr, S), _head_targets(ys, va, S), tuning.max_epochs)
    with torch.no_grad():
        pred = probe.predict("all", torch.arange(S * T)).numpy() * np.tile(y_sd, S) + np.tile(y_mu, S)  # (N, H)
    predictions = pred.reshape(len(images), S, T).transpose(1, 0, 2)  # (S, N, T) in ln(y + 1)
    info = {"epochs_run": epoch, "best_epochs": best_ep.view(S, T).numpy(), "wall_s": time.perf_counter() - start,
            "prompt_moved": probe.prompt_moved().view(S, T).numpy(), "tuning": tuning.to_dict()}
    if log:
        log(f"learned prompts: {epoch} epochs, {info['wall_s']:.0f} s")
    return metrics_on_test(y, predictions, te, seeds, indicators), predictions, info


def _head_targets(ys: np.ndarray, idx: np.ndarray, S: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(standardised targets with NaN as 0, known mask) of regions ``idx``, (n, H): column s*T + t is indicator t."""
    yy = np.tile(ys[idx], (1, S))
    return torch.from_numpy(np.nan_to_num(yy).astype(np.float32)), torch.from_numpy(np.isfinite(yy))


class _PromptProbe:
    """The trained state of :func:`learned_prompt_probes`: H = seeds x indicators prompts and MLP heads.

    The frozen model's image memory is computed once per side (train, val, all regions); a head reads
    the decoder's next-token state after its prompt, standardised with the train statistics at the
    starting prompts.
    """

    def __init__(self, model, images: torch.Tensor, prompts: list[str], seeds: list[int], sides, config: ProbeConfig,
                 tuning: PromptTuning):
        S, T = len(seeds), len(prompts)
        self.reader = reader = PromptReader(model)
        emb0, last = _pad([reader.token_embeddings(prompt_ids(model, p)) for p in prompts])  # (T, L, C)
        self.last = last.repeat(S)  # head h = s * T + t
        tr, va = sides
        self.mem = {side: [reader.image_memory(images[idx[i:i + tuning.chunk]])
                           for i in range(0, len(idx), tuning.chunk)]
                    for side, idx in (("train", tr), ("val", va), ("all", np.arange(len(images))))}
        self.start = emb0.repeat(S, 1, 1)
        self.prompt = self.start.clone().requires_grad_(True)  # (H, L, C)
        with torch.no_grad():
            s0 = self.states("train", torch.arange(S * T))  # (n_tr, H, C)
            self.mu, self.sd = s0.mean(0), s0.std(0).clamp_min(1e-6)  # fixed: the start's train statistics
        self.head = _init_head(seeds, T, [reader.width, *config.hidden, 1])
        for p in self.head:
            p.requires_grad_(True)
        self.config = config
        self.opt = torch.optim.AdamW([{"params": self.head, "lr": config.lr, "weight_decay": config.weight_decay},
                                      {"params": [self.prompt], "lr": tuning.prompt_lr, "weight_decay": 0.0}])

    def states(self, side: str, heads: torch.Tensor) -> torch.Tensor:
        """The decoder's state after each asked head's prompt, on every region of ``side``: (n, h, C)."""
        tokens = self.reader.prompt_tokens(self.prompt[heads])
        return torch.cat([self.reader.next_token_state(m, tokens, self.last[heads]) for m in self.mem[side]])

    def predict(self, side: str, heads: torch.Tensor) -> torch.Tensor:
        """(n, h) standardised predictions of only the heads asked for (a stopped head costs nothing)."""
        return _head([p[heads] for p in self.head], (self.states(side, heads) - self.mu[heads]) / self.sd[heads])

    def fit(self, train, val, max_epochs: int) -> tuple[int, torch.Tensor]:
        """Full-batch AdamW; each head keeps its validation-best prompt and weights, restored at the end.

        The probe's loss, selection rule and early stopping (:func:`masked_mse`,
        :class:`EarlyStopping`), but not its loop: the prompts train too, and a stopped head is
        left out of the forward passes (the decoder over every tile is the cost), so its
        validation loss reads inf.

        Returns (the last epoch run, each head's best epoch).
        """
        (y_tr, m_tr), (y_va, m_va) = train, val
        H = len(self.prompt)
        with torch.no_grad():
            stopping = EarlyStopping(masked_mse(self.predict("val", torch.arange(H)), y_va, m_va),
                                     self.config.patience, self.config.min_delta)
        best_prompt, best_head = self.prompt.detach().clone(), [p.detach().clone() for p in self.head]
        epoch = 0
        for epoch in range(1, max_epochs + 1):
            heads = stopping.active.nonzero()[:, 0]
            self.opt.zero_grad(set_to_none=True)
            masked_mse(self.predict("train", heads), y_tr[:, heads], m_tr[:, heads]).sum().backward()
            self.opt.step()
            with torch.no_grad():
                val = torch.full((H,), float("inf"))
                val[heads] = masked_mse(self.predict("val", heads), y_va[:, heads], m_va[:, heads])
                better, _ = stopping.step(epoch, val)
                best_prompt[better] = self.prompt.detach()[better]
                for b, p in zip(best_head, self.head, strict=True):
                    b[better] = p.detach()[better]
            if not stopping.active.any():
                break
        with torch.no_grad():
            self.prompt.copy_(best_prompt)
            for p, b in zip(self.head, best_head, strict=True):
                p.copy_(b)
        return epoch, stopping.best_epoch

    def prompt_moved(self) -> torch.Tensor:
        """How far each prompt moved from its start, relative to the start's size: (H,)."""
        with torch.no_grad():
            return (self.prompt - self.start).norm(dim=-1).sum(-1) / self.start.norm(dim=-1).sum(-1)
