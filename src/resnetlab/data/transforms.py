"""Input transforms shared by training, evaluation and inference."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..constants import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC

__all__ = ["normalize", "crop_flip", "draw_crop_flip", "pca_lighting", "image_transform"]


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


# ----------------------------------------------------------------------------- training augmentation



def crop_flip(images: torch.Tensor, pad: int, offset_y: torch.Tensor, offset_x: torch.Tensor,
              flip: torch.Tensor) -> torch.Tensor:
    """Pad ``images`` (N x C x H x W) by ``pad`` zeros per side, crop H x W at the given
    offsets (0..2*pad) and mirror where ``flip``: the CIFAR augmentation (section 4.2) of a
    whole batch in one gather, on whatever device the batch lives."""
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = offset_y[:, None] + torch.arange(h, device=images.device)  # N x H
    cols = torch.arange(w, device=images.device).expand(n, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + offset_x[:, None]  # N x W
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def draw_crop_flip(n: int, pad: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``(offset_y, offset_x, flip)`` for :func:`crop_flip` of ``n`` images."""
    device = generator.device
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=device)
    flip = torch.randint(0, 2, (n,), generator=generator, device=device).bool()
    return offsets[0], offsets[1], flip


def pca_lighting(x: torch.Tensor, generator: torch.Generator, alpha_std: float = 0.1) -> torch.Tensor:
    """AlexNet's PCA colour augmentation on a float batch on the [0, 1] scale: each image is
    shifted by ``eigvec @ (alpha * eigval)`` with ``alpha ~ N(0, alpha_std)`` (the paper's 0.1)."""
    alpha = torch.randn(x.shape[0], 3, generator=generator, device=generator.device).to(x.device) * alpha_std
    eigval = torch.tensor(IMAGENET_PCA_EIGVAL, device=x.device)
    eigvec = torch.tensor(IMAGENET_PCA_EIGVEC, device=x.device)
    shift = (alpha * eigval) @ eigvec.T  # N x 3
    return x + shift[:, :, None, None].to(x.dtype)


def image_transform(kind: str, crop: int, train: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-image uint8 transform for image folders (run in data-loader workers).

    Training: ``imagenet`` is the paper's scale augmentation (shorter side random in
    [256, 480], random ``crop``, flip; section 3.4), ``alexnet`` resizes to 256x256 then a
    random crop and flip, ``random_resized_crop`` is torchvision's alternative. Evaluation
    (``train=False``): shorter side ``crop * 8 / 7`` (256 for 224), centre crop.
    """
    from torchvision.transforms import v2

    if not train:
        return v2.Compose([v2.Resize(round(crop * 8 / 7), antialias=True), v2.CenterCrop(crop)])
    if kind == "imagenet":
        scale = round(crop * 256 / 224), round(crop * 480 / 224)
        first = [v2.RandomShortestSize(list(range(scale[0], scale[1] + 1)), antialias=True), v2.RandomCrop(crop)]
    elif kind == "alexnet":
        side = round(crop * 256 / 224)
        first = [v2.Resize((side, side), antialias=True), v2.RandomCrop(crop)]
    elif kind == "random_resized_crop":
        first = [v2.RandomResizedCrop(crop, antialias=True)]
    else:
        raise ValueError(f"no per-image transform {kind!r}")
    return v2.Compose(first + [v2.RandomHorizontalFlip()])
