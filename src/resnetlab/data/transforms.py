"""Input transforms shared by training, evaluation and inference."""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["normalize"]


def normalize(x: torch.Tensor, mean: Sequence | torch.Tensor, std: Sequence | torch.Tensor) -> torch.Tensor:
    """Scale ``x`` (uint8 0-255, or float already in [0, 1]) to [0, 1], subtract ``mean``, divide by ``std``.

    ``mean``/``std`` are per channel (length C) or per pixel (nested C x H x W, the paper's
    "per-pixel mean subtraction", section 3.4 / 4.2), always on the [0, 1] scale and RGB order.
    ``x`` is N x C x H x W (or C x H x W); the result is float32 in ``x``'s memory format.
    """
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    if mean_t.dim() == 1:
        mean_t = mean_t[:, None, None]
    if std_t.dim() == 1:
        std_t = std_t[:, None, None]
    return (x - mean_t) / std_t
