"""Image transforms shared by training, evaluation and inference.

Training augmentations take an explicit ``torch.Generator`` (never the global RNG), so the
augmentation of any image of any step is a pure function of the run's seed and that step;
:mod:`resnetlab.data.pipeline` decides which of them a run uses. The evaluation view
(:func:`center_view`) is the one single-crop test view of resnetlab: ``eval``, ``predict`` and
the validation of a training run all cut it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torchvision.transforms.v2 import functional as TF

from ..constants import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC
from ..errors import DataError

__all__ = [
    "RESIZE_RATIO",
    "SMALL_INPUT",
    "normalize",
    "resize_side",
    "center_view",
    "crop_flip",
    "draw_crop_flip",
    "pca_lighting",
    "scale_crop_flip",
    "square_crop_flip",
    "random_resized_crop_flip",
    "pad_crop_flip",
]

#: resize side : crop side of the single- and 10-crop tests, and of AlexNet's 256x256 training
#: images: 256 : 224 (section 3.4; Krizhevsky et al. 2012, section 2)
RESIZE_RATIO = 256 / 224
#: the largest input side of a small-image model (CIFAR, digits): trained and tested on whole
#: images, "the single view of the original 32x32 image" (section 4.2), never resized and cropped
SMALL_INPUT = 64
#: the shorter side of the paper's scale augmentation, [256, 480] for 224 crops (section 3.4)
SCALE_RANGE = (256, 480)


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


# ----------------------------------------------------------------------------- the evaluation view


def resize_side(crop: int) -> int:
    """Shorter side an image is resized to before cropping ``crop``: 256 for 224 (section 3.4);
    small-image models (CIFAR-size, trained on whole images) crop nothing away."""
    return round(crop * RESIZE_RATIO) if crop > SMALL_INPUT else crop


def center_view(image: torch.Tensor, crop: int) -> torch.Tensor:
    """The single-crop test view of a uint8 image: shorter side to :func:`resize_side`, central
    ``crop`` x ``crop``. An image that is already ``crop`` x ``crop`` is returned as it is."""
    if tuple(image.shape[-2:]) != (crop, crop):
        image = TF.resize(image, [resize_side(crop)], antialias=True)
    return TF.center_crop(image, [crop])


# ----------------------------------------------------------------------------- whole-batch augmentation


def crop_flip(images: torch.Tensor, pad: int, offset_y: torch.Tensor, offset_x: torch.Tensor,
              flip: torch.Tensor, crop: int | None = None) -> torch.Tensor:
    """Pad ``images`` (N x C x H x W) by ``pad`` zeros per side, crop ``crop`` x ``crop`` (default
    H x W) at the given offsets (0..H+2*pad-crop) and mirror where ``flip``: the CIFAR augmentation
    (section 4.2) of a whole batch in one gather, on whatever device the batch lives."""
    n, c, h, w = images.shape
    side_y, side_x = (h, w) if crop is None else (crop, crop)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = offset_y[:, None] + torch.arange(side_y, device=images.device)  # N x crop
    cols = torch.arange(side_x, device=images.device).expand(n, side_x)
    cols = torch.where(flip[:, None], side_x - 1 - cols, cols) + offset_x[:, None]  # N x crop
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def draw_crop_flip(n: int, room: int, generator: torch.Generator,
                   flip: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``(offset_y, offset_x, flip)`` for :func:`crop_flip` of ``n`` images: offsets in
    ``0..room`` (``room`` = padded side - crop side), each image mirrored with probability 1/2
    when ``flip`` (the flips are drawn either way, so ``flip`` changes nothing else)."""
    device = generator.device
    offsets = torch.randint(0, room + 1, (2, n), generator=generator, device=device)
    mirror = torch.randint(0, 2, (n,), generator=generator, device=device).bool()
    return offsets[0], offsets[1], mirror & flip


def pca_lighting(x: torch.Tensor, generator: torch.Generator, alpha_std: float = 0.1) -> torch.Tensor:
    """AlexNet's PCA colour augmentation (Krizhevsky et al. 2012, section 4.1) on a float batch
    on the [0, 1] scale: each image is shifted by ``eigvec @ (alpha * eigval)``, ``alpha`` drawn
    from N(0, ``alpha_std``) per image and component (the paper's 0.1); the eigenvectors are the
    columns of :data:`~resnetlab.constants.IMAGENET_PCA_EIGVEC`."""
    alpha = torch.randn(x.shape[0], 3, generator=generator, device=generator.device).to(x.device) * alpha_std
    eigval = torch.tensor(IMAGENET_PCA_EIGVAL, device=x.device)
    eigvec = torch.tensor(IMAGENET_PCA_EIGVEC, device=x.device)
    shift = (alpha * eigval) @ eigvec.T  # N x 3: sum over components j of eigvec[:, j] * alpha_j * eigval_j
    return x + shift[:, :, None, None].to(x.dtype)


# ----------------------------------------------------------------------------- per-image augmentation
# Each takes a uint8 C x H x W image and a CPU generator and returns a uint8 C x crop x crop image.


def _mirror(image: torch.Tensor, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """``image`` mirrored with probability 1/2 when ``flip`` (the draw is made either way)."""
    heads = bool(torch.randint(0, 2, (1,), generator=generator))
    return image.flip(-1) if flip and heads else image


def _random_crop(image: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    h, w = image.shape[-2:]
    if h < crop or w < crop:
        raise DataError(f"image of {w}x{h} pixels (after padding) is smaller than the {crop}x{crop} crop")
    top = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
    return image[..., top:top + crop, left:left + crop]


def pad_crop_flip(image: torch.Tensor, crop: int, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """The CIFAR augmentation of one image (section 4.2): ``pad`` zeros on each side, a random
    ``crop`` x ``crop`` crop, a horizontal flip half of the time."""
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
    return _mirror(_random_crop(padded, crop, generator), flip, generator)


def scale_crop_flip(image: torch.Tensor, crop: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """The paper's scale augmentation (section 3.4): the shorter side resized to a random size in
    [256, 480] (scaled by ``crop`` / 224), a random ``crop`` x ``crop`` crop, a flip."""
    low, high = (round(crop * s / 224) for s in SCALE_RANGE)
    side = int(torch.randint(low, high + 1, (1,), generator=generator))
    return _mirror(_random_crop(TF.resize(image, [side], antialias=True), crop, generator), flip, generator)


def square_crop_flip(image: torch.Tensor, crop: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """AlexNet's augmentation (Krizhevsky et al. 2012, sections 2 and 4.1): the shorter side resized
    to 256 and the central 256 x 256 patch kept ("rescaled the image such that the shorter side was
    of length 256, and then cropped out the central 256x256 patch"; sides scaled by ``crop`` / 224),
    then a random ``crop`` x ``crop`` crop and a flip.  The aspect ratio is kept, as the evaluation
    view (:func:`center_view`) keeps it."""
    side = round(crop * RESIZE_RATIO)
    square = TF.center_crop(TF.resize(image, [side], antialias=True), [side])
    return _mirror(_random_crop(square, crop, generator), flip, generator)


def random_resized_crop_flip(image: torch.Tensor, crop: int, flip: bool, generator: torch.Generator,
                             scale: tuple[float, float] = (0.08, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Inception-style random-resized crop (Szegedy et al. 2015; torchvision's default recipe, not
    the ResNet paper's): a random area fraction in ``scale`` and aspect ratio in ``ratio`` (log-
    uniform), up to 10 tries, else the largest central crop within ``ratio``; resized to ``crop``."""
    h, w = image.shape[-2:]
    area = h * w
    box = None
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(*scale, generator=generator))
        aspect = math.exp(float(torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)))
        bw, bh = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < bw <= w and 0 < bh <= h:
            top = int(torch.randint(0, h - bh + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - bw + 1, (1,), generator=generator))
            box = (top, left, bh, bw)
            break
    if box is None:  # fall back to the central crop of the clamped aspect ratio
        aspect = min(max(w / h, ratio[0]), ratio[1])
        bw, bh = (w, round(w / aspect)) if w / h < ratio[0] else (round(h * aspect), h) if w / h > ratio[1] else (w, h)
        box = ((h - bh) // 2, (w - bw) // 2, bh, bw)
    top, left, bh, bw = box
    out = TF.resize(image[..., top:top + bh, left:left + bw], [crop, crop], antialias=True)
    return _mirror(out, flip, generator)
