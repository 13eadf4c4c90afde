"""features_only=True (timm's convention): stage outputs, feature_info, weight files."""

from __future__ import annotations

import pytest
import torch

import resnetlab
from resnetlab.errors import ConfigError, WeightsError
from resnetlab.models.features import FeatureNet

# (model, kwargs, input side, channels, reductions) of the default out_indices
CASES = [
    ("resnet18", {}, 64, [64, 128, 256, 512], [4, 8, 16, 32]),
    ("resnet50", {"variant": "v1.5"}, 64, [256, 512, 1024, 2048], [4, 8, 16, 32]),
    ("resnet50", {"variant": "v1"}, 64, [256, 512, 1024, 2048], [4, 8, 16, 32]),
    ("plain34", {}, 64, [64, 128, 256, 512], [4, 8, 16, 32]),
    ("resnet34", {"shortcut": "A"}, 64, [64, 128, 256, 512], [4, 8, 16, 32]),
    ("cifar_resnet20", {}, 32, [16, 32, 64], [1, 2, 4]),
    ("vgg11_bn", {}, 64, [128, 256, 512, 512], [4, 8, 16, 32]),
    ("densenet121", {}, 64, [256, 512, 1024, 1024], [4, 8, 16, 32]),
    ("densenet40_k12", {}, 32, [160, 304, 448], [1, 2, 4]),
]


@pytest.mark.parametrize("name,kwargs,side,channels,reductions", CASES)
def test_stage_outputs_match_feature_info(name, kwargs, side, channels, reductions):
    model = resnetlab.create_model(name, features_only=True, **kwargs).eval()
    assert model.feature_info.channels() == channels
    assert model.feature_info.reduction() == reductions
    with torch.no_grad():
        outs = model(torch.randn(2, 3, side, side))
    assert [o.shape[1] for o in outs] == channels
    assert [side // o.shape[-1] for o in outs] == reductions


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet40_k12", "cifar_resnet20"])
def test_last_stage_is_forward_features(name):
    full = resnetlab.create_model(name).eval()
    feats = FeatureNet(full)  # the model's own modules, regrouped by stage
    assert not any(k.startswith(("fc.", "classifier.")) for k in feats.state_dict())
    side = 32 if full.feature_stages()[-1].reduction == 4 else 64
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        assert torch.equal(feats(x)[-1], full.forward_features(x))


def test_out_indices_select_and_validate():
    model = resnetlab.create_model("resnet18", features_only=True, out_indices=(0, 2, 3))
    assert model.feature_info.module_name() == ["conv1", "conv3_x", "conv4_x"]
    assert model.feature_info.reduction() == [2, 8, 16]
    assert len(model.stages) == 4  # conv5_x is not needed and not kept
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 128, 256]
    for bad in [(4, 1), (1, 5), (), (1, 1)]:
        with pytest.raises(ConfigError, match="out_indices"):
            resnetlab.create_model("resnet18", features_only=True, out_indices=bad)
    with pytest.raises(ConfigError, match="out_indices"):
        resnetlab.create_model("cifar_resnet20", features_only=True, out_indices=(1, 2, 3, 4))
    with pytest.raises(ConfigError, match="features_only"):
        resnetlab.create_model("resnet18", out_indices=(1, 2))


def test_alexnet_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="strides 4"):
        resnetlab.create_model("alexnet", features_only=True)


def test_load_weights_features_only(tmp_path):
    full = resnetlab.create_model("resnet18", num_classes=7)
    path = tmp_path / "r18.safetensors"
    resnetlab.save_weights(full, path, mean=[0.5] * 3, std=[0.25] * 3)
    feats, meta = resnetlab.load_weights(path, features_only=True, out_indices=(3,))
    assert meta.model == "resnet18" and feats.feature_info.channels() == [256]
    assert not any("fc" in k for k in feats.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = full.eval().layer3(full.layer2(full.layer1(full.maxpool(full.relu(full.bn1(full.conv1(x)))))))
        assert torch.equal(feats(x)[0], want)
    # the body is still checked strictly: a tensor of the wrong shape is refused by name
    other = resnetlab.create_model("resnet34", num_classes=7)
    with pytest.raises(WeightsError, match="layer"):
        resnetlab.load_weights(path, model=other, features_only=True)
