"""Image files: scanning ``<class>/*`` folders, the one image decoder, and the decoded-image cache.

:func:`decode_image` is the only decoder: image folders (training and evaluation), the
batched CIFAR-folder decode and ``resnetlab predict`` all see the same pixels for the same
file. It decodes with Pillow (torchvision 0.29 deprecates its own decoders), applies the EXIF
orientation, and turns every mode into 8-bit RGB: greyscale and palette images are expanded,
CMYK converted, 16-bit images scaled (not clipped) to 8 bits, and transparent pixels composited
onto white.

Every failure a user's files can cause is a :class:`DataError` naming the path: a missing or
empty folder, a file that is not an image, a truncated image, or a decompression bomb (an
image larger than :data:`MAX_IMAGE_PIXELS`, checked from the header before any pixel is
decoded). Callers that skip bad images (training with ``skip_bad_images``) catch it and count.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import PIL
import torch
from PIL import Image, ImageOps

from ..errors import DataError
from ..files import atomic_save

__all__ = [
    "DECODER_VERSION",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "scan_image_folder",
    "decode_image",
    "decode_images",
    "cache_dir",
    "cached_decode",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")

#: Largest image (width x height) that is decoded; bigger ones are refused as decompression
#: bombs. Pillow's default (89.5 Mpixel); set ``RESNETLAB_MAX_IMAGE_PIXELS`` to change it.
MAX_IMAGE_PIXELS = int(os.environ.get("RESNETLAB_MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS or 89478485))

#: Names the decoder in the decoded-image cache key: a cache written by another decoder (an
#: earlier resnetlab, torchvision's decoder, another Pillow) is never reused. Bump it whenever
#: :func:`decode_image` would give other pixels for the same file.
DECODER_VERSION = f"resnetlab-pillow-2/pillow-{PIL.__version__}"

#: Modes whose transparency is composited onto white.
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
#: Threads of the batched decode (Pillow releases the GIL while it decodes pixels).
_DECODE_THREADS = min(4, os.cpu_count() or 1)


def scan_image_folder(root: str | Path) -> tuple[list[str], list[str], list[int]]:
    """``(classes, paths, targets)`` of an image folder ``root/<class>/<image>``.

    Classes are the sorted sub-folder names; files are sorted within a class and filtered by
    :data:`IMAGE_EXTENSIONS`. A missing folder, a folder without class sub-folders, or a class
    without images is a :class:`DataError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DataError(f"{root} holds no class folders (expected {root}/<class>/<image>)")
    paths: list[str] = []  # str, not Path: 50k Path objects cost seconds
    targets: list[int] = []
    for index, name in enumerate(classes):
        files = sorted(
            entry.name
            for entry in os.scandir(root / name)
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise DataError(f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        folder = os.path.join(root, name)
        paths.extend(os.path.join(folder, f) for f in files)
        targets.extend([index] * len(files))
    return classes, paths, targets


def _read(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _open(data: bytes, path: str | Path) -> Image.Image:
    """Pillow's lazy open (the header only, no pixels decoded), refusing non-images and
    decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is below
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # beyond twice Pillow's own limit
        raise DataError(f"{path}: image too large (decompression bomb?)") from None
    except Exception as exc:  # Pillow raises many types for junk files
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise DataError(f"{path}: image of {width}x{height} pixels exceeds the limit of {MAX_IMAGE_PIXELS} "
                        f"(decompression bomb?); raise RESNETLAB_MAX_IMAGE_PIXELS to allow it")
    return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    """The pixels of an opened image as an upright ``H x W x 3`` uint8 RGB array."""
    ImageOps.exif_transpose(image, in_place=True)  # decodes; upright as a viewer shows it
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    elif image.mode.startswith("I"):  # 16-bit (I;16*) or 32-bit integer greyscale
        # scale 0..65535 to 0..255: convert("RGB") would clip everything above 255 to white
        grey = np.clip(np.asarray(image, dtype=np.float64) / 257, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _decode_array(path: str | Path) -> np.ndarray:
    """:func:`decode_image` as an ``H x W x 3`` array."""
    with _open(_read(path), path) as image:
        try:
            return _to_rgb(image)
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError ... for damaged data
            raise DataError(f"{path}: corrupt or truncated image ({exc.__class__.__name__}: {exc})") from None


def decode_image(path: str | Path) -> torch.Tensor:
    """Decode one image file to an upright uint8 RGB tensor ``3 x H x W``.

    The one decoder of resnetlab (see the module docstring for what it does with EXIF
    orientation, modes and transparency); :class:`DataError` names a bad file.
    """
    return torch.from_numpy(np.ascontiguousarray(_decode_array(path).transpose(2, 0, 1)))


def decode_images(paths: Sequence[str], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode many same-sized images with :func:`decode_image` into one uint8 tensor ``N x 3 x H x W``.

    A file of another size than the first (or than ``size``, ``(H, W)``) is a :class:`DataError`
    naming it.
    """
    if not paths:
        raise DataError("no images to decode")
    pool = ThreadPoolExecutor(_DECODE_THREADS)
    try:
        arrays = pool.map(_decode_array, paths)
        first = next(arrays)
        expected = tuple(size) if size is not None else first.shape[:2]
        out = np.empty((len(paths), *expected, 3), dtype=np.uint8)
        for i, (array, path) in enumerate(zip(itertools.chain([first], arrays), paths)):
            if array.shape[:2] != expected:
                raise DataError(f"{path}: image is {array.shape[1]}x{array.shape[0]}, expected "
                                f"{expected[1]}x{expected[0]} like the rest of the data set")
            out[i] = array
    finally:
        pool.shutdown(cancel_futures=True)  # a bad file stops the decode of the rest
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def cache_dir() -> Path:
    """Where decoded data sets are cached: ``$RESNETLAB_CACHE``, else ``$XDG_CACHE_HOME/resnetlab``,
    else ``~/.cache/resnetlab`` (never inside the user's data folder)."""
    if os.environ.get("RESNETLAB_CACHE"):
        return Path(os.environ["RESNETLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "resnetlab"


def _fingerprint(paths: Sequence[str], targets: Sequence[int]) -> str:
    """Hash of the decoder (:data:`DECODER_VERSION`) and of every file's name (relative to the
    data set's root), size, mtime and label: any change gives a new key, while the same files
    extracted elsewhere (mtimes kept) share one."""
    digest = hashlib.sha256(f"{DECODER_VERSION}\n".encode())
    root = os.path.dirname(os.path.dirname(os.path.abspath(paths[0])))  # root/<class>/<file>
    for path, target in zip(paths, targets):
        st = os.stat(path)
        rel = os.path.relpath(path, root)
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{target}\n".encode())
    return digest.hexdigest()[:32]


def cached_decode(paths: Sequence[str], targets: Sequence[int], size: tuple[int, int] | None = None) -> torch.Tensor:
    """:func:`decode_images`, memoised on disk under :func:`cache_dir`, keyed by the decoder and
    the files' names, sizes, mtimes and labels (see :func:`_fingerprint`).

    The cache is a plain ``.npy`` array (read with ``allow_pickle=False``), written atomically;
    an unwritable cache folder only costs the decode next time.
    """
    path = cache_dir() / "decoded" / f"{_fingerprint(paths, targets)}.npy"
    if path.is_file():
        try:
            array = np.load(path, allow_pickle=False)
            if array.dtype == np.uint8 and array.ndim == 4 and array.shape[0] == len(paths):
                return torch.from_numpy(array)
        except (OSError, ValueError):
            pass  # a damaged cache entry is rebuilt below
    images = decode_images(paths, size)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a bare name
            np.save(f, images.numpy(), allow_pickle=False)

    try:
        atomic_save(path, write)
    except OSError:
        pass  # an unwritable cache folder only costs the decode next time
    return images
