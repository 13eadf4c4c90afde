"""Evaluation protocols (full, center, 10crop, multiscale), the report files and `resnetlab eval`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

import resnetlab.evaluate as ev
from resnetlab import create_model
from resnetlab.cli import main
from resnetlab.data.transforms import normalize
from resnetlab.errors import ConfigError, DataError
from resnetlab.evaluate import center_view, evaluate, fully_convolutional_scores
from resnetlab.weights import save_weights

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


class Images(torch.utils.data.Dataset):
    """A file-backed-style data set (``images`` None): images of different sizes."""

    images = None

    def __init__(self, sizes, num_classes=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.items = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]
        self.targets = torch.arange(len(sizes)) % num_classes

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i], int(self.targets[i])


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    m = create_model("cifar_resnet20", num_classes=3).eval()
    for mod in m.modules():  # random BN statistics: outputs that differ between images
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
    return m


def _reference(model, views) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([model(normalize(v, MEAN, STD)).softmax(1).mean(0) for v in views])


def _check(result, probs, targets):
    top1 = probs.argmax(1)
    top = probs.topk(3, dim=1).indices
    assert result["n"] == len(targets)
    assert result["correct"] == int((top1 == targets).sum())
    assert result["top1_acc"] == pytest.approx(result["correct"] / len(targets))
    assert result["top1_err"] == pytest.approx(1 - result["top1_acc"])
    assert result["top5_acc"] == pytest.approx(float((top == targets[:, None]).any(1).float().mean()))


def test_full_in_memory_matches_plain_forward(model):
    data = Images([(32, 32)] * 7)
    data.images = torch.stack(data.items)
    result = evaluate(model, data, protocol="full", mean=MEAN, std=STD, batch_size=3, progress=False)
    _check(result, _reference(model, [x[None] for x in data.items]), data.targets)
    assert result["protocol"] == "full"


def test_center_and_10crop_views(model):
    data = Images([(40, 52), (48, 36), (37, 37), (60, 45)])
    crop = 24
    for protocol in ("center", "10crop"):
        result = evaluate(model, data, protocol=protocol, mean=MEAN, std=STD, input_size=(3, crop, crop),
                          batch_size=2, num_workers=0, progress=False)
        if protocol == "center":
            views = [center_view(x, crop)[None] for x in data.items]
        else:  # 4 corners + centre of the resized image, and their flips (section 3.4)
            views = [torch.stack(TF.ten_crop(TF.resize(x, [crop], antialias=True), [crop])) for x in data.items]
        _check(result, _reference(model, views), data.targets)


def test_center_view_resizes_shorter_side_256_crops_224():
    image = torch.zeros(3, 300, 400, dtype=torch.uint8)
    image[:, :, 200:] = 255  # right half white
    view = center_view(image, 224)
    assert view.shape == (3, 224, 224)
    # 300x400 -> 256x341: the centre crop spans columns 58..282 of 341, white from 170.5 on.
    assert view[0, 0, :100].max() < 20 and view[0, 0, 130:].min() > 235


def test_fully_convolutional_form_equals_pooled_classifier(model):
    """For a GAP + linear head, the classifier as a 1x1 conv averaged over positions is the same map."""
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(fully_convolutional_scores(model, x), model(x))


def test_vgg_dense_head_is_the_classifier_slid_over_the_feature_map():
    """VGG's fc6/fc7/fc8 as 7x7/1x1/1x1 convolutions (its paper's dense test): at 224 the score
    map is 1x1 and equals forward(); at 256 each of its 2x2 positions is the ordinary head
    applied to the 7x7 window of the 8x8 feature map at that offset."""
    torch.manual_seed(0)
    vgg = create_model("vgg11", num_classes=10).eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        torch.testing.assert_close(vgg.forward_dense(vgg.forward_features(x)).flatten(1), vgg(x),
                                   rtol=1e-4, atol=1e-5)
        features = vgg.forward_features(torch.randn(1, 3, 256, 256))
        score_map = vgg.forward_dense(features)
        assert features.shape[-2:] == (8, 8) and score_map.shape == (1, 10, 2, 2)
        for i in range(2):
            for j in range(2):
                torch.testing.assert_close(score_map[:, :, i, j], vgg.forward_head(features[:, :, i:i + 7, j:j + 7]),
                                           rtol=1e-4, atol=1e-5)


def test_multiscale_averages_scales_and_flips(model, monkeypatch):
    monkeypatch.setattr(ev, "MULTISCALE_SIDES", (24, 32))
    data = Images([(30, 40), (40, 30), (30, 40)])
    result = evaluate(model, data, protocol="multiscale", mean=MEAN, std=STD, num_workers=0, progress=False)
    probs = []
    with torch.no_grad():
        for x in data.items:
            views = [TF.resize(x, [s], antialias=True) for s in (24, 32)]
            views += [v.flip(-1) for v in views]
            probs.append(torch.stack([model(normalize(v[None], MEAN, STD)).softmax(1)[0] for v in views]).mean(0))
    _check(result, torch.stack(probs), data.targets)


class _FlattenHead(nn.Module):
    """A head that is not global average pooling (like VGG's fc6 over a 7x7 map)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.fc = nn.Linear(4, 3)

    def get_classifier(self):
        return self.fc

    def forward_features(self, x):
        return self.conv(x)

    def forward_head(self, x, pre_logits=False):
        x = x.amax(dim=(2, 3))
        return x if pre_logits else self.fc(x)


def test_multiscale_refuses_heads_that_are_not_fully_convolutional():
    with pytest.raises(ConfigError, match="cannot run fully-convolutionally"):
        evaluate(_FlattenHead(), Images([(32, 32)]), protocol="multiscale", mean=MEAN, std=STD,
                 num_workers=0, progress=False)


def test_bad_arguments(model):
    with pytest.raises(ConfigError, match="protocol 'five' is not one of"):
        evaluate(model, Images([(32, 32)]), protocol="five", mean=MEAN, std=STD)
    with pytest.raises(DataError, match="one size"):
        evaluate(model, Images([(32, 32), (30, 32)]), protocol="full", mean=MEAN, std=STD, num_workers=0,
                 progress=False)
    with pytest.raises(DataError, match="class index 4 but the model has 3 outputs"):
        evaluate(model, Images([(32, 32)] * 5, num_classes=5), protocol="full", mean=MEAN, std=STD,
                 num_workers=0, progress=False)


def test_cli_eval_weights_with_report(tmp_path, capsys):
    torch.manual_seed(0)
    net = create_model("cifar_resnet20")
    save_weights(net, tmp_path / "w.safetensors", mean=[0.5] * 3, std=[0.25] * 3,
                 classes=[str(i) for i in range(10)], input_size=(3, 16, 16))
    argv = ["eval", str(tmp_path / "w.safetensors"), "--data", "digits", "--split", "test", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr()
    result = json.loads(out.out.strip().splitlines()[-1])
    for key in ("model", "dataset", "split", "protocol", "n", "correct", "top1_acc", "top5_acc", "top1_err", "top5_err"):
        assert key in result
    assert result["model"] == "cifar_resnet20" and result["dataset"] == "digits" and result["protocol"] == "full"
    assert 0 <= result["top1_err"] <= 1 and result["n"] > 100
    per_class = json.loads((tmp_path / "r" / "per_class.json").read_text())
    assert sum(c["n"] for c in per_class.values()) == result["n"]
    assert (tmp_path / "r" / "confusion.png").stat().st_size > 1000


def test_cli_eval_model_name_says_random(capsys):
    assert main(["eval", "cifar_resnet20", "--data", "digits", "--split", "test", "--json"]) == 0
    out = capsys.readouterr()
    assert "random weights" in out.err
    assert json.loads(out.out.strip().splitlines()[-1])["n"] > 100
    assert main(["eval", "no_such_net", "--data", "digits"]) == 2
    assert "unknown model" in capsys.readouterr().err
