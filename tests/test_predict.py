"""`resnetlab predict`: any image size, EXIF orientation, grey/CMYK/RGBA/16-bit, non-images refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab import create_model
from resnetlab.cli import main
from resnetlab.errors import DataError
from resnetlab.predict import predict, read_photo
from resnetlab.weights import save_weights

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("predict") / "w.safetensors"
    save_weights(create_model("cifar_resnet20"), path, mean=[0.5] * 3, std=[0.25] * 3, classes=CLASSES)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    rgb = np.zeros((60, 100, 3), dtype=np.uint8)
    rgb[:, 50:] = (0, 0, 255)
    Image.fromarray(rgb).save(d / "wide.jpg")
    Image.fromarray(rgb).convert("L").save(d / "grey.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    rgba = Image.fromarray(rgb).convert("RGBA")
    rgba.putalpha(0)
    rgba.save(d / "clear.png")
    Image.fromarray((np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)).save(d / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(d / "rotated.jpg", exif=exif)
    (d / "notes.jpg").write_text("not an image\n")
    return d


def test_read_photo_modes(photos):
    assert read_photo(photos / "wide.jpg").shape == (3, 60, 100)
    grey = read_photo(photos / "grey.png")
    assert grey.shape == (3, 60, 100) and torch.equal(grey[0], grey[2])
    cmyk = read_photo(photos / "cmyk.jpg")
    assert cmyk[2, :, 60:].float().mean() > 200 and cmyk[0, :, 60:].float().mean() < 50  # blue stays blue
    assert read_photo(photos / "clear.png").min() == 255  # transparent -> white
    deep = read_photo(photos / "deep.png")
    assert deep.dtype == torch.uint8 and deep.max() > 200 and deep.min() < 5  # 16 bits scaled, not clipped
    rotated = read_photo(photos / "rotated.jpg")
    assert rotated.shape == (3, 100, 60)  # upright: the EXIF rotation is applied
    assert rotated[2, 70:, :].float().mean() > 200  # the blue right half is now at the bottom


def test_not_an_image_names_the_file(photos):
    with pytest.raises(DataError, match="notes.jpg: not a readable image"):
        read_photo(photos / "notes.jpg")
    with pytest.raises(DataError, match="absent.png: no such file"):
        read_photo(photos / "absent.png")


def test_predict_top5_any_size(weights, photos):
    names = ["wide.jpg", "grey.png", "cmyk.jpg", "clear.png", "rotated.jpg"]
    results = predict(weights, [photos / n for n in names])
    assert [r["image"] for r in results] == [str(photos / n) for n in names]
    for r in results:
        probs = [hit["prob"] for hit in r["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(hit["class"] == CLASSES[hit["index"]] for hit in r["top"])


def test_cli_predict(weights, photos, capsys):
    assert main(["predict", str(weights), str(photos / "wide.jpg"), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["top"]) == 5
    assert main(["predict", str(weights), str(photos / "wide.jpg")]) == 0
    assert " %  " in capsys.readouterr().out
    assert main(["predict", str(weights), str(photos / "notes.jpg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.jpg" in err[0]
