"""AlexNet, VGG and DenseNet: names, exact sizes, forward/backward, torchvision equivalence, options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnetlab import ConfigError, complexity, create_model, list_models, model_info
from resnetlab.models.alexnet import LRN
from resnetlab.models.densenet import cifar_densenet, densenet
from resnetlab.models.vgg import VGG, VGG_STAGES, vgg
from resnetlab.paper import DENSENET_CIFAR10_PLUS, TABLE1_GMACS, VGG_PARAMS_M

# Exact parameter counts at the default num_classes. torchvision's for VGG and DenseNet-121/169/201;
# AlexNet's from the paper's layer sizes; the CIFAR DenseNets round to Huang et al. Table 2.
PARAMS = {
    "alexnet": 60_965_224,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "densenet264": 33_337_704,
    "densenet40_k12": 1_019_722,
    "densenet_bc_100_k12": 769_162,
    "densenet_bc_250_k24": 15_324_406,
    "densenet_bc_190_k40": 25_624_430,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These nets run hundreds of tiny ops; on a shared 2-core machine a second OpenMP thread
    # mostly waits for the first (30x slower measured under load), so run them on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def meta_model(name: str, **kwargs) -> nn.Module:
    """Build without allocating or initialising memory: enough for counts and shapes."""
    with torch.device("meta"):
        return create_model(name, **kwargs)


def test_names_and_families():
    assert set(list_models("alexnet") + list_models("vgg*") + list_models("densenet*")) == set(PARAMS)
    for name in PARAMS:
        info = model_info(name)
        assert info.family == ("alexnet" if name == "alexnet" else "vgg" if name.startswith("vgg") else "densenet")
        assert info.input_size == ((3, 32, 32) if name in DENSENET_CIFAR10_PLUS else (3, 224, 224))
        assert info.num_classes == (10 if name in DENSENET_CIFAR10_PLUS else 1000)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count(name):
    assert sum(p.numel() for p in meta_model(name).parameters()) == PARAMS[name]


def test_alexnet_one_tower_param_count():
    assert sum(p.numel() for p in meta_model("alexnet", groups=1).parameters()) == 62_378_344


@pytest.mark.parametrize("name", sorted(VGG_PARAMS_M))
def test_vgg_params_round_to_paper(name):
    assert round(PARAMS[name] / 1e6) == VGG_PARAMS_M[name]


@pytest.mark.parametrize("name, gmacs", [("vgg16", 15.5), ("vgg19", 19.6)])
def test_vgg_macs(name, gmacs):
    macs = complexity(meta_model(name), (3, 224, 224))["macs"]
    assert round(macs / 1e9, 1) == gmacs
    # He et al. Table 1 quotes 15.3e9 for VGG-16 (conv+fc multiply-adds are 15.47e9) and 19.6e9 for VGG-19.
    assert abs(macs / 1e9 - TABLE1_GMACS[name]) / TABLE1_GMACS[name] < 0.015


@pytest.mark.parametrize("name", sorted(DENSENET_CIFAR10_PLUS))
def test_cifar_densenet_params_round_to_paper(name):
    assert round(PARAMS[name] / 1e6, 1) == DENSENET_CIFAR10_PLUS[name][0]


# (name, input side, kwargs): every CIFAR net, two ImageNet DenseNets, AlexNet at 224. VGG's
# forward is checked against torchvision below, and its backward on a narrow twin here.
FORWARD_CASES = [
    ("densenet40_k12", 32, {}),
    ("densenet_bc_100_k12", 32, {}),
    ("densenet_bc_250_k24", 8, {}),
    ("densenet_bc_190_k40", 8, {}),
    ("densenet121", 32, {}),
    ("densenet264", 32, {"num_classes": 7}),
    ("alexnet", 224, {"num_classes": 7}),
]


def check_forward_backward(model: nn.Module, side: int, num_classes: int) -> None:
    """Train-mode forward/backward reaches every parameter; the interface pieces agree in eval mode."""
    x = torch.randn(2, 3, side, side)
    out = model(x)
    assert out.shape == (2, num_classes) and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.dim() == 4
        torch.testing.assert_close(model.forward_head(features), model(x))
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    assert model.get_classifier().out_features == num_classes


@pytest.mark.parametrize("name, side, kwargs", FORWARD_CASES)
def test_forward_backward(name, side, kwargs):
    torch.manual_seed(0)
    check_forward_backward(create_model(name, **kwargs), side, kwargs.get("num_classes", model_info(name).num_classes))


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_vgg_forward_backward_narrow(batch_norm):
    torch.manual_seed(0)
    model = VGG(VGG_STAGES[11], widths=(8, 8, 16, 16, 16), num_classes=5, batch_norm=batch_norm)
    check_forward_backward(model, 32, 5)


@pytest.mark.parametrize("name, side", [("vgg16", 32), ("vgg16_bn", 32), ("densenet121", 64)])
def test_torchvision_equivalence(name, side):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    for m in reference.modules():  # non-trivial BN statistics, so that eval mode tests them
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    ours = meta_model(name)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)  # strict: same keys and shapes
    ours.eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-6)


def test_lrn_is_the_papers_formula():
    # Section 3.3: b_i = a_i / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta
    lrn = meta_model("alexnet").norm1  # no parameters: runs on CPU tensors as built
    torch.manual_seed(0)
    a = torch.randn(2, 9, 3, 3) * 40  # large enough for the alpha term to matter
    n, half = LRN["size"], LRN["size"] // 2
    expected = torch.empty_like(a)
    for i in range(a.shape[1]):
        lo, hi = max(0, i - half), min(a.shape[1] - 1, i + half)
        s = a[:, lo : hi + 1].square().sum(1)
        expected[:, i] = a[:, i] / (LRN["k"] + LRN["alpha"] * s) ** LRN["beta"]
    torch.testing.assert_close(lrn(a), expected)
    # PyTorch's own reading of alpha (divided by the size) is a different function.
    plain = nn.LocalResponseNorm(n, alpha=LRN["alpha"], beta=LRN["beta"], k=LRN["k"])
    assert not torch.allclose(plain(a), expected, rtol=1e-3)


@pytest.fixture(scope="module")
def alexnet_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("alexnet")


def test_alexnet_init_is_the_papers(alexnet_model):
    # Section 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7; 0 elsewhere.
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        layer = getattr(alexnet_model, name)
        assert abs(layer.weight.std().item() - 0.01) < 0.0005, name
        assert abs(layer.weight.mean().item()) < 0.0005, name
        bias = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.all(layer.bias == bias), name


def test_alexnet_layout(alexnet_model):
    x = torch.zeros(1, 3, 224, 224)
    assert alexnet_model.conv1(x).shape == (1, 96, 55, 55)  # 224 with padding 2 gives the paper's 55x55
    with torch.no_grad():
        assert alexnet_model.forward_features(x).shape == (1, 256, 6, 6)
    assert alexnet_model.conv2.groups == alexnet_model.conv4.groups == alexnet_model.conv5.groups == 2
    assert alexnet_model.conv3.groups == 1  # conv3 sees both towers (section 3.5)
    assert alexnet_model.drop6.p == alexnet_model.drop7.p == 0.5


def _tiny_densenet(**kwargs) -> nn.Module:
    return cifar_densenet(depth=16, growth_rate=4, **kwargs)


@pytest.mark.parametrize("bc", [True, False], ids=["bc", "plain"])
def test_memory_efficient_matches_normal_path(bc):
    depth = 16 if bc else 13  # two layers per block
    torch.manual_seed(0)
    normal = cifar_densenet(depth=depth, growth_rate=4, bc=bc)
    efficient = cifar_densenet(depth=depth, growth_rate=4, bc=bc, memory_efficient=True)
    efficient.load_state_dict(normal.state_dict())
    calls = {"normal": 0, "efficient": 0}
    for key, model in (("normal", normal), ("efficient", efficient)):
        first = model.features.denseblock1.denselayer1.norm1
        first.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
    x = torch.randn(4, 3, 16, 16)
    inputs = {k: x.clone().requires_grad_() for k in calls}
    outputs = {}
    for key, model in (("normal", normal), ("efficient", efficient)):
        outputs[key] = model(inputs[key])
        outputs[key].square().sum().backward()
    assert calls == {"normal": 1, "efficient": 2}  # the efficient path recomputes in backward
    torch.testing.assert_close(outputs["efficient"], outputs["normal"])
    torch.testing.assert_close(inputs["efficient"].grad, inputs["normal"].grad)
    for (name, p), q in zip(normal.named_parameters(), efficient.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    # BN running statistics are updated once per step, as without recomputation.
    for (name, b), c in zip(normal.named_buffers(), efficient.buffers()):
        torch.testing.assert_close(c, b, msg=name)


def test_densenet_drop_rate():
    torch.manual_seed(0)
    model = _tiny_densenet(bc=True, drop_rate=0.2)
    x = torch.randn(2, 3, 8, 8)
    assert not torch.allclose(model(x), model(x))  # dropout active in training
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    # without drop_rate training mode is deterministic (batch statistics only)
    model = _tiny_densenet(bc=True).train()
    torch.testing.assert_close(model(x), model(x))


def test_densenet_channels_last():
    torch.manual_seed(0)
    model = _tiny_densenet(bc=True).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected)


def test_cifar_densenet_depths():
    assert len(meta_model("densenet40_k12").features.denseblock1) == 12
    assert len(meta_model("densenet_bc_100_k12").features.denseblock3) == 16
    assert len(meta_model("densenet_bc_250_k24").features.denseblock2) == 41
    assert len(meta_model("densenet_bc_190_k40").features.denseblock1) == 31


@pytest.mark.parametrize(
    "build",
    [
        lambda: create_model("alexnet", groups=3),
        lambda: create_model("alexnet", dropout=1.0),
        lambda: create_model("alexnet", group=2),
        lambda: create_model("vgg16", batch_norm=True),
        lambda: create_model("vgg16", dropout=-0.1),
        lambda: vgg(depth=12),
        lambda: densenet(depth=100),
        lambda: create_model("densenet121", growth_rate=12),
        lambda: create_model("densenet_bc_100_k12", depth=101),
        lambda: create_model("densenet40_k12", drop_rate=1.5),
        lambda: cifar_densenet(depth=41, growth_rate=12, bc=False),
        lambda: cifar_densenet(depth=42, growth_rate=12, bc=True),
        lambda: cifar_densenet(depth=4, growth_rate=12, bc=False),
        lambda: cifar_densenet(depth=40.0, growth_rate=12, bc=False),
        lambda: cifar_densenet(depth=40, growth_rate=0, bc=False),
    ],
)
def test_bad_arguments_are_config_errors(build):
    with torch.device("meta"), pytest.raises(ConfigError):
        build()
