"""Parameter counts of a module, the one count every model, baseline and efficiency table reports."""

from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module) -> dict[str, int]:
    """Total, trainable (``requires_grad``) and frozen parameter counts of ``module`` (shared tensors once)."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}
