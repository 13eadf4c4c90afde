"""ResNeXt (Xie et al. 2017), ImageNet Wide ResNets (Zagoruyko & Komodakis 2016) and ResNet-B/C/D
(He et al. 2019): the papers' sizes, torchvision's and timm's keys and outputs, the 2015 nets untouched.

The papers' and torchvision's numbers are written here, not computed with resnetlab's counters.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from resnetlab import ConfigError, complexity, create_model, model_info
from resnetlab.models.layers import make_shortcut
from resnetlab.models.resnet import resnet

# torchvision's published num_params and GFLOPS (multiply-adds at 224x224) of its weights for these nets
TORCHVISION = {
    "resnext50_32x4d": (25_028_904, 4.230),
    "resnext101_32x8d": (88_791_336, 16.414),
    "resnext101_64x4d": (83_455_272, 15.460),
    "wide_resnet50_2": (68_883_240, 11.398),
    "wide_resnet101_2": (126_886_696, 22.753),
}
# timm's ResNet-D parameter counts (timm 1.0, 1000 classes)
TIMM_D_PARAMS = {"resnet18d": 11_708_744, "resnet34d": 21_816_904, "resnet50d": 25_576_264,
                 "resnet101d": 44_568_392, "resnet152d": 60_212_040}


pytestmark = pytest.mark.usefixtures("one_thread")


def layout(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def conv_fc_weights(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters())


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_layout_and_counts(name, meta_model):
    """Keys, order and shapes are torchvision's (its checkpoints load strictly); counts are its published ones."""
    with torch.device("meta"):
        theirs = getattr(torchvision.models, name)(weights=None)
    ours = meta_model(name)
    assert layout(ours) == layout(theirs)
    counts = complexity(ours)
    assert counts["params"] == TORCHVISION[name][0]
    assert round(counts["macs"] / 1e9, 3) == TORCHVISION[name][1]


def _randomized_bn(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # BN away from its initial identity, so that a misplaced BN shows
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["resnext50_32x4d", "wide_resnet50_2"])
def test_torchvision_checkpoint_gives_the_same_outputs(name, meta_model):
    theirs = _randomized_bn(getattr(torchvision.models, name)(weights=None))
    ours = meta_model(name).eval()  # built without memory; the state dict brings the tensors
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_resnext_table1(meta_model):
    """Xie et al. 2017, Table 1: ResNet-50 25.5 M parameters and 4.1 G FLOPs (multiply-adds), ResNeXt-50
    (32x4d) 25.0 M and 4.2 G, counting conv and fc weights; both stride on the 3x3 conv (section 4)."""
    resnet50 = meta_model("resnet50", variant="v1.5")
    resnext50 = meta_model("resnext50_32x4d")
    assert round(conv_fc_weights(resnet50) / 1e6, 1) == 25.5
    assert round(conv_fc_weights(resnext50) / 1e6, 1) == 25.0
    assert round(complexity(resnet50)["macs"] / 1e9, 1) == 4.1
    assert round(complexity(resnext50)["macs"] / 1e9, 1) == 4.2
    block = resnext50.layer1[0]  # conv2_x: [1x1, 128; 3x3, 128, C=32; 1x1, 256]
    assert (block.conv1.out_channels, block.conv2.groups, block.conv2.in_channels // block.conv2.groups) == (128, 32, 4)
    assert block.conv3.out_channels == 256 and block.conv2.stride == (1, 1)
    assert meta_model("resnext50_32x4d").layer2[0].conv2.stride == (2, 2)
    assert model_info("resnext101_64x4d").family == "resnext"


def test_wide_resnet50_2_paper_size(meta_model):
    """Zagoruyko & Komodakis 2016 (ImageNet): WRN-50-2-bottleneck, 68.9 M parameters; inner convs twice
    ResNet-50's width."""
    model = meta_model("wide_resnet50_2")
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 68.9
    block = model.layer1[0]
    assert (block.conv1.out_channels, block.conv2.out_channels, block.conv3.out_channels) == (128, 128, 256)


@pytest.mark.parametrize("name", sorted(TIMM_D_PARAMS))
def test_resnet_d_has_timms_keys(name, meta_model):
    """resnet*d: ResNet-B's stride on the 3x3, ResNet-C's deep stem, ResNet-D's average-pool shortcuts."""
    ours = meta_model(name)
    assert sum(p.numel() for p in ours.parameters()) == TIMM_D_PARAMS[name]
    timm = pytest.importorskip("timm", reason="timm (the dev extra) is the reference here")
    with torch.device("meta"):
        theirs = timm.create_model(name, pretrained=False)
    assert layout(ours) == layout(theirs)


@pytest.mark.parametrize("name", ["resnet18d", "resnet50d"])
def test_resnet_d_gives_timms_outputs(name, meta_model):
    timm = pytest.importorskip("timm", reason="timm (the dev extra) is the reference here")
    theirs = _randomized_bn(timm.create_model(name, pretrained=False))
    ours = meta_model(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, 65, 65)  # odd sizes: the average pool's ceil mode and uncounted padding
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_bag_of_tricks_table5(meta_model):
    """He et al. 2019, Table 5: ResNet-50-B, -C and -D all "25 M" parameters (25.56 M and 25.58 M: whole
    millions, cut), 4.1, 4.3 and 4.3 G FLOPs (multiply-adds)."""
    b = meta_model("resnet50", variant="v1.5")
    c = meta_model("resnet50", variant="v1.5", stem="deep")
    d = meta_model("resnet50d")
    for model, gflops in ((b, 4.1), (c, 4.3), (d, 4.3)):
        counts = complexity(model)
        assert counts["params"] // 10**6 == 25 and round(counts["macs"] / 1e9, 1) == gflops
    assert [m.__class__.__name__ for m in d.conv1] == ["Conv2d", "BatchNorm2d", "ReLU"] * 2 + ["Conv2d"]
    assert [m.out_channels for m in d.conv1 if isinstance(m, nn.Conv2d)] == [32, 32, 64]
    pool, conv, _ = d.layer2[0].downsample
    assert isinstance(pool, nn.AvgPool2d) and (pool.kernel_size, pool.stride) == (2, 2) and conv.stride == (1, 1)
    assert isinstance(d.layer1[0].downsample[0], nn.Identity)  # conv2_x keeps the resolution
    features = create_model("resnet50d", features_only=True, out_indices=(0, 1, 2, 3, 4), widths=[8, 16, 32, 64])
    assert features.feature_info.module_name() == ["conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x"]
    assert features.feature_info.reduction() == [2, 4, 8, 16, 32]


def test_the_2015_nets_are_unchanged_by_the_switches(meta_model):
    """No switch is on by default: the 7x7 stem, strided 1x1 projections with BN, ungrouped 3x3 convs."""
    model = meta_model("resnet50")
    assert isinstance(model.conv1, nn.Conv2d) and model.conv1.kernel_size == (7, 7)
    assert [type(m) for m in model.layer2[0].downsample] == [nn.Conv2d, nn.BatchNorm2d]
    assert model.layer2[0].downsample[0].stride == (2, 2) and model.layer2[0].conv1.stride == (2, 2)
    assert model.layer1[0].conv2.groups == 1 and model.layer1[0].conv2.out_channels == 64
    assert complexity(model)["params"] == 25_557_032


def test_refusals():
    with pytest.raises(ConfigError, match="basic blocks"):
        resnet(18, groups=32, width_per_group=4)
    with pytest.raises(ConfigError, match="applies to projection shortcuts"):
        make_shortcut("A", 16, 32, 2, avg_down=True)
    with pytest.raises(ConfigError, match="stem='cifar'"):
        resnet(50, stem="cifar")
    with pytest.raises(ConfigError, match="fixed by the name"):
        create_model("resnet50d", variant="v1")
    with pytest.raises(ConfigError, match="groups must be a positive integer"):
        resnet(50, groups=0)
    with pytest.raises(ConfigError, match="no channel per group"):
        create_model("resnet50", groups=32, width_per_group=4, widths=[8, 16, 32, 64])
