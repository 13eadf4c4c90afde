"""The one image decoder (Pillow): EXIF orientation, modes, 16-bit, transparency, bad files, the cache key."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.data import images as images_mod
from resnetlab.data.images import cached_decode, decode_image, decode_images
from resnetlab.errors import DataError

# A 40 x 60 photo: left half red, right half blue, a green square at the top left.
RGB = np.zeros((40, 60, 3), dtype=np.uint8)
RGB[:, :30] = (255, 0, 0)
RGB[:, 30:] = (0, 0, 255)
RGB[:8, :8] = (0, 255, 0)


def _hwc(image: torch.Tensor) -> np.ndarray:
    assert image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3
    return image.permute(1, 2, 0).numpy()


def test_rgb_png_is_exact_and_no_warning(tmp_path: Path) -> None:
    Image.fromarray(RGB).save(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated decoder behind it (torchvision 0.29 warns)
        image = decode_image(tmp_path / "a.png")
    assert np.array_equal(_hwc(image), RGB) and image.is_contiguous()


@pytest.mark.parametrize("orientation, expected", [
    (1, RGB),
    (3, RGB[::-1, ::-1]),                 # rotated 180 degrees
    (6, np.rot90(RGB, k=-1)),             # shown rotated 90 degrees clockwise
    (8, np.rot90(RGB, k=1)),              # shown rotated 90 degrees counter-clockwise
    (2, RGB[:, ::-1]),                    # mirrored
])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, expected: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(RGB).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    image = _hwc(decode_image(tmp_path / "photo.jpg")).astype(int)
    assert image.shape == expected.shape
    assert np.abs(image - expected).mean() < 4  # JPEG: close, not equal


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
    image = _hwc(decode_image(tmp_path / "cmyk.jpg")).astype(int)
    assert image.shape == (40, 60, 3) and np.abs(image - RGB).mean() < 4  # blue stays blue, red stays red


def test_palette_png_with_and_without_transparency(tmp_path: Path) -> None:
    palette = Image.fromarray(RGB).quantize(colors=3)
    assert palette.mode == "P"
    palette.save(tmp_path / "p.png")
    assert np.array_equal(_hwc(decode_image(tmp_path / "p.png")), np.asarray(palette.convert("RGB")))
    indices = np.asarray(palette)
    clear = int(indices[0, 59])  # the blue entry becomes transparent
    palette.save(tmp_path / "pt.png", transparency=clear)
    image = _hwc(decode_image(tmp_path / "pt.png"))
    assert (image[indices == clear] == 255).all()  # composited onto white
    assert np.array_equal(image[indices != clear], np.asarray(palette.convert("RGB"))[indices != clear])


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.dstack([RGB, np.full((40, 60), 255, dtype=np.uint8)])
    rgba[:, 30:, 3] = 0      # blue half fully transparent -> white
    rgba[:20, :30, 3] = 128  # top of the red half half transparent -> pink
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = _hwc(decode_image(tmp_path / "a.png")).astype(int)
    assert (image[:, 30:] == 255).all()
    assert (image[20:, 8:30] == (255, 0, 0)).all()
    # red over white at alpha 128/255: (255, 127, 127) give or take Pillow's rounding
    assert np.abs(image[8:20, 8:30] - (255, 127, 127)).max() <= 1


def test_greyscale_and_16_bit_scaled_not_clipped(tmp_path: Path) -> None:
    grey = np.arange(40 * 60, dtype=np.uint32).reshape(40, 60) % 256
    Image.fromarray(grey.astype(np.uint8)).save(tmp_path / "g.png")
    image = _hwc(decode_image(tmp_path / "g.png"))
    assert all(np.array_equal(image[..., c], grey) for c in range(3))
    deep = np.zeros((4, 5), dtype=np.uint16)
    deep[0, :5] = [0, 257, 1000, 32896, 65535]  # 1000 would be clipped to 255 by Pillow's convert("RGB")
    Image.fromarray(deep).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode.startswith("I")  # really 16 bits on disk
    image = _hwc(decode_image(tmp_path / "d.png"))
    assert image[0, :5, 0].tolist() == [0, 1, 4, 128, 255]  # value / 257, rounded
    assert np.array_equal(image[..., 0], image[..., 2])


def test_bad_files_are_one_clear_error(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "good.jpg")
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # the header is whole, the pixels are not
    with pytest.raises(DataError, match=r"cut\.jpg: corrupt or truncated image"):
        decode_image(tmp_path / "cut.jpg")
    (tmp_path / "head.jpg").write_bytes(data[:100])  # cut inside the header
    with pytest.raises(DataError, match=r"head\.jpg: not a readable image"):
        decode_image(tmp_path / "head.jpg")
    (tmp_path / "notes.jpg").write_text("not an image\n")
    with pytest.raises(DataError, match=r"notes\.jpg: not a readable image"):
        decode_image(tmp_path / "notes.jpg")
    with pytest.raises(DataError, match=r"absent\.png: no such file"):
        decode_image(tmp_path / "absent.png")
    with pytest.raises(DataError, match="is a directory"):
        decode_image(tmp_path)


def test_decompression_bomb_refused_from_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(RGB).save(tmp_path / "big.png")
    monkeypatch.setattr(images_mod, "MAX_IMAGE_PIXELS", 40 * 60 - 1)
    monkeypatch.setattr(images_mod, "_to_rgb", lambda *a: pytest.fail("pixels decoded"))
    with pytest.raises(DataError, match=r"big\.png: image of 60x40 pixels exceeds the limit of 2399"):
        decode_image(tmp_path / "big.png")


def test_batched_decode_is_the_same_decoder(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 3
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(np.roll(RGB, 7 * i, axis=1)).save(path, exif=exif if i == 2 else b"")
        paths.append(str(path))
    batch = decode_images(paths)
    assert batch.shape == (5, 3, 40, 60) and batch.is_contiguous()
    for image, path in zip(batch, paths):
        assert torch.equal(image, decode_image(path))
    Image.fromarray(RGB[:30]).save(tmp_path / "small.jpg")
    with pytest.raises(DataError, match=r"small\.jpg: image is 60x30, expected 60x40"):
        decode_images(paths + [str(tmp_path / "small.jpg")])
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "0.jpg").read_bytes()[:200])
    with pytest.raises(DataError, match=r"cut\.jpg: not a readable image"):
        decode_images(paths + [str(tmp_path / "cut.jpg")])


def test_cache_key_names_the_decoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache written by another decoder (e.g. torchvision's, before) is never reused."""
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "c").mkdir()
    paths = []
    for i in range(3):
        Image.fromarray(np.roll(RGB, i, axis=0)).save(tmp_path / "c" / f"{i}.png")
        paths.append(str(tmp_path / "c" / f"{i}.png"))
    first = cached_decode(paths, [0, 1, 2])
    monkeypatch.setattr(images_mod, "decode_images", lambda *a, **k: pytest.fail("cache not used"))
    assert torch.equal(cached_decode(paths, [0, 1, 2]), first)
    monkeypatch.setattr(images_mod, "DECODER_VERSION", "another-decoder")
    with pytest.raises(pytest.fail.Exception, match="cache not used"):
        cached_decode(paths, [0, 1, 2])
