"""UrbanLN: a long-text (IPSI) open_clip CLIP trained with momentum self-distillation.

Model level of UrbanLN (AAAI 2026), "Cross-Modal Pre-Training" and "Downstream Task Prediction":
the CLIP text encoder is stretched to 248 positions (:mod:`urbanlib.models.ipsi`) and trained with
L = (1 - μ) L_C + μ L_D against an EMA teacher and feature queues (:mod:`urbanlib.models.msd`).
After pre-training the image encoder is frozen and :meth:`UrbanLN.encode_image_features` gives the
region representation z_i for the downstream MLP heads.

Implements the urbanlib trainer protocol: ``forward(batch) -> {"loss", "contrastive_loss",
"distill_loss", ...}`` and ``after_optimizer_step(step)`` (EMA update, then enqueue). Teacher,
queues, queue pointer and temperature are parameters/buffers, so ``state_dict`` holds them all.

Speed: the CLIP's transformers are converted in place to :mod:`urbanlib.models.blocks` (same
parameter objects and ``state_dict`` keys) and the text is encoded by
:func:`urbanlib.models.towers.encode_text` (``is_causal`` attention, sequences cut after the batch's
last end token). The teacher is a copy of the converted student and runs under ``no_grad``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from urbanlib.models import towers
from urbanlib.models.blocks import convert
from urbanlib.models.ipsi import stretch_clip, stretched_length
from urbanlib.models.msd import MomentumSelfDistillation, effective_queue_size, msd_loss
from urbanlib.models.parameters import count_parameters

__all__ = ["Tokenized", "UrbanLN", "UrbanLNConfig", "tokenize_captions"]


@dataclass
class UrbanLNConfig:
    """Method hyper-parameters of UrbanLN (architecture sizes live in the CLIP config)."""

    use_ipsi: bool = True  # stretch the text positions (False: "w/o IPSI", 77 tokens)
    keep: int = 20  # IPSI: leading positions kept as they are (paper: 20)
    ratio: int = 4  # IPSI: interpolation ratio λ (paper: 4 -> 248 tokens)
    freeze_kept: bool = False  # variant: the kept positions stay frozen while the rest trains
    use_msd: bool = True  # momentum self-distillation (False: "w/o MSD", plain in-batch CLIP loss)
    mu: float = 0.5  # weight μ of the distillation loss, Eq. 6 (paper: 0.5)
    momentum: float = 0.995  # EMA momentum of the teacher (paper: 0.995)
    queue_size: int = 4096  # requested queue length K (paper: 4096)
    n_train_pairs: int | None = None  # if given, K is capped by msd.effective_queue_size
    queue_max_fraction: float = 0.5  # the cap: K <= this fraction of the training pairs
    mask_same_region: bool = True  # mask queue/batch entries of the query's own region (false negatives)
    lr: float = 1e-7  # AdamW learning rate; the paper's 1e-7 assumes a pretrained CLIP
    weight_decay: float = 0.2  # AdamW weight decay (open_clip's default; not given in the paper)


@dataclass
class Tokenized:
    """Token ids plus how many captions did not fit."""

    tokens: torch.Tensor  # (B, context_length) long
    lengths: list[int]  # tokens per caption incl. start/end, before truncation
    n_truncated: int  # captions longer than context_length (cut, end token kept)


def tokenize_captions(texts: list[str], context_length: int = 248, tokenizer=None) -> Tokenized:
    """Tokenize captions with CLIP's BPE, truncating to ``context_length`` and counting truncations.

    Output ids equal ``open_clip.tokenizer.SimpleTokenizer(context_length)(texts)``.
    """
    if tokenizer is None:
        from open_clip.tokenizer import SimpleTokenizer

        tokenizer = SimpleTokenizer(context_length=context_length)
    if isinstance(texts, str):
        texts = [texts]
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    lengths = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"caption {i} is {type(text).__name__}, expected str")
        ids = [tokenizer.sot_token_id, *tokenizer.encode(text), tokenizer.eot_token_id]
        lengths.append(len(ids))
        if len(ids) > context_length:
            ids = ids[: context_length - 1] + [tokenizer.eot_token_id]
        out[i, : len(ids)] = torch.tensor(ids)
    return Tokenized(out, lengths, sum(n > context_length for n in lengths))


@contextmanager
def _vision_tokens(visual: nn.Module):
    """Temporarily make an open_clip vision tower return (pooled, tokens)."""
    if not hasattr(visual, "output_tokens"):
        raise TypeError(
            f"{type(visual).__name__} cannot return tokens (needs an open_clip VisionTransformer)"
        )
    before = visual.output_tokens
    visual.output_tokens = True
    try:
        yield
    finally:
        visual.output_tokens = before


def _region_mean(x: torch.Tensor, mask: torch.Tensor | None, batch: int, views: int) -> torch.Tensor:
    """Masked mean over street views: (B*V, F) -> (B, F) (paper footnote 1)."""
    x = x.reshape(batch, views, -1)  # (B, V, F)
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, V, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1)


class UrbanLN(nn.Module):
    """UrbanLN pre-training model around an open_clip CLIP.

    Args:
        clip: an ``open_clip.CLIP`` (pretrained or random init). With ``config.use_ipsi`` it is
            stretched in place unless :func:`stretch_clip` was already applied.
        config: method hyper-parameters.
    """

    def __init__(self, clip: nn.Module, config: UrbanLNConfig | None = None):
        """Stretch ``clip`` if asked, then build the EMA teacher and queues from it."""
        super().__init__()
        self.config = config = config or UrbanLNConfig()
        convert(clip)  # fast blocks, in place, parameters shared (before the teacher copy below)
        if config.use_ipsi and not hasattr(clip, "ipsi_config"):
            stretch_clip(clip, keep=config.keep, ratio=config.ratio, freeze_kept=config.freeze_kept)
        self.clip = clip
        self.embed_dim = int(clip.visual.output_dim)
        self.queue_size_requested = config.queue_size
        self.queue_size = (
            effective_queue_size(config.queue_size, config.n_train_pairs, config.queue_max_fraction)
            if config.n_train_pairs is not None
            else config.queue_size
        )
        self.msd = (
            MomentumSelfDistillation(clip, self.embed_dim, self.queue_size, config.momentum, config.mu,
                                     config.mask_same_region)
            if config.use_msd
            else None
        )
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # teacher feats to enqueue

    # ---------------------------------------------------------------- text
    @property
    def context_length(self) -> int:
        """Text tokens per caption (248 after IPSI)."""
        return int(self.clip.context_length)

    def tokenize(self, texts: list[str]) -> Tokenized:
        """Tokenize captions for this model, counting the ones cut at ``context_length``."""
        return tokenize_captions(texts, self.context_length)

    # ---------------------------------------------------------------- image
    def _image_embedding(
        self, clip: nn.Module, image: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Normalised CLIP image embedding (B, D); street views are averaged per region first."""
        if image.ndim == 4:
            return F.normalize(towers.encode_image(clip, image), dim=-1)
        b, v = image.shape[:2]
        feats = towers.encode_image(clip, image.flatten(0, 1))  # (B*V, D)
        return F.normalize(_region_mean(feats, mask, b, v), dim=-1)

    def encode_image_features(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Region representation z_i: mean of the final ViT patch tokens (after ``ln_post``).

        Args:
            image: (B, 3, H, W) satellite images or (B, V, 3, H, W) street views.
            mask: (B, V) bool, valid street views (None: all valid).

        Returns:
            (B, width) features; for street views the mean over a region's valid views.
        """
        image, mask = _check_images(image, mask)
        flat = image.flatten(0, 1) if image.ndim == 5 else image  # (B*V, 3, H, W)
        with _vision_tokens(self.clip.visual):
            _, tokens = self.clip.visual(flat)  # (B*V, n_patches, width)
        z = tokens.mean(dim=1)  # (B*V, width)
        return _region_mean(z, mask, image.shape[0], image.shape[1]) if image.ndim == 5 else z

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """Normalised CLIP text embedding (B, D) of (B, context_length) token ids."""
        return F.normalize(towers.encode_text(self.clip, text), dim=-1)

    # ---------------------------------------------------------------- training
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """UrbanLN loss (Eq. 6) of a batch.

        Args:
            batch: ``image`` (B,3,H,W) or (B,V,3,H,W) with optional ``image_mask`` (B,V);
                ``text`` (B, context_length) token ids; ``region_index`` (B,) region ids >= 0.

        Returns:
            ``loss``, ``contrastive_loss``, ``distill_loss`` (0 without MSD), ``logit_scale``,
            ``n_candidates``, ``n_masked``; in eval mode also ``inbatch_contrastive_loss``, the
            student's plain in-batch loss (with MSD, ``contrastive_loss`` ranks the student against
            the teacher's features and the queue, so it grows as the queue fills).
        """
        for key in ("image", "text", "region_index"):
            if key not in batch:
                raise KeyError(f"batch has no field '{key}' (got {sorted(batch)})")
        image, mask = _check_images(batch["image"], batch.get("image_mask"))
        text, region = batch["text"], batch["region_index"]
        if text.ndim != 2 or text.shape[1] != self.context_length:
            raise ValueError(
                f"batch field 'text' must be (B, {self.context_length}), got {tuple(text.shape)}"
            )
        if region.shape != (image.shape[0],) or text.shape[0] != image.shape[0]:
            raise ValueError(
                f"batch fields disagree on B: image {tuple(image.shape)}, text {tuple(text.shape)}, "
                f"region_index {tuple(region.shape)}"
            )
        img = self._image_embedding(self.clip, image, mask)
        txt = self.encode_text(text)
        scale = self.clip.logit_scale
        if self.msd is None:
            out = msd_loss(img, txt, scale, region, mu=0.0, mask_same_region=self.config.mask_same_region)
        else:
            with torch.no_grad():
                img_m = self._image_embedding(self.msd.teacher, image, mask)
                txt_m = F.normalize(towers.encode_text(self.msd.teacher, text), dim=-1)
            out = self.msd.loss(img, txt, img_m, txt_m, region, scale)
            if self.training and torch.is_grad_enabled():
                self._pending.append((img_m, txt_m, region.detach()))
        if not self.training:  # validation: the student's in-batch CLIP loss, comparable across steps
            out["inbatch_contrastive_loss"] = msd_loss(img, txt, scale, region, mu=0.0,
                                                       mask_same_region=self.config.mask_same_region)["contrastive_loss"]
        out["logit_scale"] = scale.detach().exp()
        return out

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        """EMA-update the teacher from the student, then enqueue the teacher features of the step."""
        if self.msd is None:
            return
        self.msd.update_teacher(self.clip)
        for img_m, txt_m, region in self._pending:
            self.msd.queue.enqueue(img_m, txt_m, region)
        self._pending.clear()

    def parameter_counts(self) -> dict[str, int]:
        """Student total/trainable parameters and the (frozen) teacher's size."""
        counts = {f"student_{k}": v for k, v in count_parameters(self.clip).items()}
        counts["teacher"] = count_parameters(self.msd.teacher)["total"] if self.msd is not None else 0
        counts["total"] = count_parameters(self)["total"]
        counts["trainable"] = count_parameters(self)["trainable"]
        return counts

    def describe(self) -> dict[str, object]:
        """What was built: context length, queue size (requested vs used), parameter counts."""
        return {
            "context_length": self.context_length,
            "expected_context_length": stretched_length(77, self.config.keep, self.config.ratio)
            if self.config.use_ipsi
            else 77,
            "queue_size_requested": self.queue_size_requested,
            "queue_size": self.queue_size if self.msd is not None else 0,
            **self.parameter_counts(),
        }

    def make_optimizer(self, lr: float | None = None, weight_decay: float | None = None) -> torch.optim.AdamW:
        """AdamW over the student's trainable parameters (paper: lr 1e-7 for a pretrained CLIP).

        Gains, biases, the temperature and positional embeddings get no weight decay (open_clip's rule).
        """
        lr = self.config.lr if lr is None else lr
        wd = self.config.weight_decay if weight_decay is None else weight_decay
        decay, no_decay = [], []
        for name, p in self.clip.named_parameters():
            if not p.requires_grad:
                continue
            (
                no_decay if p.ndim < 2 or "positional_embedding" in name or "logit_scale" in name else decay
            ).append(p)
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr)


def _check_images(image: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate the ``image`` / ``image_mask`` batch fields."""
    if image.ndim not in (4, 5):
        raise ValueError(f"batch field 'image' must be (B,3,H,W) or (B,V,3,H,W), got {tuple(image.shape)}")
    if image.ndim == 4:
        return image, None
    if mask is not None:
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"batch field 'image_mask' must be {tuple(image.shape[:2])}, got {tuple(mask.shape)}"
            )
        if not mask.bool().any(dim=1).all():
            bad = (~mask.bool().any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(f"batch field 'image_mask': rows {bad} have no valid street view")
        mask = mask.bool()
    return image, mask
