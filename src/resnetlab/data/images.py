"""Image files: scanning ``<class>/*`` folders, safe decoding, and the decoded-image cache.

Every failure a user's files can cause is a :class:`DataError` naming the path: a missing or
empty folder, a file that is not an image, a truncated image, or a decompression bomb (an
image larger than :data:`MAX_IMAGE_PIXELS`, checked from the header before any pixel is
decoded).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchvision.io as tvio
from PIL import Image

from ..errors import DataError
from ..files import atomic_save

# torchvision 0.29 marks its decoders deprecated in favour of torchcodec; they remain the fast
# batched JPEG path we want, so the notice (one per call) is silenced here only.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

__all__ = [
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


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's start-of-frame marker, or None if ``data`` is no JPEG.

    Walks the marker segments (ITU T.81, B.1): a fast path that keeps Pillow's slower header
    parser out of the 50,000-image CIFAR load.
    """
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            height, width = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            return width, height
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _check_header(data: bytes, path: str | Path) -> None:
    """Refuse non-images and decompression bombs from the header alone (no pixels decoded)."""
    size = _jpeg_size(data)
    if size is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is below
                with Image.open(io.BytesIO(data)) as im:
                    size = im.size
        except Image.DecompressionBombError:  # beyond twice Pillow's own limit
            raise DataError(f"{path}: image too large (decompression bomb?)") from None
        except Exception as exc:  # Pillow raises many types for junk files
            raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"{path}: image of {width}x{height} pixels exceeds the limit of {MAX_IMAGE_PIXELS} "
                        f"(decompression bomb?); raise RESNETLAB_MAX_IMAGE_PIXELS to allow it")


def _read(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _decode_bytes(data: bytes, path: str | Path) -> torch.Tensor:
    try:
        return tvio.decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=tvio.ImageReadMode.RGB)
    except RuntimeError:
        pass
    # torchvision's decoders cover JPEG/PNG/GIF/WEBP; Pillow reads the rest (BMP, TIFF, ...)
    # and reports truncated files.
    try:
        with Image.open(io.BytesIO(data)) as im:
            array = np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc.__class__.__name__}: {exc})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def decode_image(path: str | Path) -> torch.Tensor:
    """Decode one image file to a uint8 RGB tensor ``3 x H x W``; :class:`DataError` names bad files."""
    data = _read(path)
    _check_header(data, path)
    return _decode_bytes(data, path)


def decode_images(paths: Sequence[str], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode many same-sized images into one uint8 tensor ``N x 3 x H x W``.

    JPEGs are decoded in one batched torchvision call; a file of another size than the first
    (or than ``size``) is a :class:`DataError` naming it.
    """
    if not paths:
        raise DataError("no images to decode")
    blobs = [_read(p) for p in paths]
    for blob, path in zip(blobs, paths):
        _check_header(blob, path)
    try:
        decoded = tvio.decode_jpeg([torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs],
                                   mode=tvio.ImageReadMode.RGB)
    except RuntimeError:  # not all JPEG, or one is corrupt: decode one by one to name the file
        decoded = [_decode_bytes(b, p) for b, p in zip(blobs, paths)]
    expected = tuple(size) if size is not None else tuple(decoded[0].shape[1:])
    for image, path in zip(decoded, paths):
        if tuple(image.shape[1:]) != expected:
            raise DataError(f"{path}: image is {image.shape[2]}x{image.shape[1]}, expected "
                            f"{expected[1]}x{expected[0]} like the rest of the data set")
    return torch.stack(decoded)


def cache_dir() -> Path:
    """Where decoded data sets are cached: ``$RESNETLAB_CACHE``, else ``$XDG_CACHE_HOME/resnetlab``,
    else ``~/.cache/resnetlab`` (never inside the user's data folder)."""
    if os.environ.get("RESNETLAB_CACHE"):
        return Path(os.environ["RESNETLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "resnetlab"


def _fingerprint(paths: Sequence[str], targets: Sequence[int]) -> str:
    """Hash of every file's name (relative to the data set's root), size, mtime and label: any
    change gives a new key, while the same files extracted elsewhere (mtimes kept) share one."""
    digest = hashlib.sha256()
    root = os.path.dirname(os.path.dirname(os.path.abspath(paths[0])))  # root/<class>/<file>
    for path, target in zip(paths, targets):
        st = os.stat(path)
        rel = os.path.relpath(path, root)
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{target}\n".encode())
    return digest.hexdigest()[:32]


def cached_decode(paths: Sequence[str], targets: Sequence[int], size: tuple[int, int] | None = None) -> torch.Tensor:
    """:func:`decode_images`, memoised on disk under :func:`cache_dir`, keyed by the files'
    names, sizes, mtimes and labels (see :func:`_fingerprint`).

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
