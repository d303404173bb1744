"""Momentum-based self-distillation (MSD), UrbanLN Eq. (3)-(6).

A momentum (EMA) copy of the student CLIP is the teacher. Two FIFO queues keep the teacher's last K
image and text features. For a student query (image feature v_i, or text feature t_i) the candidates
are the K + N *teacher* features: the current batch's momentum features first (the positive sits at
the query's own index), then the queue. With s the cosine similarity and τ CLIP's learnable
temperature (``logit_scale = log(1/τ)``):

- p^{i2t}_k(I_i) = softmax_k(cos(v_i, t^m_k) / τ)  and  p^{t2i}_k(T_i) = softmax_k(cos(t_i, v^m_k) / τ)  (Eq. 3)
- L_C = -1/(2N) Σ_i [log p^{i2t}_{i}(I_i) + log p^{t2i}_{i}(T_i)]                                     (Eq. 4)
- q^{i2t}, q^{t2i}: the same softmax with the teacher's own query, cos(v^m_i, t^m_k) / τ (Eq. 3 with s^m);
  they carry no gradient.
- L_D = ½ E_i [KL(q^{i2t}(I_i) ‖ p^{i2t}(I_i)) + KL(q^{t2i}(T_i) ‖ p^{t2i}(T_i))]                     (Eq. 5)
- L = (1 - μ) L_C + μ L_D, μ = 0.5                                                                   (Eq. 6)

Two additions the paper does not spell out, both documented where they act:

- False negatives: a candidate from the same region as the query (other than the positive itself)
  is masked out of both p and q. Queue slots remember the region id of their entry; empty slots
  hold -1 and are masked too, so an unfilled queue contributes nothing.
- Queue size: on a small training set a K=4096 queue would hold many stale copies of every pair.
  :func:`effective_queue_size` caps K at half the number of training pairs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from urbanlib.train.distributed import all_gather_no_grad, all_gather_with_grad, rank

__all__ = [
    "FeatureQueue",
    "MomentumSelfDistillation",
    "effective_queue_size",
    "ema_update",
    "msd_loss",
]

MAX_LOGIT_SCALE = 100.0  # open_clip's clamp on exp(logit_scale), i.e. τ >= 0.01


def effective_queue_size(queue_size: int, n_train_pairs: int, max_fraction: float = 0.5) -> int:
    """Cap the queue length relative to the training set.

    Rule: ``K_eff = min(K, floor(max_fraction * n_train_pairs))`` with ``max_fraction = 0.5``. The
    queue then never spans more than half an epoch, so no training pair appears in it twice and its
    features are at most half an epoch stale (MoCo/ALBEF use K=4096-65536 on millions of pairs,
    where this cap never binds; the paper's K=4096 is kept whenever the data has >= 8192 pairs).

    Args:
        queue_size: requested K (paper: 4096).
        n_train_pairs: number of (image, caption) training pairs.
        max_fraction: largest queue length as a fraction of the training set.

    Returns:
        The queue length to use (0 disables the queue).
    """
    if queue_size < 0 or n_train_pairs < 0:
        raise ValueError(f"queue_size ({queue_size}) and n_train_pairs ({n_train_pairs}) must be >= 0")
    return max(0, min(int(queue_size), int(max_fraction * n_train_pairs)))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """θ_teacher <- m θ_teacher + (1 - m) θ_student for every parameter; buffers are copied."""
    t_params = dict(teacher.named_parameters())
    for name, p_s in student.named_parameters():
        t_params[name].mul_(momentum).add_(p_s.detach(), alpha=1.0 - momentum)
    t_bufs = dict(teacher.named_buffers())
    for name, b_s in student.named_buffers():
        t_bufs[name].copy_(b_s)


class FeatureQueue(nn.Module):
    """FIFO queues of teacher image/text features with the region id of every entry.

    Everything is a registered buffer (features, region ids, write pointer), so checkpoints restore
    the queue exactly. Under DDP, :meth:`enqueue` gathers the entries of all ranks first, so every
    rank holds the same queue.
    """

    def __init__(self, size: int, dim: int):
        """Create an empty queue of ``size`` slots for ``dim``-dimensional features."""
        super().__init__()
        self.size = int(size)
        self.register_buffer("image", torch.zeros(self.size, dim))  # (K, D)
        self.register_buffer("text", torch.zeros(self.size, dim))  # (K, D)
        self.register_buffer("region", torch.full((self.size,), -1, dtype=torch.long))  # (K,) -1 = empty
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))

    @property
    def n_filled(self) -> int:
        """Number of slots holding an entry."""
        return int((self.region >= 0).sum())

    @torch.no_grad()
    def enqueue(self, image: torch.Tensor, text: torch.Tensor, region: torch.Tensor) -> None:
        """Append (N, D) features and (N,) region ids, overwriting the oldest entries.

        Features are gathered across ranks (identity in one process). If more than ``size`` entries
        arrive at once only the newest ``size`` are kept.
        """
        if self.size == 0:
            return
        image, text, region = all_gather_no_grad(image), all_gather_no_grad(text), all_gather_no_grad(region)
        if (region < 0).any():
            raise ValueError("region ids must be >= 0 (-1 marks an empty queue slot)")
        n = image.shape[0]
        if n > self.size:
            image, text, region = image[-self.size :], text[-self.size :], region[-self.size :]
            start = (int(self.ptr) + n - self.size) % self.size
            n = self.size
        else:
            start = int(self.ptr)
        idx = (start + torch.arange(n, device=self.image.device)) % self.size  # wraps around
        self.image[idx] = image.to(self.image.dtype)
        self.text[idx] = text.to(self.text.dtype)
        self.region[idx] = region.to(torch.long)
        self.ptr[0] = (start + n) % self.size


def _kl(q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(q ‖ p) for (B, C) probabilities ``q`` and log-probabilities ``log_p``; 0·log0 = 0."""
    safe_log_p = torch.where(q > 0, log_p, torch.zeros_like(log_p))  # masked entries: q = 0, log p = -inf
    return (torch.xlogy(q, q) - q * safe_log_p).sum(dim=1)  # (B,)


def msd_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    region: torch.Tensor,
    teacher_image: torch.Tensor | None = None,
    teacher_text: torch.Tensor | None = None,
    queue: FeatureQueue | None = None,
    mu: float = 0.5,
    mask_same_region: bool = True,
) -> dict[str, torch.Tensor]:
    """UrbanLN pre-training loss, Eq. (3)-(6).

    Args:
        image: (B, D) L2-normalised student image features (queries for image->text).
        text: (B, D) L2-normalised student text features (queries for text->image).
        logit_scale: CLIP's learnable log(1/τ); exp is clamped at 100.
        region: (B,) region id of every pair; same-region candidates other than the positive are
            masked as false negatives.
        teacher_image: (B, D) normalised momentum image features of the same batch, or None.
        teacher_text: (B, D) normalised momentum text features, or None.
        queue: teacher feature queue appended to the candidates (None or empty: batch only).
        mu: weight μ of the distillation term (0 = contrastive only).
        mask_same_region: mask same-region candidates (default). False keeps them as negatives,
            the plain MoCo/ALBEF queue, for the false-negative sweep.

    Without teacher features the candidates are the student's own batch features (gathered across
    ranks with gradient): with ``mu=0`` this is the plain in-batch CLIP loss ("w/o MSD").

    Returns:
        dict with ``loss`` (Eq. 6), ``contrastive_loss`` (Eq. 4), ``distill_loss`` (Eq. 5, 0 without
        a teacher), ``n_candidates``, ``n_masked`` (mean masked candidates per query),
        ``n_candidates_effective`` (unmasked candidates per query: L_C's chance level is its log) and
        ``n_false_negatives`` (mean candidates per query from the query's own region other than its
        positive: masked when ``mask_same_region``, treated as negatives otherwise).
    """
    if (teacher_image is None) != (teacher_text is None):
        raise ValueError("give both teacher_image and teacher_text, or neither")
    has_teacher = teacher_image is not None
    if mu > 0 and not has_teacher:
        raise ValueError(f"mu={mu} > 0 needs teacher features (distillation targets)")
    b = image.shape[0]
    if has_teacher:
        cand_img = all_gather_no_grad(teacher_image)  # (N, D), N = B * world
        cand_txt = all_gather_no_grad(teacher_text)
    else:
        cand_img = all_gather_with_grad(image)  # plain CLIP: the student's own batch
        cand_txt = all_gather_with_grad(text)
    cand_region = all_gather_no_grad(region)  # (N,)
    if queue is not None and queue.size > 0:
        cand_img = torch.cat([cand_img, queue.image.to(cand_img.dtype)], dim=0)  # (N + K, D)
        cand_txt = torch.cat([cand_txt, queue.text.to(cand_txt.dtype)], dim=0)
        cand_region = torch.cat([cand_region, queue.region], dim=0)  # (N + K,)
    rows = torch.arange(b, device=image.device)
    positive = rank() * b + rows  # (B,) index of each query's pair among the candidates
    cols = torch.arange(cand_region.shape[0], device=image.device)
    not_positive = cols.unsqueeze(0) != positive.unsqueeze(1)
    empty = (cand_region < 0).unsqueeze(0)
    false_negative = (region.unsqueeze(1) == cand_region.unsqueeze(0)) & ~empty & not_positive  # (B, N + K)
    masked = (empty & not_positive) | (false_negative if mask_same_region else torch.zeros_like(false_negative))

    scale = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    neg_inf = torch.finfo(image.dtype).min

    def logits(query: torch.Tensor, cands: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return (s * query @ cands.to(query.dtype).T).masked_fill(masked, neg_inf)  # (B, N + K)

    log_p_i2t = F.log_softmax(logits(image, cand_txt, scale), dim=1)
    log_p_t2i = F.log_softmax(logits(text, cand_img, scale), dim=1)
    contrastive = -0.5 * (log_p_i2t[rows, positive].mean() + log_p_t2i[rows, positive].mean())

    if has_teacher:
        with torch.no_grad():
            s_m = scale.detach()
            q_i2t = F.softmax(logits(teacher_image, cand_txt, s_m), dim=1)
            q_t2i = F.softmax(logits(teacher_text, cand_img, s_m), dim=1)
        distill = 0.5 * (_kl(q_i2t, log_p_i2t).mean() + _kl(q_t2i, log_p_t2i).mean())
    else:
        distill = torch.zeros((), device=image.device, dtype=contrastive.dtype)
    return {
        "loss": (1.0 - mu) * contrastive + mu * distill,
        "contrastive_loss": contrastive,
        "distill_loss": distill,
        "n_candidates": torch.tensor(float(cand_region.shape[0]), device=image.device),
        "n_masked": masked.float().sum(dim=1).mean().detach(),
        "n_candidates_effective": (~masked).float().sum(dim=1).mean().detach(),  # chance level: ln of this
        "n_false_negatives": false_negative.float().sum(dim=1).mean().detach(),
    }


class MomentumSelfDistillation(nn.Module):
    """EMA teacher + feature queue for UrbanLN's momentum self-distillation.

    The teacher is a frozen deep copy of the student (its weights are buffers of the optimisation:
    ``requires_grad=False``, updated only by :meth:`update_teacher`). Teacher weights and queue live
    in ``state_dict``.
    """

    def __init__(
        self,
        student: nn.Module,
        embed_dim: int,
        queue_size: int = 4096,
        momentum: float = 0.995,
        mu: float = 0.5,
        mask_same_region: bool = True,
    ):
        """Copy ``student`` into the teacher and create a queue of ``queue_size`` slots."""
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum={momentum} must lie in [0, 1]")
        self.momentum = float(momentum)
        self.mu = float(mu)
        self.mask_same_region = bool(mask_same_region)
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)
        self.queue = FeatureQueue(queue_size, embed_dim)

    @torch.no_grad()
    def update_teacher(self, student: nn.Module) -> None:
        """EMA step of the teacher towards ``student`` (call after each optimizer step)."""
        ema_update(self.teacher, student, self.momentum)

    def loss(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        teacher_image: torch.Tensor,
        teacher_text: torch.Tensor,
        region: torch.Tensor,
        logit_scale: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Eq. (6) against this module's queue; see :func:`msd_loss`."""
        return msd_loss(image, text, logit_scale, region, teacher_image, teacher_text, self.queue, self.mu,
                        self.mask_same_region)
