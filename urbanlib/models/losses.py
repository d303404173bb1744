"""UrbanCLIP's objective (Eq. 6-7): image-text contrastive loss + captioning (LM) loss.

Deviation from Eq. 6: the paper's ``sim`` is a bare inner product; we L2-normalise both
embeddings and divide by a learnable temperature (CLIP/CoCa practice). Without normalisation the
inner product can grow without bound and the softmax saturates early.

Under DDP every returned value is the global-batch value, while the gradient of ``"loss"`` is that
of a rank-local surrogate whose DDP average equals the global-batch gradient (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from urbanlib.train.distributed import all_gather_no_grad, all_gather_with_grad, world_size


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the global batch (negatives gathered from all ranks).

    Args:
        image_emb: (B, D) L2-normalised local image embeddings.
        text_emb: (B, D) L2-normalised local text embeddings.
        logit_scale: scalar, 1 / temperature (already exponentiated).

    Returns:
        Scalar: mean of image->text and text->image cross-entropies over the global batch.
        Gradients reach only the local slice; see the module docstring for DDP scaling.
    """
    all_img = all_gather_with_grad(image_emb)  # (W*B, D)
    all_txt = all_gather_with_grad(text_emb)  # (W*B, D)
    logits = logit_scale * all_img @ all_txt.t()  # (W*B, W*B), rows images, cols texts
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def caption_loss_parts(logits: torch.Tensor, labels: torch.Tensor, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy and the number of non-pad targets.

    Args:
        logits: (B, T, V) next-token logits.
        labels: (B, T) target ids; ``pad_id`` targets are ignored.
        pad_id: padding id.
    """
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                            ignore_index=pad_id, reduction="sum")  # over (B*T,)
    return total, (labels != pad_id).sum()


def urbanclip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    lambda_con: float = 1.0,
    lambda_lm: float = 2.0,
    pad_id: int = 0,
) -> dict[str, torch.Tensor]:
    """Eq. 7: ``lambda_con * L_con + lambda_lm * L_LM``.

    Returns:
        ``{"contrastive_loss", "caption_loss", "loss"}``; ``loss`` is what to backpropagate
        (equals the weighted sum of the terms in a single process).
    """
    world = world_size()
    if world > 1:  # shared scalar: same value, 1/world of the gradient (undoes the *world below)
        logit_scale = logit_scale / world + (logit_scale * (1 - 1 / world)).detach()
    con = contrastive_loss(image_emb, text_emb, logit_scale) if lambda_con else logits.new_zeros(())
    cap_sum, count = caption_loss_parts(logits, labels, pad_id)
    global_count = all_gather_no_grad(count.reshape(1).float()).sum().clamp_min(1)
    cap_surrogate = cap_sum * world / global_count  # DDP averages over ranks -> global token mean
    cap_true = all_gather_no_grad(cap_sum.detach().reshape(1)).sum() / global_count
    # every rank computes the same global contrastive loss but only its slice gets gradient;
    # DDP averages, so multiply by world size to recover the full gradient.
    surrogate = lambda_con * con * world + lambda_lm * cap_surrogate
    if world == 1:
        return {"contrastive_loss": con, "caption_loss": cap_surrogate, "loss": surrogate}
    true = lambda_con * con.detach() + lambda_lm * cap_true
    loss = true + (surrogate - surrogate.detach())  # value of the global loss, gradient of the surrogate
    return {"contrastive_loss": con, "caption_loss": cap_true, "loss": loss}
