"""Evaluation protocols (full, center, 10crop, multiscale), ensembles, the report files and `resnetlab eval`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

import resnetlab.evaluate as ev
from resnetlab import create_model
from resnetlab.cli import main
from resnetlab.data import open_dataset
from resnetlab.data.imagenet import IMAGENET_WNIDS, imagenet_class_names
from resnetlab.data.transforms import normalize
from resnetlab.errors import ConfigError, DataError
from resnetlab.evaluate import (Member, center_view, crop_views, evaluate, fully_convolutional_scores, label_map,
                                probabilities)
from resnetlab.weights import WeightsMeta, load_weights, save_weights

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


def _ten_crops_by_hand(image: torch.Tensor, side: int, crop: int) -> torch.Tensor:
    """10-crop written out (section 3.4, after AlexNet): shorter side resized to ``side``, the four
    corner and the centre ``crop`` x ``crop`` patches by slicing, and the flips of those five."""
    resized = TF.resize(image, [side], antialias=True)
    h, w = resized.shape[-2:]
    boxes = [(0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop), ((h - crop) // 2, (w - crop) // 2)]
    patches = [resized[:, top:top + crop, left:left + crop] for top, left in boxes]
    return torch.stack(patches + [p.flip(-1) for p in patches])


def test_center_and_10crop_views(model):
    data = Images([(40, 50), (48, 36), (37, 37), (60, 45)])
    crop = 24  # CIFAR-size: the shorter side becomes the crop side itself
    for protocol in ("center", "10crop"):
        result = evaluate(model, data, protocol=protocol, mean=MEAN, std=STD, input_size=(3, crop, crop),
                          batch_size=2, num_workers=0, progress=False)
        if protocol == "center":
            views = [center_view(x, crop)[None] for x in data.items]
        else:
            views = [_ten_crops_by_hand(x, crop, crop) for x in data.items]
        _check(result, _reference(model, views), data.targets)


class _Tiny(nn.Module):
    """A small classifier for 224-pixel views (a CIFAR ResNet at 224 costs seconds per view)."""

    def __init__(self, seed: int, num_classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 8, stride=8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().amax(dim=(2, 3)))


def test_10crop_224_from_256_against_slicing():
    """At ImageNet size: a 300x400 image becomes 256x341, cut into its 4 corners, centre and flips."""
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8, generator=g)
    assert TF.resize(image, [256], antialias=True).shape == (3, 256, 341)
    views, by_hand = crop_views(image, "10crop", 224), _ten_crops_by_hand(image, 256, 224)
    assert views.shape == (10, 3, 224, 224)
    assert all(any(torch.equal(v, h) for v in views) for h in by_hand)  # the same ten, in any order
    assert torch.equal(by_hand[4], center_view(image, 224))  # its centre crop is the single-crop view

    tiny = _Tiny(0).eval()
    data = Images([(300, 400), (400, 300), (256, 256), (333, 290)])
    result = evaluate(tiny, data, protocol="10crop", mean=MEAN, std=STD, input_size=(3, 224, 224),
                      batch_size=2, num_workers=0, progress=False)
    (probs, _), (probs2, _) = probabilities([Member(tiny, MEAN, STD, (3, 224, 224))], data, protocol="10crop",
                                            batch_size=2, num_workers=0)
    reference = _reference(tiny, [_ten_crops_by_hand(x, 256, 224) for x in data.items])
    torch.testing.assert_close(torch.cat([probs, probs2]), reference)
    _check(result, reference, data.targets)


def _meta(mean, std, size: int, classes=("a", "b", "c")) -> WeightsMeta:
    return WeightsMeta("test", {}, list(mean), list(std), (3, size, size), list(classes), "test")


def test_ensemble_of_one_is_the_model_alone(model, monkeypatch):
    monkeypatch.setattr(ev, "MULTISCALE_SIDES", (24, 32))
    monkeypatch.setattr(ev, "SMALL_INPUT", 16)  # the mechanics, cheaply (CIFAR-size models are refused multiscale)
    data = Images([(40, 50), (48, 36), (37, 37)])
    for protocol in ("center", "10crop", "multiscale"):
        kwargs = dict(protocol=protocol, batch_size=2, num_workers=0, progress=False)
        alone = evaluate(model, data, mean=MEAN, std=STD, input_size=(3, 24, 24), **kwargs)
        one = evaluate(models=[(model, _meta(MEAN, STD, 24))], dataset=data, **kwargs)
        alone.pop("seconds"), one.pop("seconds")
        assert one == alone
    alone = torch.cat([p for p, _ in probabilities([Member(model, MEAN, STD, (3, 24, 24))], data, num_workers=0)])
    by_hand = _reference(model, [center_view(x, 24)[None] for x in data.items])
    torch.testing.assert_close(alone, by_hand)


def test_ensemble_of_two_averages_each_models_own_views(model):
    """Two models with their own normalization and input size: each model's probabilities are
    averaged over its own views, then the two are averaged."""
    torch.manual_seed(5)
    other = create_model("cifar_resnet20", num_classes=3).eval()
    for mod in other.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
    mean2, std2 = (0.4, 0.45, 0.5), (0.3, 0.2, 0.25)
    members = [(model, _meta(MEAN, STD, 24)), (other, _meta(mean2, std2, 32))]
    data = Images([(40, 50), (48, 36), (37, 37), (60, 45), (33, 64)], seed=3)
    for protocol in ("center", "10crop"):
        def views(x, crop):
            return center_view(x, crop)[None] if protocol == "center" else _ten_crops_by_hand(x, crop, crop)

        with torch.no_grad():
            p1 = torch.stack([model(normalize(views(x, 24), MEAN, STD)).softmax(1).mean(0) for x in data.items])
            p2 = torch.stack([other(normalize(views(x, 32), mean2, std2)).softmax(1).mean(0) for x in data.items])
        by_hand = (p1 + p2) / 2
        got = torch.cat([p for p, _ in probabilities([Member(m, meta.mean, meta.std, meta.input_size)
                                                      for m, meta in members], data, protocol=protocol,
                                                     batch_size=2, num_workers=0)])
        torch.testing.assert_close(got, by_hand)
        assert not torch.allclose(got, p1, atol=1e-3) and not torch.allclose(got, p2, atol=1e-3)
        result = evaluate(models=members, dataset=data, protocol=protocol, batch_size=2, num_workers=0,
                          progress=False)
        _check(result, by_hand, data.targets)


def test_ensemble_refuses_other_classes_and_own_normalization(model):
    data = Images([(32, 32)])
    with pytest.raises(ConfigError, match=r"predict different classes \(class 1 is 'b' vs 'x'\)"):
        evaluate(models=[(model, _meta(MEAN, STD, 24)), (model, _meta(MEAN, STD, 24, "axc"))], dataset=data)
    with pytest.raises(ConfigError, match=r"3 vs 4 classes"):
        evaluate(models=[(model, _meta(MEAN, STD, 24)), (model, _meta(MEAN, STD, 24, "abcd"))], dataset=data)
    with pytest.raises(ConfigError, match="from each model's metadata"):
        evaluate(models=[(model, _meta(MEAN, STD, 24))], dataset=data, mean=MEAN)
    with pytest.raises(ConfigError, match="either a model"):
        evaluate(model, data, models=[(model, _meta(MEAN, STD, 24))])
    with pytest.raises(ConfigError, match="needs the model's input normalization"):
        evaluate(model, data)


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
    monkeypatch.setattr(ev, "SMALL_INPUT", 16)  # the mechanics, cheaply (CIFAR-size models are refused multiscale)
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


@pytest.fixture(scope="module")
def alexnet() -> nn.Module:
    torch.manual_seed(0)
    return create_model("alexnet", num_classes=3).eval()


@pytest.mark.parametrize("size", [(224, 224), (256, 320), (32, 32)])
def test_alexnet_multiscale_is_refused_at_every_image_size(alexnet, size):
    """The refusal was a traceback on other sizes than 224 ('mat1 and mat2 shapes', 'Output size is too small')."""
    with pytest.raises(ConfigError, match="alexnet: its head is not global average pooling"):
        evaluate(alexnet, Images([size]), protocol="multiscale", mean=MEAN, std=STD, num_workers=0, progress=False)


def test_full_refuses_images_the_model_cannot_take(alexnet, model, capsys):
    with pytest.raises(ConfigError, match=r"alexnet cannot take 320x256 inputs \(mat1 and mat2 .*protocol full feeds "
                                          r"the data's images as they are.*--protocol center"):
        evaluate(alexnet, Images([(256, 320)]), protocol="full", mean=MEAN, std=STD, num_workers=0, progress=False)
    result = evaluate(alexnet, Images([(256, 320)] * 2), protocol="center", mean=MEAN, std=STD, num_workers=0,
                      progress=False)
    assert result["n"] == 2
    evaluate(model, Images([(40, 48)]), protocol="full", mean=MEAN, std=STD, num_workers=0, progress=False)
    assert "cifar_resnet20 takes 32x32 images and protocol full feeds the data's 48x40 images" in capsys.readouterr().err


def test_cifar_size_models_are_refused_multiscale_and_default_to_full(model, tmp_path):
    """`resnetlab eval CIFAR_WEIGHTS --protocol multiscale` ran 550 s and reported 12 % top-1 against 86 % with full:
    the ImageNet scales are refused for a CIFAR-size model, before any image is read."""
    weights = tmp_path / "c20.safetensors"
    save_weights(model, weights, mean=list(MEAN), std=list(STD), classes=["a", "b", "c"], input_size=(3, 32, 32))
    with pytest.raises(ConfigError, match="cifar_resnet20 takes 32x32 images: protocol multiscale is the ImageNet "
                                          r"test .*use --protocol full"):
        evaluate(model, Images([(32, 32)]), protocol="multiscale", mean=MEAN, std=STD)
    with pytest.raises(ConfigError, match="protocol multiscale is the ImageNet test"):
        ev.run_eval(str(weights), "no_such_data=/nowhere", protocol="multiscale", device="cpu")  # before the data
    # the README's evaluate(model, data): normalization, input size and default protocol from the weights file
    loaded, _ = load_weights(weights)
    data = Images([(32, 32)] * 4)
    result = evaluate(loaded, data, num_workers=0, progress=False)
    explicit = evaluate(model, data, protocol="full", mean=MEAN, std=STD, num_workers=0, progress=False)
    assert result["protocol"] == "full" and result["correct"] == explicit["correct"]
    with pytest.raises(ConfigError, match="needs the model's input normalization"):
        evaluate(create_model("cifar_resnet20"), data)


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


def test_cli_eval_ensemble(tmp_path, capsys):
    """``resnetlab eval W1 W2``: one JSON line with every contract key, ``models`` and ``ensemble``."""
    classes = [str(i) for i in range(10)]
    files = []
    for seed, mean, std, size in ((0, [0.5] * 3, [0.25] * 3, 16), (1, [0.4] * 3, [0.3] * 3, 12)):
        torch.manual_seed(seed)
        files.append(str(tmp_path / f"w{seed}.safetensors"))
        save_weights(create_model("cifar_resnet20"), files[-1], mean=mean, std=std, classes=classes,
                     input_size=(3, size, size))

    def run(*targets):
        assert main(["eval", *targets, "--data", "digits", "--split", "test", "--json"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    alone, pair, twice = run(files[0]), run(*files), run(files[0], files[0])
    for key in ("model", "dataset", "split", "protocol", "n", "correct", "top1_acc", "top5_acc", "top1_err", "top5_err"):
        assert key in pair
    assert alone["models"] == [files[0]] and alone["ensemble"] is False and alone["weights"] == files[0]
    assert pair["models"] == files and pair["ensemble"] is True and pair["model"] == "cifar_resnet20+cifar_resnet20"
    assert pair["n"] == alone["n"] == 360 and pair["protocol"] == "full"
    # (p + p) / 2 is p exactly: an ensemble of a model with itself is the model alone
    assert twice["correct"] == alone["correct"] and twice["top5_acc"] == alone["top5_acc"]
    save_weights(create_model("cifar_resnet20"), tmp_path / "other.safetensors", mean=[0.5] * 3, std=[0.25] * 3,
                 classes=classes[::-1])
    assert main(["eval", files[0], str(tmp_path / "other.safetensors"), "--data", "digits"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predict different classes (class 0 is '0' vs '9')" in err[0]


def test_cpu_evaluation_keeps_freed_memory(model, monkeypatch):
    """On a CPU, evaluation asks malloc to keep freed memory, as training does (1.4x images/s,
    benchmarks/eval_memory.py); the results are the same either way."""
    calls = []
    monkeypatch.setattr(ev, "keep_freed_memory", lambda: calls.append(1) or True)
    data = Images([(32, 32)] * 6)
    kept = evaluate(model, data, protocol="full", mean=MEAN, std=STD, progress=False, num_workers=0)
    assert calls
    monkeypatch.setattr(ev, "keep_freed_memory", lambda: False)
    default = evaluate(model, data, protocol="full", mean=MEAN, std=STD, progress=False, num_workers=0)
    assert {k: v for k, v in kept.items() if k != "seconds"} == {k: v for k, v in default.items() if k != "seconds"}


def test_label_map_finds_a_data_sets_classes_among_the_models_outputs():
    names = list(imagenet_class_names())
    assert label_map(list(IMAGENET_WNIDS), names) == (None, "by ImageNet synset id")  # ImageNet's val/
    assert label_map([IMAGENET_WNIDS[i] for i in (1, 217, 999)], names) == ([1, 217, 999], "by ImageNet synset id")
    as_text = sorted(str(i) for i in range(1000))  # ImageNetV2's folders, as an image folder sorts them
    index_of, how = label_map(as_text, names)
    assert how == "by class number" and index_of[:4] == [0, 1, 10, 100] and sorted(index_of) == list(range(1000))
    assert label_map(["cat", "dog"], ["airplane", "bird", "cat", "deer", "dog"]) == ([2, 4], "by name")
    assert label_map(["cat", "dog"], ["cat", "dog", "frog"]) == (None, "by name")
    assert label_map(["a", "b"], ["x", "y", "z"]) == (None, ev.BY_INDEX)
    assert label_map([IMAGENET_WNIDS[0]], names[:10]) == (None, ev.BY_INDEX)  # synset ids mean ImageNet's 1,000
    assert label_map(["3", "12"], [f"c{i}" for i in range(10)]) == (None, ev.BY_INDEX)  # 12 is no output


@pytest.mark.parametrize("folders, how", [((IMAGENET_WNIDS[0], IMAGENET_WNIDS[217]), "by ImageNet synset id"),
                                          (("0", "217"), "by class number")])
def test_eval_of_imagenet_weights_on_a_subset_folder_matches_classes(tmp_path, capsys, folders, how):
    """`resnetlab eval` of 1,000-class ImageNet weights (class names in words, as imported from
    torchvision) on a folder of two of ImageNet's classes, named by synset id (Imagenette, ImageNet-R)
    or by number (ImageNetV2): before, folder i was compared with output i, so a model that answers
    class 217 for every image scored 0 instead of the half of the images that are class 217."""
    net = create_model("cifar_resnet20", num_classes=1000)
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.zero_()
        net.fc.bias[217] = 1.0
    weights = tmp_path / "in1k.safetensors"
    save_weights(net, weights, mean=list(MEAN), std=list(STD), classes=list(imagenet_class_names()),
                 input_size=(3, 32, 32))
    for folder in folders:
        (tmp_path / "data" / "val" / folder).mkdir(parents=True)
        for i in range(2):
            TF.to_pil_image(torch.full((3, 32, 32), 60 * i, dtype=torch.uint8)).save(
                tmp_path / "data" / "val" / folder / f"{i}.png")
    assert main(["eval", str(weights), "--data", f"imagenet={tmp_path / 'data'}", "--split", "val", "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out.strip().splitlines()[-1])
    assert (result["n"], result["correct"], result["labels"]) == (4, 2, how)
    assert f"its 2 classes are found among the model's 1000 outputs {how}" in out.err


def test_eval_can_answer_only_among_the_data_sets_classes(tmp_path, capsys):
    """ImageNet-A/R are scored with a 1,000-class model's answer restricted to their 200 classes.
    A model whose strongest output (500) is outside a two-class folder and whose next is class 217
    scores 0/4 over all outputs and 2/4 with --data-classes-only (top-5 among two classes: 4/4)."""
    net = create_model("cifar_resnet20", num_classes=1000)
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.zero_()
        net.fc.bias[500], net.fc.bias[217], net.fc.bias[3], net.fc.bias[0] = 2.0, 1.0, 0.5, -1.0  # 0: never top-5
    weights = tmp_path / "in1k.safetensors"
    save_weights(net, weights, mean=list(MEAN), std=list(STD), classes=list(imagenet_class_names()),
                 input_size=(3, 32, 32))
    for folder in (IMAGENET_WNIDS[0], IMAGENET_WNIDS[217]):
        (tmp_path / "data" / "val" / folder).mkdir(parents=True)
        for i in range(2):
            TF.to_pil_image(torch.full((3, 32, 32), 60 * i, dtype=torch.uint8)).save(
                tmp_path / "data" / "val" / folder / f"{i}.png")
    results = []
    for extra in ([], ["--data-classes-only"]):
        assert main(["eval", str(weights), "--data", f"imagenet={tmp_path / 'data'}", "--split", "val", *extra]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        results.append((out[0], json.loads(out[-1])))
    (_, everything), (line, restricted) = results
    assert (everything["correct"], everything["top5_acc"], everything["answers_among"]) == (0, 0.5, 1000)
    assert (restricted["correct"], restricted["top5_acc"], restricted["answers_among"]) == (2, 1.0, 2)
    assert line.endswith("(2/4 correct, answers among its 2 classes)")
    model, _ = load_weights(weights)
    data = open_dataset(f"imagenet={tmp_path / 'data'}", "val")
    for among in ([], [0, 1000]):
        with pytest.raises(ConfigError, match=r"among: the answers must be outputs 0..999 \(at least one\)"):
            evaluate(model, data, among=among, progress=False)
