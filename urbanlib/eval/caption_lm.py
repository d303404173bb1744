"""A caption encoder of urbanlib's own: UrbanCLIP's text tower trained as a language model on a city's captions.

MiniLM reads the captions with weights learned on other text. This module asks whether an encoder
trained on the city's own captions reads them better (the Real captions page, issue "Real data").
The encoder is the unimodal text tower of the scale's UrbanCLIP model (the same class and sizes
the image-text model trains), with a next-token head tied to its token embedding, trained with the
captioning (language-model) objective alone: no image and no label is read. As in pretraining, the
captions of a held-out tenth of the regions decide the run's length (early stopping on their LM
loss, learning rate cut on plateaus), and the best evaluation's weights are the result.

A region's features are the mean over its captions of the tower's final token states (after its
LayerNorm), each averaged over the caption's tokens. The run is cached under ``caption_lm/`` and
resumes like any training run.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from urbanlib.cache import cache_dir, file_lock, stable_hash
from urbanlib.data.report import DataError
from urbanlib.models import create_model
from urbanlib.models.text import tokenize
from urbanlib.models.vocab import PAD_ID, Vocab
from urbanlib.provenance import PACKAGE_ROOT, files_hash
from urbanlib.scales import get_scale
from urbanlib.train.trainer import TrainConfig, Trainer

NAME = "caption LM (ours)"  # how the pages name the encoder
# sources that shape a trained caption LM (its cache key): this module, the tower and the trainer
_CODE = ("eval/caption_lm.py", "models/urbanclip.py", "models/towers.py", "models/blocks.py", "models/text.py",
         "models/vocab.py", "models/config.py", "models/factory.py", "train/trainer.py", "train/schedule.py")


@dataclass(frozen=True)
class CaptionLMConfig:
    """The caption LM's sizes and training; :meth:`for_scale` gives the preset's."""

    model: str = "urbanclip-cpu"  # the UrbanCLIP config whose text tower is trained
    context_length: int = 40  # tokens per caption with <start> and <end> (the release's sentences: ~22 BPE tokens)
    epochs: int = 20  # step cap, in passes over the training captions
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 50
    evals_per_epoch: int = 2
    patience: int = 5  # evaluations without improvement before the run stops (spanning >= 2 epochs)
    plateau_patience: int = 2  # evaluations without improvement before the lr is halved
    val_fraction: float = 0.1  # regions whose captions decide the run's length
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"CaptionLMConfig.val_fraction must lie in (0, 1), got {self.val_fraction}")

    @classmethod
    def for_scale(cls, scale, **overrides) -> CaptionLMConfig:
        """The preset's model size; ``smoke`` trains a tiny tower for two epochs."""
        s = get_scale(scale)
        base = {"model": f"urbanclip-{s.model_size}"}
        if s.name == "smoke":
            base.update(epochs=2, batch_size=16, warmup_steps=2, patience=2)
        return cls(**{**base, **overrides})


class CaptionLM(nn.Module):
    """UrbanCLIP's unimodal text tower with a tied next-token head (trainer protocol: ``forward(batch)``)."""

    def __init__(self, config: CaptionLMConfig, vocab: Vocab):
        super().__init__()
        # build the image-text model for its tower: the same class and sizes UrbanCLIP trains
        self.text = create_model(config.model, vocab=vocab, context_length=config.context_length).text
        self.register_buffer("full_to_compact", vocab.full_to_compact.clone())
        self.vocab = vocab

    def next_token_logits(self, text: torch.Tensor) -> torch.Tensor:
        """Tokenizer ids (B, L) -> logits (B, L-1, V) over the vocabulary's compact ids, for the token after each input."""
        states, _ = self.token_states(text)
        return states @ self.text.token_embedding.weight.T  # tied to the input embedding

    def token_states(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenizer ids (B, L) -> LayerNorm'd states (B, L-1, width) of the inputs, and the inputs (model ids)."""
        inputs = self.full_to_compact[text][:, :-1]
        _, tokens = self.text(inputs)
        return self.text.ln_final(tokens), inputs

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Next-token cross-entropy over the caption's tokens (padding ignored)."""
        labels = self.full_to_compact[batch["text"]][:, 1:]
        logits = self.next_token_logits(batch["text"])
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=PAD_ID)
        return {"loss": loss, "caption_loss": loss.detach()}

    @torch.no_grad()
    def embed(self, text: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Tokenizer ids (M, L) -> (M, width) mean token state over each caption's non-pad inputs."""
        self.eval()
        out = []
        for start in range(0, len(text), batch_size):
            states, inputs = self.token_states(text[start:start + batch_size])
            mask = (inputs != PAD_ID).unsqueeze(-1).to(states.dtype)
            out.append(((states * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
        return np.concatenate(out).astype(np.float32)


class _Captions(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"text": self.ids[i]}


@dataclass
class CaptionLMRun:
    """A trained caption LM's region features and how its training ended."""

    features: np.ndarray  # (N, width) float32, aligned with the regions; NaN rows: no caption
    summary: dict  # captions, vocabulary, steps, best step, epochs, stop reason, validation loss
    out_dir: Path
    model: CaptionLM  # the trained encoder (its best evaluation's weights), to embed other captions


def _held_out_regions(region_ids: np.ndarray, fraction: float, seed: int) -> set[str]:
    rng = np.random.default_rng(seed)
    n = max(1, int(round(fraction * len(region_ids))))
    return set(rng.choice(np.asarray(region_ids, dtype=str), size=n, replace=False).tolist())


def train_caption_lm(captions: pd.DataFrame, region_ids, config: CaptionLMConfig | None = None,
                     progress: bool = False, num_threads: int = 0) -> CaptionLMRun:
    """Train (or load the cached) caption LM on ``captions`` and return the regions' features.

    Args:
        captions: rows with ``region_id`` and ``text`` (one caption or sentence per row), label-free.
        region_ids: the regions, in the order the features are returned.
        config: sizes and training; default :class:`CaptionLMConfig`.
        progress: show the trainer's progress bar.
        num_threads: torch threads (0 leaves the process's setting).

    Raises:
        DataError: a column is missing, or too few captions for one training batch.
    """
    config = config or CaptionLMConfig()
    for col in ("region_id", "text"):
        if col not in captions.columns:
            raise DataError(f"captions table lacks column {col!r}; has {list(captions.columns)}")
    ids = np.asarray(region_ids).astype(str)
    if len(set(ids)) != len(ids):
        raise DataError(f"caption LM: region ids repeat ({len(ids) - len(set(ids))} duplicate(s)); each region once")
    text = captions["text"].astype("string").str.strip()
    caps = captions[text.notna() & (text != "") & captions["region_id"].astype(str).isin(ids)]
    if caps.empty:
        raise DataError(f"caption LM: none of the {len(captions)} caption rows is a non-empty text of one of the "
                        f"{len(ids)} regions")
    owners = caps["region_id"].astype(str).to_numpy()
    texts = caps["text"].astype(str).tolist()
    held = _held_out_regions(np.unique(owners), config.val_fraction, config.seed)
    is_val = np.isin(owners, list(held))
    if (~is_val).sum() < config.batch_size or is_val.sum() == 0:
        raise DataError(f"caption LM: {(~is_val).sum()} training and {is_val.sum()} held-out captions; it needs at "
                        f"least one batch of {config.batch_size} and one held-out caption")
    tokens = tokenize(texts, config.context_length)
    vocab = Vocab.from_tokenized(tokens)  # the city's caption tokens (label-free), so no region reads an untrained <unk>
    digest = hashlib.sha256("\n".join(f"{o}\t{t}" for o, t in zip(owners, texts, strict=True)).encode()).hexdigest()
    code = [PACKAGE_ROOT / p for p in _CODE] + [PACKAGE_ROOT / "models" / "configs" / f"{config.model}.json"]
    key = stable_hash({"captions": digest, "config": asdict(config), "code": files_hash(code)[:16]})
    out_dir = cache_dir("caption_lm") / key
    out_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(out_dir / ".lock"):  # two processes asking for one run: the second waits, then loads it
        return _train_and_embed(config, vocab, tokens, is_val, owners, ids, out_dir, progress, num_threads)


def _train_and_embed(config, vocab, tokens, is_val, owners, ids, out_dir, progress, num_threads) -> CaptionLMRun:
    torch.manual_seed(config.seed)
    model = CaptionLM(config, vocab)
    train_cfg = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                            warmup_steps=config.warmup_steps, seed=config.seed, progress=progress,
                            num_threads=num_threads, schedule="plateau", evals_per_epoch=config.evals_per_epoch,
                            patience=config.patience, plateau_patience=config.plateau_patience)
    trainer = Trainer(model, _Captions(tokens[torch.from_numpy(~is_val)]), train_cfg, out_dir, device="cpu",
                      val_dataset=_Captions(tokens[torch.from_numpy(is_val)]))
    trainer.fit()
    per_caption = model.embed(tokens)
    pos = pd.Series(np.arange(len(ids)), index=ids)
    rows = pos.loc[owners].to_numpy()
    total = np.zeros((len(ids), per_caption.shape[1]))
    np.add.at(total, rows, per_caption)
    count = np.bincount(rows, minlength=len(ids))
    with np.errstate(invalid="ignore", divide="ignore"):
        features = (total / count[:, None]).astype(np.float32)  # regions without captions: NaN
    stop = trainer.stop
    summary = {"captions (train / held out)": f"{int((~is_val).sum())} / {int(is_val.sum())}",
               "vocabulary": len(vocab), "steps": trainer.step, "epochs": round(trainer.step / trainer.steps_per_epoch, 2),
               "best step": stop.best_step, "stopped by": stop.stopped_by,
               "held-out LM loss (best)": None if stop.best_val is None else round(float(stop.best_val), 4),
               "held-out LM loss at step 0": _first_val(out_dir)}
    return CaptionLMRun(features, summary, out_dir, model)


def _first_val(out_dir: Path) -> float | None:
    path = out_dir / "val.csv"
    if not path.exists():
        return None
    val = pd.read_csv(path)
    return round(float(val["val_loss"].iloc[0]), 4) if len(val) else None
