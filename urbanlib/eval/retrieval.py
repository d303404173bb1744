"""Image <-> text retrieval recall at k, with several captions per image allowed.

Image -> text: a hit when any caption of the query's own image is among the top k texts.
Text -> image: each caption queries the images; a hit when its image is among the top k.
"""

from __future__ import annotations

import numpy as np
import torch


def recall_at_k(image_emb: torch.Tensor, text_emb: torch.Tensor, text_owner: np.ndarray,
                ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Retrieval recall in percent.

    Args:
        image_emb: (N, D) L2-normalised image embeddings.
        text_emb: (M, D) L2-normalised text embeddings.
        text_owner: (M,) index in ``0..N-1`` of the image each text belongs to.
        ks: cut-offs.

    Returns:
        ``{"i2t_R@1": ..., "t2i_R@1": ..., ...}`` in percent.
    """
    owner = torch.as_tensor(np.asarray(text_owner), dtype=torch.long)
    if image_emb.ndim != 2 or text_emb.ndim != 2 or len(owner) != len(text_emb):
        raise ValueError(f"recall_at_k: image_emb {tuple(image_emb.shape)}, text_emb {tuple(text_emb.shape)}, "
                         f"text_owner {tuple(owner.shape)} do not fit")
    sim = image_emb.float() @ text_emb.float().T  # (N, M)
    n = sim.shape[0]
    out = {}
    # image -> text: rank of the best-ranked own caption
    order = sim.argsort(dim=1, descending=True)  # (N, M)
    own = owner[order] == torch.arange(n)[:, None]  # (N, M) bool
    first_hit = own.float().argmax(dim=1)  # position of the first own caption
    # text -> image
    rank_t = (sim.T > sim.T.gather(1, owner[:, None])).sum(dim=1)  # images scoring above the own one
    for k in ks:
        out[f"i2t_R@{k}"] = 100.0 * float((first_hit < k).float().mean())
        out[f"t2i_R@{k}"] = 100.0 * float((rank_t < k).float().mean())
    return out
