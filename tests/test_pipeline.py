"""The training data pipeline: every (augment, source) pair of the table does what it says, the
same on in-memory tensors and on image folders, or is refused before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.constants import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC
from resnetlab.data import transforms
from resnetlab.data.datasets import ImageSet
from resnetlab.data.images import decode_image
from resnetlab.data.pipeline import AUGMENTS, PIPELINES, TrainBatches, choose_pipeline
from resnetlab.data.transforms import center_view, pca_lighting
from resnetlab.errors import ConfigError, DataError

H, W, N = 40, 48, 32


def _images(n: int = N, h: int = H, w: int = W) -> torch.Tensor:
    """Images whose every pixel is > 0 and whose columns increase left to right (so padding,
    offsets and mirroring can be read back from the output)."""
    cols = torch.arange(w).expand(h, w)
    rows = torch.arange(h)[:, None].expand(h, w)
    base = (1 + cols * 4 + rows % 3).clamp(max=255).to(torch.uint8)
    return base.expand(n, 3, h, w).contiguous()


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ImageSet]:
    """The same images in memory and as PNG files (lossless) in an image folder."""
    images = _images()
    root = tmp_path_factory.mktemp("folder")
    paths = []
    for i, image in enumerate(images):
        path = root / f"{i}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        paths.append(str(path))
    targets = [i % 2 for i in range(N)]
    return {"memory": ImageSet("mem", ["a", "b"], targets, images=images),
            "folder": ImageSet("dir", ["a", "b"], targets, items=paths, load=decode_image)}


def _batches(data: ImageSet, augment: str, crop: int | None, pad: int = 0, flip: bool = True) -> torch.Tensor:
    """Every training image of 4 steps as uint8 again (mean 0, std 1/255 undo the normalization)."""
    pipeline = choose_pipeline(augment, data, crop=crop, pad=pad, flip=flip)
    batches = TrainBatches(data, pipeline, batch_size=8, seed=3, mean=[0.0] * 3, std=[1 / 255] * 3,
                           device=torch.device("cpu"), channels_last=False)
    return torch.cat([x for x, _ in batches.stream(0, 4)]).round().to(torch.uint8)


def test_the_table_covers_every_pair_and_refuses_padding_elsewhere(sources: dict[str, ImageSet]) -> None:
    assert set(PIPELINES) == {(a, s) for a in AUGMENTS for s in ("memory", "folder")}
    for (augment, source), what in PIPELINES.items():
        pipeline = choose_pipeline(augment, sources[source], crop=32, pad=4 if augment == "cifar" else 0,
                                   flip=augment != "none")
        assert pipeline.source == source and what in pipeline.description
        if augment != "cifar":
            with pytest.raises(ConfigError, match=f"pad=4 with augment={augment} on {source} data"):
                choose_pipeline(augment, sources[source], crop=32, pad=4, flip=True)
    with pytest.raises(ConfigError, match="crop=64 with augment=cifar on memory data"):
        choose_pipeline("cifar", sources["memory"], crop=64, pad=4, flip=True)
    with pytest.raises(ConfigError, match="augment='jitter'"):
        choose_pipeline("jitter", sources["memory"], crop=32, pad=0, flip=True)
    # crop unset: the images' own size in memory (square ones), 224 for folders
    square = ImageSet("sq", ["a"], [0], images=torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    assert choose_pipeline("cifar", square, crop=None, pad=2, flip=True).crop == 16
    assert choose_pipeline("imagenet", sources["folder"], crop=None, pad=0, flip=True).crop == 224


def _mirrored(batch: torch.Tensor) -> torch.Tensor:
    """Per image: are its (non-zero) columns decreasing left to right?"""
    row = batch[:, 0, batch.shape[2] // 2].float()  # N x W
    row = torch.where(row > 0, row, torch.nan)
    diffs = row[:, 1:] - row[:, :-1]
    return torch.nanmean(diffs, dim=1) < 0


@pytest.mark.parametrize("source", ["memory", "folder"])
def test_cifar_pad_crop_flip(sources: dict[str, ImageSet], source: str) -> None:
    pad, crop = 4, 40
    out = _batches(sources[source], "cifar", crop, pad=pad)
    assert out.shape == (32, 3, crop, crop)
    zero_rows = (out[:, 0].amax(dim=2) == 0).sum(dim=1)  # padding rows in each crop
    zero_cols = (out[:, 0].amax(dim=1) == 0).sum(dim=1)
    assert int(zero_rows.max()) <= 2 * pad and int(zero_cols.max()) <= 2 * pad + (W - crop)
    assert int(zero_rows.max()) > 0  # padding is honoured: some crops reach into it
    flips = _mirrored(out).float().mean()
    assert 0.2 < flips < 0.8  # about half
    assert not _mirrored(_batches(sources[source], "cifar", crop, pad=pad, flip=False)).any()
    assert (_batches(sources[source], "cifar", crop, pad=0) > 0).all()  # pad=0: no zeros at all


@pytest.mark.parametrize("augment", ["imagenet", "alexnet", "random_resized_crop"])
@pytest.mark.parametrize("source", ["memory", "folder"])
def test_scale_augmentations(sources: dict[str, ImageSet], augment: str, source: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = []
    resize = transforms.TF.resize

    def recording(image, size, **kwargs):
        out = resize(image, size, **kwargs)
        sizes.append(tuple(out.shape[-2:]))
        return out

    monkeypatch.setattr(transforms.TF, "resize", recording)
    crop = 32
    out = _batches(sources[source], augment, crop)
    assert out.shape == (32, 3, crop, crop)
    if augment == "imagenet":  # shorter side drawn from [256, 480] * crop / 224 = [37, 69]
        shorter = [min(s) for s in sizes]
        assert min(shorter) >= 37 and max(shorter) <= 69 and max(shorter) - min(shorter) > 10
    elif augment == "alexnet":  # shorter side to 256 * crop / 224 = 37, aspect kept, then the central 37 x 37
        assert set(sizes) == {(37, 44)}
        # columns increase left to right (value 1 + 4 * column of the 40 x 48 original): every crop lies in the
        # central square, never at the stretched image's edges (columns 0-1 and 46-47)
        unflipped = out[~_mirrored(out)]
        assert unflipped[:, 0, H // 2, 0].min() > 1 + 4 * 2 and unflipped[:, 0, H // 2, -1].max() < 1 + 4 * 45
    else:
        assert set(sizes) == {(crop, crop)}
    assert 0.2 < _mirrored(out).float().mean() < 0.8
    assert not _mirrored(_batches(sources[source], augment, crop, flip=False)).any()


@pytest.mark.parametrize("source", ["memory", "folder"])
def test_none_is_the_evaluation_view(sources: dict[str, ImageSet], source: str) -> None:
    out = _batches(sources[source], "none", 24, flip=False)
    image, _ = sources["memory"][0]
    assert torch.equal(out[0], center_view(image, 24))
    assert (out == out[0]).all()  # no randomness at all
    with pytest.raises(ConfigError, match=f"flip=true with augment=none on {source} data"):  # it never flips
        choose_pipeline("none", sources[source], crop=24, pad=0, flip=True)


def test_pca_lighting_is_alexnets() -> None:
    eigvec = torch.tensor(IMAGENET_PCA_EIGVEC, dtype=torch.float64)
    eigval = torch.tensor(IMAGENET_PCA_EIGVAL, dtype=torch.float64)
    assert eigval.tolist() == [0.2175, 0.0188, 0.0045]  # fb.resnet.torch's published ImageNet values
    torch.testing.assert_close(eigvec.T @ eigvec, torch.eye(3, dtype=torch.float64), atol=2e-4, rtol=0)
    # orientation: the columns are the eigenvectors; the largest one is the brightness axis (R, G, B alike)
    assert torch.allclose(eigvec[:, 0].abs(), torch.full((3,), 3 ** -0.5, dtype=torch.float64), atol=0.02)
    x = torch.zeros(20_000, 3, 1, 1)
    shift = pca_lighting(x, torch.Generator().manual_seed(0))[:, :, 0, 0].double()
    expected = eigvec @ torch.diag((0.1 * eigval) ** 2) @ eigvec.T  # Cov = V diag((sigma * lambda)^2) V^T
    torch.testing.assert_close(shift.T.cov(), expected, atol=5e-5, rtol=0.05)


def test_too_small_folder_image_is_named(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(path)
    data = ImageSet("dir", ["a"], [0, 0], items=[str(path)] * 2, load=decode_image)
    pipeline = choose_pipeline("cifar", data, crop=32, pad=4, flip=True)
    batches = TrainBatches(data, pipeline, batch_size=2, seed=0, mean=[0.0] * 3, std=[1.0] * 3,
                           device=torch.device("cpu"), channels_last=False)
    with pytest.raises(DataError, match="small.png.*smaller than the 32x32 crop"):
        next(batches.stream(0, 1))
