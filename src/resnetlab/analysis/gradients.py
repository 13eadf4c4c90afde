"""Per-layer gradient norms: the diagnostic used to discuss degradation (section 4.1).

The paper argues that plain nets' difficulty is not vanishing gradients ("the backward
propagated gradients exhibit healthy norms with BN", section 4.1).  :func:`gradient_norms`
measures ``||dL/dW||`` of every conv and fc weight for one batch, so plain and residual nets
of the same depth can be compared at initialisation and along training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import normalize
from ..errors import ConfigError

__all__ = ["GradientNorm", "weighted_layers", "gradient_norms"]


@dataclass(frozen=True)
class GradientNorm:
    """One weighted layer: 1-based index in forward order, module name, ``||dL/dW||_2``."""

    index: int
    name: str
    norm: float


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every conv and linear layer in registration (= forward) order,
    projection shortcuts excluded (they are not among the paper's "weighted layers")."""
    layers = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and ".downsample." not in f".{name}."
    ]
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no conv or linear layer")
    return layers


def gradient_norms(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    mean: Sequence | torch.Tensor,
    std: Sequence | torch.Tensor,
) -> list[GradientNorm]:
    """``||dL/dW||`` of each weighted layer for the cross-entropy loss of one batch.

    The model runs in train mode (BN uses batch statistics, as during training); its
    parameters, ``.grad`` fields and BN running statistics are left unchanged.
    ``images`` is uint8 (or [0, 1] float) N x C x H x W, ``targets`` int64 N.
    """
    if images.shape[0] != targets.shape[0] or images.shape[0] < 2:
        raise ConfigError(f"need a batch of >= 2 images with one target each, got {images.shape[0]} / {targets.shape[0]}")
    layers = weighted_layers(model)
    device = next(model.parameters()).device
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        logits = model(normalize(images.to(device), mean, std))
        loss = F.cross_entropy(logits, targets.to(device))
        grads = torch.autograd.grad(loss, [m.weight for _, m in layers])
    finally:
        model.train(was_training)
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    return [GradientNorm(i + 1, name, float(g.norm())) for i, ((name, _), g) in enumerate(zip(layers, grads))]
