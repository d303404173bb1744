"""Learning-rate schedule: linear warmup, then cosine decay to ``min_ratio`` of the peak."""

from __future__ import annotations

import math


def lr_at(step: int, peak_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Warmup rises linearly from ``peak_lr / warmup_steps`` to ``peak_lr`` over ``warmup_steps``;
    cosine decay then reaches ``min_ratio * peak_lr`` at ``total_steps``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return peak_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
