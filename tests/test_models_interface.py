"""Every new family (pre-activation, Wide, ResNeXt-style grouped, ResNet-D) through the one interface:
registry and CLI, weight files, TorchScript/ONNX export, BN folding, the fully-convolutional test,
features and detection backbones, hub folders. Small members of each family keep it cheap."""

from __future__ import annotations

import json

import pytest
import torch

import resnetlab
from resnetlab import create_model, list_models, load_weights, model_info, save_weights
from resnetlab.cli import main
from resnetlab.evaluate import fully_convolutional_scores
from resnetlab.export import export
from resnetlab.inference import optimize

# (registered name, kwargs, input side): one small network of each new family
SMALL = [
    ("cifar_preact_resnet", {"depth": 11, "bottleneck": True}, 32),
    ("preact_resnet50", {"widths": [8, 16, 32, 64]}, 64),
    ("wrn", {"depth": 10, "widen_factor": 2, "dropout": 0.3}, 32),
    ("resnet50", {"groups": 2, "width_per_group": 32, "widths": [8, 16, 32, 64]}, 64),  # ResNeXt's grouped 3x3
    ("resnet50d", {"widths": [8, 16, 32, 64]}, 64),
]
IDS = ["preact-cifar", "preact-imagenet", "wrn", "grouped", "resnet-d"]
NEW_FAMILIES = ("preact_resnet", "cifar_preact_resnet", "wrn", "wide_resnet", "resnext", "resnet_d")


pytestmark = pytest.mark.usefixtures("one_thread")


def _saved(tmp_path, name, kwargs, side):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, **kwargs).eval()
    path = tmp_path / f"{name}.safetensors"
    save_weights(model, path, mean=[0.5] * 3, std=[0.25] * 3, classes=list("abcd"), input_size=[3, side, side],
                 source="test")
    return model, path


def test_cli_lists_every_new_model(capsys):
    assert main(["list", "--json"]) == 0
    names = set(json.loads(capsys.readouterr().out))
    assert {n for n in list_models() if model_info(n).family in NEW_FAMILIES} <= names
    assert {"preact_resnet1001", "resnext101_64x4d", "wide_resnet101_2", "wrn_28_10", "resnet152d"} <= names


@pytest.mark.parametrize("argv, params", [
    (["info", "preact_resnet164", "--json"], 1_703_258),
    (["info", "wrn", "depth=16", "widen_factor=8", "--json"], 10_961_370),
    (["info", "resnet50d", "widths=[8,16,32,64]", "--input-size", "64", "--json"], None),
])
def test_cli_info(argv, params, capsys):
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == params or params is None
    assert info["macs"] > 0 and info["layers"]


@pytest.mark.parametrize("name, kwargs, side", SMALL, ids=IDS)
def test_weights_export_fold_and_fully_convolutional(tmp_path, name, kwargs, side):
    model, path = _saved(tmp_path, name, kwargs, side)
    x = torch.randn(2, 3, side, side)
    rebuilt, meta = load_weights(path)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(rebuilt(x), expected)
        # the paper's fully-convolutional test (Table 4): fc as a 1x1 conv over the last map
        torch.testing.assert_close(fully_convolutional_scores(model, x), expected, rtol=1e-4, atol=1e-4)
    assert meta.model == name and meta.kwargs == {**kwargs, "num_classes": 4}
    scripted = export(path, "torchscript", tmp_path / "m.pt")
    assert scripted["max_abs_diff"] < 1e-5
    fast = optimize(model, x)  # BN folding where a BN follows a conv; pre-activation BNs stay
    assert fast.report["max_rel_diff"] < 1e-4 and fast.report["same_top1"]


@pytest.mark.parametrize("name, kwargs, side", SMALL[1:2] + SMALL[4:], ids=["preact-imagenet", "resnet-d"])
def test_onnx(tmp_path, name, kwargs, side):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    model, path = _saved(tmp_path, name, kwargs, side)
    with torch.no_grad():
        scale = float(model(torch.randn(3, 3, side, side)).abs().max())  # untrained deep nets: large logits
    assert export(path, "onnx", tmp_path / "m.onnx")["max_abs_diff"] < 1e-5 * scale


@pytest.mark.parametrize("name, kwargs, side", SMALL, ids=IDS)
def test_features_and_detection_backbone(name, kwargs, side):
    from resnetlab.detection import create_detector

    features = create_model(name, features_only=True, **kwargs)
    maps = features(torch.randn(1, 3, side, side))
    assert [m.shape[1] for m in maps] == features.feature_info.channels()
    assert [side // m.shape[-1] for m in maps] == features.feature_info.reduction()
    detector = create_detector("fasterrcnn_resnet18_c4", 2, backbone=name, backbone_kwargs=kwargs, min_size=96,
                               max_size=96, trainable_stages=len(features.feature_info) + 1).eval()
    with torch.no_grad():
        (found,) = detector([torch.rand(3, 96, 96)])
    assert set(found) == {"boxes", "labels", "scores"}


@pytest.mark.parametrize("name, kwargs, timm_name", [
    ("cifar_preact_resnet", {"depth": 11, "bottleneck": True, "variant": "v1.5"}, None),
    ("resnet18d", {}, "resnet18d"),
    ("wrn", {"depth": 10, "widen_factor": 1}, None),
])
def test_hub_folder(tmp_path, name, kwargs, timm_name):
    model = create_model(name, num_classes=3, **kwargs).eval()
    folder = resnetlab.save_pretrained(model, tmp_path / "hub", {"classes": ["x", "y", "z"]})
    config = json.loads((folder / "config.json").read_text())
    info = model_info(name)
    assert config["family"] == info.family and config["timm"]["model"] == timm_name
    assert config["pretrained_cfg"]["paper_ids"] == {"He et al. 2016": "arXiv:1603.05027",
                                                     "He et al. 2019": "arXiv:1812.01187",
                                                     "Zagoruyko & Komodakis 2016": "arXiv:1605.07146"}[
        info.paper.split(",")[0]]
    card = (folder / "README.md").read_text()
    assert info.paper in card and ("strides on its 3x3 conv" in card) == ("variant" in kwargs)
    rebuilt = resnetlab.from_pretrained(folder)
    assert rebuilt.pretrained_cfg["architecture"] == name and rebuilt.pretrained_meta.kwargs == {**kwargs,
                                                                                               "num_classes": 3}
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_cli_train_eval_export_bench(tmp_path, capsys):
    """train (the demo recipe, a pre-activation net), eval and export its weights, bench a WRN."""
    run = tmp_path / "run"
    assert main(["train", "demo", "model=cifar_preact_resnet", 'model_kwargs={"depth": 8}', "iterations=2",
                 "milestones=[1]", "batch_size=16", "eval_every=2", "log_every=1", "device=cpu",
                 "--out", str(run)]) == 0
    weights = run / "final.safetensors"
    assert main(["eval", str(weights), "--data", "digits", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == "cifar_preact_resnet" and 0 <= result["top1_err"] <= 1
    assert main(["export", str(weights), "--format", "hub", "-o", str(tmp_path / "hub")]) == 0
    assert main(["bench", "infer", "--model", "wrn_16_8", "--batch-size", "1", "--repeats", "1", "--warmup", "0",
                 "--min-time", "0", "--threads", "1", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert bench["model"] == "wrn_16_8" and bench["img_s"] > 0
