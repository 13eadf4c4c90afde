"""Layer responses of paper Fig. 7: the standard deviation of each 3x3 layer's output.

"The responses are the outputs of each 3x3 layer, after BN and before other nonlinearity
(ReLU/addition)" (section 4.2, Analysis of Layer Responses).  We hook the BN that follows
each 3x3 convolution (``convK`` -> ``bnK`` in the stem and in every block, see
``models/resnet.py``) and measure, in eval mode, the standard deviation of all its output
values over the whole image set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..data.transforms import normalize
from ..errors import ConfigError

__all__ = ["LayerResponse", "response_layers", "layer_responses"]


@dataclass(frozen=True)
class LayerResponse:
    """One 3x3 layer of Fig. 7: the BN module's name, its 1-based index and the response std."""

    index: int
    name: str
    std: float


def response_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """``(name, bn)`` of every BN that directly follows a 3x3 conv, in forward order.

    A module's ``convK`` child pairs with its ``bnK`` child (torchvision's naming, used by
    every ResNet and plain net here); the 7x7 ImageNet stem and 1x1 convs are skipped.
    """
    found = []
    for prefix, module in model.named_modules():
        for child_name, child in module.named_children():
            if not (isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3) and child_name.startswith("conv")):
                continue
            bn = getattr(module, "bn" + child_name[len("conv"):], None)
            if isinstance(bn, nn.BatchNorm2d):
                bn_name = f"{prefix}.bn{child_name[len('conv'):]}" if prefix else f"bn{child_name[len('conv'):]}"
                found.append((bn_name, bn))
    if not found:
        raise ConfigError(f"{type(model).__name__} has no 3x3 conv followed by BN (convK/bnK) to measure")
    return found


@torch.no_grad()
def layer_responses(
    model: nn.Module,
    images: torch.Tensor,
    *,
    mean: Sequence | torch.Tensor,
    std: Sequence | torch.Tensor,
    batch_size: int = 500,
) -> list[LayerResponse]:
    """Std of each 3x3 layer's response (after BN, before addition/ReLU) over ``images``.

    ``images`` is uint8 N x C x H x W (e.g. the 5k validation split, ``ImageSet.images``),
    normalized with ``mean``/``std`` as the model was trained.  The model runs in eval mode
    (its trained BN statistics, as at test time); the std is over every value of the layer's
    output for all images, accumulated exactly in float64.  Returned in layer order.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ConfigError(f"expected a non-empty N x C x H x W image tensor, got shape {tuple(images.shape)}")
    layers = response_layers(model)
    sums = torch.zeros(len(layers), 3, dtype=torch.float64)  # count, sum, sum of squares

    def make_hook(i: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            out = output.detach().double()
            sums[i, 0] += out.numel()
            sums[i, 1] += out.sum().cpu()
            sums[i, 2] += out.square().sum().cpu()

        return hook

    hooks = [bn.register_forward_hook(make_hook(i)) for i, (_, bn) in enumerate(layers)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device)
            model(normalize(x, mean, std))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out = []
    for i, (name, _) in enumerate(layers):
        n, s, sq = sums[i].tolist()
        var = max(sq / n - (s / n) ** 2, 0.0)
        out.append(LayerResponse(index=i + 1, name=name, std=math.sqrt(var)))
    return out
