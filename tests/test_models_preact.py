"""Pre-activation nets: the ResNets of He et al. 2016 (sizes, the unit's arrangement, timm's resnetv2)
and the CIFAR Wide ResNets built of the same units (Zagoruyko & Komodakis 2016); their recipes.

The papers' numbers are written here, and the exact counts are derived here from the papers'
descriptions of the nets, independently of resnetlab's counters.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from resnetlab import ConfigError, create_model, list_models, model_info
from resnetlab.importers import _timm_resnetv2_key
from resnetlab.models.layers import ZeroPadShortcut
from resnetlab.models.preact_resnet import (PreActBasicBlock, PreActBottleneck, PreActResNet, cifar_preact_resnet,
                                            preact_resnet)

# He et al. 2016, section 5 (CIFAR-10): parameters of the nets it trains, in millions.
PAPER_PARAMS_M = {"preact_resnet110": 1.7, "preact_resnet164": 1.7, "preact_resnet1001": 10.2}
# Zagoruyko & Komodakis 2016 (CIFAR): WRN-d-k -> parameters in millions.
WRN_PARAMS_M = {(28, 10): 36.5, (40, 4): 8.9, (16, 8): 11.0}


pytestmark = pytest.mark.usefixtures("one_thread")


def cifar_counts(n: int, bottleneck: bool, stem: int = 16, widths=(16, 32, 64), classes: int = 10) -> tuple[int, int]:
    """(all parameters, conv + fc weights) of a CIFAR pre-activation net built as the paper describes it:
    a 3x3 stem conv; per unit BN-ReLU before each conv (BN: a scale and a shift per channel); a 1x1
    projection without BN where the channels change; a final BN; a fc with bias."""
    weights = 9 * 3 * stem
    bn = 0
    c_in = stem
    for planes in widths:
        c_out = planes * (4 if bottleneck else 1)
        for _ in range(n):
            if bottleneck:
                weights += c_in * planes + 9 * planes * planes + planes * c_out
                bn += 2 * (c_in + planes + planes)
            else:
                weights += 9 * c_in * planes + 9 * planes * planes
                bn += 2 * (c_in + planes)
            if c_in != c_out:
                weights += c_in * c_out
            c_in = c_out
    weights += c_in * classes + classes
    bn += 2 * c_in
    return weights + bn, weights


def conv_fc_weights(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters())


def test_names_and_families():
    names = set(list_models())
    assert {f"preact_resnet{d}" for d in (18, 34, 50, 101, 152, 200, 110, 164, 1001)} <= names
    assert model_info("preact_resnet50").family == "preact_resnet"
    assert model_info("preact_resnet164").family == "cifar_preact_resnet"
    assert model_info("preact_resnet164").input_size == (3, 32, 32)
    assert "cifar_preact_resnet" in list_models(include_generic=True) and "cifar_preact_resnet" not in names


@pytest.mark.parametrize("name, n, bottleneck", [("preact_resnet110", 18, False), ("preact_resnet164", 18, True),
                                                 ("preact_resnet1001", 111, True)])
def test_cifar_sizes_match_the_paper(name, n, bottleneck, meta_model):
    model = meta_model(name)
    every, weights = cifar_counts(n, bottleneck)
    assert sum(p.numel() for p in model.parameters()) == every
    assert conv_fc_weights(model) == weights
    # The paper counts conv and fc weights: ResNet-1001 has 10.18 M of them (10.2 M), and 10.33 M
    # parameters with BN's scales and shifts.
    assert round(weights / 1e6, 1) == PAPER_PARAMS_M[name]


def test_any_cifar_depth_and_bad_depths(meta_model):
    assert sum(p.numel() for p in meta_model("cifar_preact_resnet", depth=20, bottleneck=True).parameters()) \
        == cifar_counts(2, True)[0]
    assert sum(p.numel() for p in meta_model("cifar_preact_resnet", depth=20).parameters()) == cifar_counts(3, False)[0]
    with pytest.raises(ConfigError, match="9n\\+2"):
        cifar_preact_resnet(depth=100, bottleneck=True)
    with pytest.raises(ConfigError, match="6n\\+2"):
        cifar_preact_resnet(depth=165)
    with pytest.raises(ConfigError, match="needs depth"):
        create_model("cifar_preact_resnet")


@pytest.mark.parametrize("depth", [18, 50])
def test_imagenet_nets_have_the_2015_convs(depth, meta_model):
    """Pre-activation changes where BN and ReLU sit, not the convs: the same conv and fc weights as
    the 2015 net of Table 1."""
    def shapes(model: nn.Module) -> list[tuple[int, ...]]:
        return sorted(tuple(m.weight.shape) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))

    assert shapes(meta_model(f"preact_resnet{depth}")) == shapes(meta_model(f"resnet{depth}"))


def test_resnet200_units(meta_model):
    """ResNet-200 (section 5, ImageNet): fb.resnet.torch's 3, 24, 36, 3 bottleneck units."""
    model = meta_model("preact_resnet200")
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 24, 36, 3]


def test_a_unit_is_a_clean_identity_plus_its_branch():
    """x_{l+1} = x_l + F(x_l) (Fig. 4e): with the last conv of a unit at zero, the unit returns its
    input unchanged, negative values included (a 2015 unit would apply ReLU after the addition)."""
    model = create_model("cifar_preact_resnet", depth=20, bottleneck=True).eval()
    unit = model.layer2[1]
    assert isinstance(unit, PreActBottleneck) and unit.downsample is None
    nn.init.zeros_(unit.conv3.weight)
    x = torch.randn(2, 128, 8, 8)
    assert (x < 0).any()
    with torch.no_grad():
        assert torch.equal(unit(x), x)


def test_first_unit_shares_its_activation_and_projections_are_pre_activated():
    """Section 4.1: the first unit's BN-ReLU comes "right after conv1 and before splitting into two
    paths"; a projection takes the pre-activated input and has no BN (the authors' code)."""
    model = create_model("preact_resnet110").eval()
    first = model.layer1[0]
    assert isinstance(first, PreActBasicBlock) and first.downsample is None
    nn.init.zeros_(first.conv2.weight)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(first(x), torch.relu(first.bn1(x)))
        down = model.layer2[0]
        assert [type(m) for m in down.downsample] == [nn.Conv2d]
        nn.init.zeros_(down.conv2.weight)
        assert torch.equal(down(x), down.downsample(torch.relu(down.bn1(x))))
    option_a = create_model("preact_resnet110", shortcut="A").eval().layer2[0]
    assert isinstance(option_a.downsample, ZeroPadShortcut) and not option_a.shortcut_preact  # a clean identity


def test_stride_placement_and_final_activation():
    v1 = create_model("preact_resnet50", widths=[8, 16, 32, 64])
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    v15 = create_model("preact_resnet50", variant="v1.5", widths=[8, 16, 32, 64])
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    # a final BN-ReLU after the last addition, before pooling
    with torch.no_grad():
        assert (v1.eval().forward_features(torch.randn(1, 3, 64, 64)) >= 0).all()
    assert v1.final_bn.num_features == 256


@pytest.mark.parametrize("name, kwargs, side", [
    ("preact_resnet110", {}, 16),
    ("cifar_preact_resnet", {"depth": 11, "bottleneck": True}, 16),
    ("preact_resnet18", {"widths": [8, 16, 32, 64]}, 32),
    ("preact_resnet50", {"widths": [8, 16, 32, 64], "variant": "v1.5"}, 32),
])
def test_forward_backward_and_interface(name, kwargs, side):
    model = create_model(name, num_classes=5, **kwargs)
    x = torch.randn(2, 3, side, side)
    out = model(x)
    assert out.shape == (2, 5)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        torch.testing.assert_close(model.forward_head(features), model(x))
    assert model.get_classifier().out_features == 5


def test_features_only():
    cifar = create_model("preact_resnet110", features_only=True)
    assert cifar.feature_info.channels() == [16, 32, 64] and cifar.feature_info.reduction() == [1, 2, 4]
    imagenet = create_model("preact_resnet50", features_only=True, out_indices=(0, 1, 2, 3, 4),
                            widths=[8, 16, 32, 64])
    assert imagenet.feature_info.channels() == [64, 32, 64, 128, 256]
    assert imagenet.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert imagenet.feature_info.module_name() == ["conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x"]
    maps = imagenet(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 32, 32), (32, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2)]


def test_refusals():
    with pytest.raises(ConfigError, match="dropout between the convs"):
        PreActResNet(PreActBottleneck, (1, 1, 1), (16, 32, 64), stem_width=16, stem="cifar", dropout=0.3)
    with pytest.raises(ConfigError, match="unknown argument.*zero_init_residual"):
        create_model("preact_resnet164", zero_init_residual=True)
    with pytest.raises(ConfigError, match="depth must be one of"):
        preact_resnet(depth=77)


def _from_timm(name: str, ours: nn.Module) -> nn.Module:
    timm = pytest.importorskip("timm", reason="timm (the dev extra) is the reference here")
    theirs = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():  # statistics away from their initial 0/1, so that every BN matters
        for m in theirs.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    state = {_timm_resnetv2_key(k): v.flatten(1) if k == "head.fc.weight" else v for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    return theirs


def test_preact_resnet50_v15_is_timms_resnetv2_50():
    """timm's resnetv2_50 is the same arrangement with the stride on the 3x3 conv: same outputs."""
    ours = create_model("preact_resnet50", variant="v1.5").eval()
    theirs = _from_timm("resnetv2_50", ours)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def test_preact_resnet18_differs_from_timms_only_in_the_first_unit():
    """timm's resnetv2_18 keeps the first unit's identity clean; the paper's first unit shares its
    BN-ReLU (section 4.1). With that one unit switched, the outputs agree."""
    ours = create_model("preact_resnet18").eval()
    theirs = _from_timm("resnetv2_18", ours)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(ours(x), theirs(x), rtol=1e-3, atol=1e-3)
        ours.layer1[0].shortcut_preact = False
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("depth, k", sorted(WRN_PARAMS_M))
def test_wrn_sizes_match_the_paper(depth, k, meta_model):
    """WRN-d-k: a 16-filter stem, three groups of N = (d - 4) / 6 pre-activation basic units with
    16k, 32k and 64k filters, a 1x1 projection where the width changes (all parameters counted)."""
    model = meta_model(f"wrn_{depth}_{k}")
    every, _ = cifar_counts((depth - 4) // 6, False, widths=(16 * k, 32 * k, 64 * k))
    assert sum(p.numel() for p in model.parameters()) == every
    assert round(every / 1e6, 1) == WRN_PARAMS_M[(depth, k)]
    assert model_info(f"wrn_{depth}_{k}").family == "wrn"


def test_wrn_dropout_between_the_convs_and_bad_depths():
    model = create_model("wrn", depth=10, widen_factor=2, dropout=0.3)
    unit = model.layer1[0]
    assert isinstance(unit.dropout, nn.Dropout) and unit.dropout.p == 0.3
    assert [name for name, _ in unit.named_children()].index("dropout") == 4  # bn1 relu conv1 bn2 dropout conv2
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))  # training: dropout draws
        model.eval()
        assert torch.equal(model(x), model(x))
    assert isinstance(create_model("wrn_16_8").layer1[0].dropout, nn.Identity)
    with pytest.raises(ConfigError, match="6N\\+4"):
        create_model("wrn", depth=28 + 1, widen_factor=10)
    with pytest.raises(ConfigError, match="dropout must be in"):
        create_model("wrn_16_8", dropout=1.5)


def test_recipes_as_published():
    from resnetlab.recipes import get_recipe
    from resnetlab.train.schedule import Schedule

    preact = get_recipe("paper_cifar_preact")
    # He et al. 2016, appendix: the 2015 CIFAR recipe, lr 0.01 for the first 400 iterations
    assert (preact.model, preact.batch_size, preact.lr, preact.milestones, preact.iterations) == \
        ("preact_resnet164", 128, 0.1, (32_000, 48_000), 64_000)
    assert (preact.weight_decay, preact.momentum, preact.warmup_lr) == (1e-4, 0.9, 0.01)
    assert preact.warmup_lr_iterations == 400
    lr = Schedule(preact.lr, preact.schedule, preact.iterations, preact.milestones,
                  warmup_lr_iterations=preact.warmup_lr_iterations).lr
    assert [lr(s) for s in (0, 399, 400, 31_999)] == [0.01, 0.01, 0.1, 0.1]
    wrn = get_recipe("wrn_cifar")
    # Zagoruyko & Komodakis 2016: 200 epochs, lr 0.1 x 0.2 at 60, 120, 160, wd 5e-4, Nesterov 0.9, batch 128
    assert (wrn.model, wrn.epochs, wrn.lr, wrn.milestones, wrn.gamma) == ("wrn_28_10", 200, 0.1, (60, 120, 160), 0.2)
    assert (wrn.weight_decay, wrn.nesterov, wrn.momentum, wrn.batch_size) == (5e-4, True, 0.9, 128)
    with pytest.raises(ConfigError, match="two warm-ups"):
        dataclasses.replace(preact, warmup_until_train_error=0.8)


def test_paper_cifar_preact_trains_on_cifar10(shared_dir, tmp_path):
    """A few steps of the recipe train on the lossless CIFAR-10 with the 400-step warm-up at 0.01
    (validating its 5,000 hold-out images would cost 20 s here; README gives a 300-step run that does)."""
    data = shared_dir / "data" / "cifar10" / "cifar-10-batches-py"
    if not (data / "data_batch_1").is_file():
        pytest.skip(f"lossless CIFAR-10 absent: {data}")
    from resnetlab.train import train_recipe

    short = ["model=cifar_preact_resnet", 'model_kwargs={"depth": 11, "bottleneck": true}', "iterations=4",
             "milestones=[2]", "batch_size=16", "train_subset=64", "val=none", "eval_every=0", "log_every=2",
             "device=cpu"]
    result = train_recipe("paper_cifar_preact", short, data=f"cifar10={data}", out_dir=tmp_path / "run", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["lr"] for line in lines if "lr" in line] == [0.01, 0.01]  # steps 2 and 4: still warming up
    assert result.step == 4 and result.weights.is_file()
