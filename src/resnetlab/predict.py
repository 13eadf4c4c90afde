"""Classify photos with a weights file: top-k class names and probabilities.

Any image size (shorter side resized, central crop of the weights' input size, as the
single-crop test of section 3.4). Photos are read by :func:`resnetlab.data.images.decode_image`,
the decoder that training and evaluation use (EXIF orientation applied; greyscale, palette,
CMYK and 16-bit images made RGB; transparent pixels composited onto white), so a photo gets
the pixels it would get in an evaluation folder. A file that is not an image, or one above the
decompression-bomb limit, is reported by name in its entry, and the other photos are still predicted.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from .data.images import decode_image
from .data.transforms import center_view, normalize
from .device import resolve_device
from .errors import ConfigError, DataError
from .weights import load_weights

__all__ = ["predict"]


@torch.inference_mode()
def predict(
    weights: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    *,
    top_k: int = 5,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Top-``top_k`` classes of each image under the weights file ``weights``.

    Returns one ``{"image": path, "top": [{"class", "index", "prob"}, ...]}`` per image, best first
    (``index``: the class's position in the weights file's class list, from 0), in the order
    given; an image that cannot be read is ``{"image": path, "error": message}`` and the others
    are still predicted.  ``device`` ``auto`` picks CUDA when available.
    """
    if top_k < 1:
        raise ConfigError(f"top_k must be positive, got {top_k}")
    device = str(resolve_device(device))
    model, meta = load_weights(weights, map_location=device)
    crop = meta.input_size[-1]
    mean = torch.as_tensor(meta.mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(meta.std, dtype=torch.float32, device=device)
    results = []
    for path in images:
        try:
            image = decode_image(path)
        except DataError as exc:
            results.append({"image": str(path), "error": str(exc)})
            continue
        view = center_view(image, crop)
        x = normalize(view[None].to(device), mean, std)
        probs = model(x).float().softmax(dim=1)[0].cpu()
        top = probs.topk(min(top_k, len(probs)))
        results.append({
            "image": str(path),
            "top": [{"class": meta.classes[i], "index": int(i), "prob": float(p)}
                    for p, i in zip(top.values.tolist(), top.indices.tolist())],
        })
    return results
