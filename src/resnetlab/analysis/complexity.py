"""Parameter and multiply-add counts (paper Table 1 "FLOPs" are multiply-adds).

Counted as the paper counts: the multiply-adds of every convolution and fully-connected
layer for one image. BN, ReLU, pooling and the shortcut additions are not counted.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["complexity"]


def complexity(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> dict[str, int]:
    """``{"params": ..., "macs": ...}`` of ``model`` for one ``input_size`` image (C, H, W).

    ``macs`` counts conv and linear multiply-adds, measured by running the model once on a
    zero image with forward hooks, so it is exact for any architecture and input size.
    """
    macs = 0

    def conv_hook(module: nn.Conv2d, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal macs
        k = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]  # (C_in/groups) kh kw
        macs += output.numel() // output.shape[0] * k

    def linear_hook(module: nn.Linear, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal macs
        macs += output.numel() // output.shape[0] * module.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return {"params": int(params), "macs": int(macs)}
