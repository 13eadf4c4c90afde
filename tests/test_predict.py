"""`resnetlab predict`: any image size and mode, non-images refused, the same pixels as training and eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab import create_model
from resnetlab.cli import main
from resnetlab.data import decode_image, open_dataset
from resnetlab.data.transforms import normalize
from resnetlab.evaluate import Member, center_view, probabilities
from resnetlab.predict import predict
from resnetlab.weights import load_weights, save_weights

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


def test_train_eval_and_predict_see_the_same_pixels(weights, photos, tmp_path, monkeypatch):
    """One decoder: an EXIF-rotated photo is upright for the lazy image-folder set (training),
    the CIFAR-folder decode, evaluation and predict alike."""
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "f" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "f" / "train" / "cat" / "rotated.jpg").write_bytes((photos / "rotated.jpg").read_bytes())
    upright = decode_image(photos / "rotated.jpg")
    assert upright.shape == (3, 100, 60)  # stored 60 x 100, shown rotated
    train = open_dataset(f"folder={tmp_path / 'f'}", "train")
    assert train.images is None and torch.equal(train[0][0], upright)

    model, meta = load_weights(weights)
    (result,) = predict(weights, [photos / "rotated.jpg"], top_k=10, device="cpu")
    predicted = torch.tensor([hit["prob"] for hit in sorted(result["top"], key=lambda h: h["index"])])
    (evaluated, _), = probabilities([Member(model, meta.mean, meta.std, meta.input_size)], train, protocol="center",
                                    num_workers=0)
    torch.testing.assert_close(evaluated[0], predicted, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        by_hand = model(normalize(center_view(upright, 32)[None], meta.mean, meta.std)).softmax(1)[0]
    torch.testing.assert_close(predicted, by_hand, rtol=1e-6, atol=1e-7)

    small = tmp_path / "c10" / "train"
    for i, name in enumerate(CLASSES):
        (small / name).mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), 20 * i, dtype=np.uint8)).save(small / name / "0.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    corner = np.zeros((32, 32, 3), dtype=np.uint8)
    corner[:4, :4] = 255
    Image.fromarray(corner).save(small / "cat" / "0.jpg", exif=exif, quality=100)
    cifar = open_dataset(f"cifar10={small.parent}", "train")
    assert torch.equal(cifar.images[cifar.targets.tolist().index(3)], decode_image(small / "cat" / "0.jpg"))
    assert decode_image(small / "cat" / "0.jpg")[:, 28:, :4].float().mean() > 200  # top-left corner now bottom-left


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
