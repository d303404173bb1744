"""Image augmentations shared by every image pretraining run, so ablations differ only in their objective.

Satellite tiles have no canonical orientation, so the eight dihedral transforms (rotations by 90°
and flips) are label-preserving; UrbanCLIP, UrbanLN and the image-only baselines all see them.
Self-supervised image-only objectives (SimCLR-style) add their own stronger views on top.
"""

from __future__ import annotations

import torch


def dihedral(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply one random dihedral transform per image of ``x`` (B, C, H, W) (square images)."""
    b = x.shape[0]
    k = torch.randint(0, 4, (b,), generator=generator)
    flip = torch.randint(0, 2, (b,), generator=generator).bool()
    out = torch.empty_like(x)
    for i in range(b):
        xi = torch.rot90(x[i], int(k[i]), dims=(-2, -1))
        out[i] = xi.flip(-1) if flip[i] else xi
    return out
