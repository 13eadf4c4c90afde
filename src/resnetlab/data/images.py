"""Image files: scanning ``<class>/*`` folders, the one image decoder, and the decoded-image cache.

:func:`decode_image` is the only decoder: image folders (training and evaluation), the
batched CIFAR-folder decode and ``resnetlab predict`` all see the same pixels for the same
file. It decodes with Pillow (torchvision 0.29 deprecates its own decoders), applies the EXIF
orientation, and turns every mode into 8-bit RGB: greyscale and palette images are expanded,
CMYK converted, 16-bit images scaled (not clipped) to 8 bits, and transparent pixels composited
onto white.

Every failure a user's files can cause is a :class:`DataError` naming the path: a missing or
empty folder, or (an :class:`ImageError`) a file that is not an image, a truncated image, or a
decompression bomb (an image larger than :data:`MAX_IMAGE_PIXELS`, checked from the header
before any pixel is decoded). Callers that skip bad images (training with ``skip_bad_images``)
catch it, count and name it.
"""

from __future__ import annotations

import hashlib
import io
import json
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

from ..errors import DataError, ImageError
from ..files import atomic_save, atomic_write_text

__all__ = [
    "DECODER_VERSION",
    "IMAGE_EXTENSIONS",
    "image_files",
    "MAX_IMAGE_PIXELS",
    "scan_image_folder",
    "decode_image",
    "decode_images",
    "image_size",
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


def image_files(folder: str | Path) -> list[str]:
    """The names of the image files (:data:`IMAGE_EXTENSIONS`) directly in ``folder``, sorted."""
    return sorted(entry.name for entry in os.scandir(folder)
                  if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS))


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
        files = image_files(root / name)
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
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _open(data: bytes, path: str | Path) -> Image.Image:
    """Pillow's lazy open (the header only, no pixels decoded), refusing non-images and
    decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is below
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # beyond twice Pillow's own limit
        raise ImageError(f"{path}: image too large (decompression bomb?)") from None
    except Image.UnidentifiedImageError:  # its message names an in-memory buffer, not the file
        raise ImageError(f"{path}: not a readable image (its {len(data)} bytes are in none of the formats Pillow "
                         f"reads; expected {', '.join(e.lstrip('.').upper() for e in IMAGE_EXTENSIONS)})") from None
    except Exception as exc:  # Pillow raises many types for junk files
        raise ImageError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise ImageError(f"{path}: image of {width}x{height} pixels exceeds the limit of {MAX_IMAGE_PIXELS} "
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
            raise ImageError(f"{path}: corrupt or truncated image ({exc.__class__.__name__}: {exc})") from None


def decode_image(path: str | Path) -> torch.Tensor:
    """Decode one image file to an upright uint8 RGB tensor ``3 x H x W``.

    The one decoder of resnetlab (see the module docstring for what it does with EXIF
    orientation, modes and transparency); :class:`DataError` names a bad file.
    """
    return torch.from_numpy(np.ascontiguousarray(_decode_array(path).transpose(2, 0, 1)))


#: EXIF orientations that turn an image a quarter turn (width and height swap when it is made upright)
_QUARTER_TURNS = (5, 6, 7, 8)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of the image :func:`decode_image` gives for ``path`` (upright, after the
    EXIF orientation), read from the header without decoding any pixel."""
    with _open(_read(path), path) as image:
        width, height = image.size
        try:
            turned = image.getexif().get(0x0112) in _QUARTER_TURNS  # 0x0112: the EXIF Orientation tag
        except Exception:  # a damaged EXIF block: decode_image's exif_transpose would fail on it too
            raise ImageError(f"{path}: unreadable EXIF data") from None
    return (height, width) if turned else (width, height)


def _decode_or_error(path: str) -> np.ndarray | str:
    """:func:`_decode_array`, or the message of its :class:`DataError`."""
    try:
        return _decode_array(path)
    except DataError as exc:
        return str(exc)


def decode_images(paths: Sequence[str], size: tuple[int, int] | None = None,
                  skipped: dict[int, str] | None = None) -> torch.Tensor:
    """Decode many same-sized images with :func:`decode_image` into one uint8 tensor ``N x 3 x H x W``.

    A file that cannot be decoded, or of another size than the first (or than ``size``, ``(H, W)``),
    is a :class:`DataError` naming it; given a ``skipped`` dict, such files are left out instead and
    recorded there (index in ``paths`` -> message), and the tensor holds the others in order.
    """
    if not paths:
        raise DataError("no images to decode")
    expected = tuple(size) if size is not None else None
    out: np.ndarray | None = None
    kept = 0
    pool = ThreadPoolExecutor(_DECODE_THREADS)
    try:
        for i, (array, path) in enumerate(zip(pool.map(_decode_or_error, paths), paths)):
            if isinstance(array, np.ndarray):
                expected = expected or array.shape[:2]
                if array.shape[:2] != expected:
                    array = (f"{path}: image is {array.shape[1]}x{array.shape[0]}, expected {expected[1]}x"
                             f"{expected[0]} like the rest of the data set")
            if isinstance(array, str):
                if skipped is None:
                    raise ImageError(array)
                skipped[i] = array
                continue
            if out is None:
                out = np.empty((len(paths), *expected, 3), dtype=np.uint8)
            out[kept] = array
            kept += 1
    finally:
        pool.shutdown(cancel_futures=True)  # a bad file stops the decode of the rest
    if out is None:
        raise DataError(f"none of the {len(paths)} images could be decoded; the first: {skipped[0]}")
    return torch.from_numpy(out[:kept]).permute(0, 3, 1, 2).contiguous()


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


def cached_decode(paths: Sequence[str], targets: Sequence[int], size: tuple[int, int] | None = None,
                  skipped: dict[int, str] | None = None) -> torch.Tensor:
    """:func:`decode_images`, memoised on disk under :func:`cache_dir`, keyed by the decoder and
    the files' names, sizes, mtimes and labels (see :func:`_fingerprint`); ``skipped`` as there.

    The cache is a plain ``.npy`` array (read with ``allow_pickle=False``), written atomically,
    with the unreadable files of a skipping decode beside it (``.skipped.json``: a decode that
    does not skip is refused their first one, as decoding again would be); an unwritable cache
    folder only costs the decode next time.
    """
    path = cache_dir() / "decoded" / f"{_fingerprint(paths, targets)}.npy"
    bad_path = path.with_suffix(".skipped.json")
    if path.is_file():
        try:
            bad = {int(i): str(m) for i, m in json.loads(bad_path.read_text()).items()} if bad_path.is_file() else {}
            array = np.load(path, allow_pickle=False)
            if array.dtype == np.uint8 and array.ndim == 4 and array.shape[0] == len(paths) - len(bad):
                if bad and skipped is None:
                    raise ImageError(bad[min(bad)])
                if skipped is not None:
                    skipped.update(bad)
                return torch.from_numpy(array)
        except (OSError, ValueError, AttributeError):
            pass  # a damaged cache entry is rebuilt below
    found: dict[int, str] = {}
    images = decode_images(paths, size, skipped=found if skipped is not None else None)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a bare name
            np.save(f, images.numpy(), allow_pickle=False)

    try:
        if found:
            atomic_write_text(bad_path, json.dumps(found))
        atomic_save(path, write)
    except OSError:
        pass  # an unwritable cache folder only costs the decode next time
    if skipped is not None:
        skipped.update(found)
    return images
