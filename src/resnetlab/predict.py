"""Classify photos with a weights file: top-k class names and probabilities.

Any image size (shorter side resized, central crop of the weights' input size, as the
single-crop test of section 3.4); the EXIF orientation is applied; greyscale, palette, CMYK
and 16-bit images become RGB; transparent pixels are composited onto white.  A file that is
not an image, or one above the decompression-bomb limit, is a :class:`DataError` naming it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from .data.images import MAX_IMAGE_PIXELS
from .data.transforms import normalize
from .device import resolve_device
from .errors import ConfigError, DataError
from .evaluate import center_view
from .weights import load_weights

__all__ = ["read_photo", "predict"]


def read_photo(path: str | os.PathLike) -> torch.Tensor:
    """Decode a photo to a uint8 RGB tensor ``3 x H x W``, upright per its EXIF orientation."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise DataError(f"{path}: image of {im.width}x{im.height} pixels exceeds the limit of "
                                    f"{MAX_IMAGE_PIXELS}; raise RESNETLAB_MAX_IMAGE_PIXELS to allow it")
                im = ImageOps.exif_transpose(im)
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    im = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
                elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    # 16-bit greyscale: scale to 8 bits (convert("RGB") would clip at 255)
                    im = Image.fromarray((np.asarray(im, dtype=np.float64) / 257).round().astype(np.uint8))
                array = np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an image") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DataError(f"{path}: image too large (decompression bomb?)") from None
    except Exception as exc:  # Pillow raises many types for junk and truncated files
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


@torch.inference_mode()
def predict(
    weights: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    *,
    top_k: int = 5,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Top-``top_k`` classes of each image under the weights file ``weights``.

    Returns one ``{"image": path, "top": [{"class", "index", "prob"}, ...]}`` per image, best first.
    ``device`` ``auto`` picks CUDA when available.
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
        view = center_view(read_photo(path), crop)
        x = normalize(view[None].to(device), mean, std)
        probs = model(x).float().softmax(dim=1)[0].cpu()
        top = probs.topk(min(top_k, len(probs)))
        results.append({
            "image": str(path),
            "top": [{"class": meta.classes[i], "index": int(i), "prob": float(p)}
                    for p, i in zip(top.values.tolist(), top.indices.tolist())],
        })
    return results
