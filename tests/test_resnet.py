"""ResNet family (paper Table 1, section 4.2): architecture, counts, torchvision equivalence."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import resnetlab
from resnetlab import ConfigError, UnknownModelError, complexity, create_model, list_models
from resnetlab.models.cifar_resnet import cifar_resnet
from resnetlab.models.layers import ZeroPadShortcut
from resnetlab.models.resnet import BasicBlock, Bottleneck
from resnetlab.paper import CIFAR10_TABLE6, TABLE1_GMACS

RESNET_FAMILIES = ("resnet", "plain", "cifar_resnet", "cifar_plain")


# Deeper stacks of the same blocks are covered by their counts and the torchvision-equivalence
# forward: cifar_resnet1202 is cifar_resnet110 with more blocks, 101/152 are 50 with more.
_SAME_BLOCKS_AS_SHALLOWER = {"cifar_resnet1202", "resnet101", "resnet152", "plain101", "plain152"}


def _family_models() -> list[str]:
    return [
        n for n in list_models()
        if resnetlab.model_info(n).family in RESNET_FAMILIES and n not in _SAME_BLOCKS_AS_SHALLOWER
    ]


def test_contract_names_registered() -> None:
    names = set(list_models())
    for d in (18, 34, 50, 101, 152):
        assert f"resnet{d}" in names and f"plain{d}" in names
    for d in (20, 32, 44, 56, 110, 1202):
        assert f"cifar_resnet{d}" in names
    for d in (20, 32, 44, 56, 110):
        assert f"cifar_plain{d}" in names


@pytest.mark.parametrize("name", _family_models())
def test_forward_backward_tiny(name: str) -> None:
    info = resnetlab.model_info(name)
    model = create_model(name, num_classes=7)
    side = 16 if info.input_size[1] == 32 else 32  # the smallest input every stage still sees
    x = torch.randn(2, 3, side, side)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    feats = model.forward_features(x)
    assert feats.dim() == 4 and feats.shape[1] == model.num_features
    torch.testing.assert_close(model.forward_head(feats), out)


# Multiply-adds at 224x224 in GMACs (conv + linear), to 3 decimals.
V1_GMACS = {18: 1.814, 34: 3.664, 50: 3.858, 101: 7.570, 152: 11.282}
V15_GMACS = {50: 4.089, 101: 7.801, 152: 11.514}


@pytest.mark.parametrize("depth", sorted(V1_GMACS))
def test_imagenet_macs_match_table1(depth: int) -> None:
    macs = complexity(create_model(f"resnet{depth}"))["macs"]
    assert round(macs / 1e9, 3) == V1_GMACS[depth]
    assert abs(macs / 1e9 - TABLE1_GMACS[f"resnet{depth}"]) < 0.07  # the paper gives one decimal
    if depth in V15_GMACS:
        macs15 = complexity(create_model(f"resnet{depth}", variant="v1.5"))["macs"]
        assert round(macs15 / 1e9, 3) == V15_GMACS[depth]


def test_resnet50_params_both_variants() -> None:
    for variant in ("v1", "v1.5"):
        assert complexity(create_model("resnet50", variant=variant))["params"] == 25_557_032


CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}


@pytest.mark.parametrize("depth", sorted(CIFAR_PARAMS))
def test_cifar_params_option_a_and_plain(depth: int) -> None:
    res = complexity(create_model(f"cifar_resnet{depth}"), (3, 32, 32))["params"]
    plain = complexity(create_model(f"cifar_plain{depth}"), (3, 32, 32))["params"]
    assert res == plain == CIFAR_PARAMS[depth]
    assert res / 1e6 == pytest.approx(CIFAR10_TABLE6[depth][0], rel=0.02)  # the paper gives 2 digits


def test_cifar_1202_params() -> None:
    params = sum(p.numel() for p in create_model("cifar_resnet1202").parameters())
    assert round(params / 1e6, 1) == 19.4


def test_shortcut_options_param_order_and_torchvision() -> None:
    counts = {s: sum(p.numel() for p in create_model("resnet34", shortcut=s).parameters()) for s in "ABC"}
    assert counts["A"] < counts["B"] < counts["C"]
    assert counts["B"] == sum(p.numel() for p in torchvision.models.resnet34().parameters())
    assert counts["A"] == sum(p.numel() for p in create_model("plain34").parameters())


def test_bottleneck_vs_basic_parameter_example() -> None:
    # PAPER.md: a 256-d bottleneck block has 69,632 conv weights, two 3x3x256x256 convs 1,179,648 (16.9x).
    def conv_params(block: nn.Module) -> int:
        return sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))

    bottleneck = conv_params(Bottleneck(256, 64))
    basic = conv_params(BasicBlock(256, 256))
    assert (bottleneck, basic) == (69_632, 1_179_648)
    assert round(basic / bottleneck, 1) == 16.9


def test_variant_moves_the_stride() -> None:
    v1 = create_model("resnet50")
    v15 = create_model("resnet50", variant="v1.5")
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    v15.load_state_dict(v1.state_dict())  # same keys and shapes, different network
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(v1.eval()(x), v15.eval()(x))


def test_option_a_zero_pads_and_subsamples() -> None:
    shortcut = ZeroPadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_shortcut_modules_per_option() -> None:
    def projections(model: nn.Module) -> int:
        return sum(1 for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck)) and isinstance(m.downsample, nn.Sequential))

    assert projections(create_model("resnet34", shortcut="B")) == 3  # where dimensions increase
    assert projections(create_model("resnet34", shortcut="C")) == 16  # every block
    assert projections(create_model("resnet34", shortcut="A")) == 0
    assert projections(create_model("resnet50")) == 4  # conv2_x's first block widens 64 -> 256
    plain = create_model("plain18")
    assert all(not m.residual and m.downsample is None for m in plain.modules() if isinstance(m, BasicBlock))


def test_plain_block_adds_nothing() -> None:
    block = BasicBlock(8, 8, shortcut=None).eval()
    x = torch.randn(1, 8, 4, 4)
    branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(block(x), torch.relu(branch))
    res = BasicBlock(8, 8, shortcut="B").eval()
    res.load_state_dict(block.state_dict())
    torch.testing.assert_close(res(x), torch.relu(branch + x))


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_torchvision_equivalence(depth: int) -> None:
    torch.manual_seed(depth)
    ref = getattr(torchvision.models, f"resnet{depth}")().eval()
    for m in ref.modules():  # non-trivial BN statistics, so the test sees them
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    ours = create_model(f"resnet{depth}", variant="v1.5").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-4


def test_he_init_and_zero_init_residual() -> None:
    model = create_model("resnet50")
    w = model.layer3[0].conv2.weight  # 3x3x256 -> fan_in 2304
    assert w.std().item() == pytest.approx((2 / 2304) ** 0.5, rel=0.05)
    assert all(m.bn3.weight.abs().sum() > 0 for m in model.layer1)
    zero = create_model("resnet50", zero_init_residual=True)
    assert all(m.bn3.weight.abs().sum() == 0 for m in zero.layer1)


def test_channels_last_same_outputs() -> None:
    for name, side in (("resnet18", 64), ("cifar_resnet20", 32)):
        model = create_model(name).eval()
        x = torch.randn(2, 3, side, side)
        with torch.no_grad():
            ref = model(x)
            out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)  # logits of magnitude ~40


def test_compiles_without_graph_breaks() -> None:
    # fullgraph=True fails on any graph break; aot_eager traces forward and backward
    # without the C++ build, which keeps this check fast on CPU.
    model = cifar_resnet(8)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    out = compiled(x)
    torch.testing.assert_close(out, model(x))
    out.sum().backward()


@pytest.mark.parametrize("depth", [8, 14, 26])
def test_cifar_any_6n_plus_2(depth: int) -> None:
    model = cifar_resnet(depth)
    convs = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    assert convs + 1 == depth  # 6n+2 weighted layers: the convs and the fc


def test_cifar100_and_options() -> None:
    model = create_model("cifar_resnet20", num_classes=100, shortcut="B")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    assert model.resnetlab_kwargs == {"num_classes": 100, "shortcut": "B"}


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: create_model("resnet51"), UnknownModelError),
        (lambda: cifar_resnet(21), ConfigError),
        (lambda: cifar_resnet(2), ConfigError),
        (lambda: create_model("resnet50", shortcut="D"), ConfigError),
        (lambda: create_model("resnet50", variant="v2"), ConfigError),
        (lambda: create_model("resnet50", widht=3), ConfigError),
        (lambda: create_model("cifar_resnet20", depth=56), ConfigError),
        (lambda: create_model("plain18", shortcut="B"), ConfigError),
        (lambda: create_model("resnet18", num_classes=0), ConfigError),
    ],
)
def test_bad_arguments_raise_typed_errors(call, error) -> None:
    with pytest.raises(error) as info:
        call()
    assert str(info.value) and "\n" not in str(info.value)


def test_generic_builders_by_name() -> None:
    assert "cifar_resnet" not in list_models() and "cifar_resnet" in list_models(include_generic=True)
    model = create_model("cifar_resnet", depth=8)
    assert model.resnetlab_kwargs == {"depth": 8, "num_classes": 10}
    with pytest.raises(ConfigError, match="depth=..."):
        create_model("cifar_resnet")
    assert create_model("cifar_plain", depth=14, num_classes=100).fc.out_features == 100
