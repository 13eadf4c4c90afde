"""optimize() and BN folding: exactness on small models (CPU, tiny inputs, no timing)."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from torch import nn

from resnetlab import ConfigError, create_model
from resnetlab.inference import fold_batchnorm, optimize, output_difference


def _trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters, as training would."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return _trained_like(create_model("cifar_resnet20"))


def test_fold_batchnorm_is_exact_and_leaves_the_original(resnet20: nn.Module) -> None:
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = resnet20(x)
        folded = fold_batchnorm(resnet20)
        out = folded(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in resnet20.modules())  # original untouched
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(resnet20(x), ref, rtol=0, atol=0)


def test_fold_batchnorm_option_b_projection_and_conv_bias() -> None:
    # resnet18 has option-B projection shortcuts (downsample.0 conv + downsample.1 BN).
    torch.manual_seed(1)
    model = _trained_like(create_model("resnet18", num_classes=7))
    x = torch.randn(2, 3, 64, 64)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    # A conv with its own bias, and a BN after a ReLU that must stay unfolded.
    net = _trained_like(nn.Sequential(nn.Conv2d(3, 5, 3, bias=True), nn.BatchNorm2d(5), nn.ReLU(), nn.BatchNorm2d(5)))
    folded = fold_batchnorm(net)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 1
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)


def test_optimize_fp32_same_outputs(resnet20: nn.Module) -> None:
    example = torch.randn(4, 3, 32, 32)
    fast = optimize(resnet20, example)
    assert fast.report["steps"] == ["fold batchnorm", "channels_last"]
    assert fast.report["same_top1"] and fast.report["max_rel_diff"] < 1e-4
    x = torch.randn(3, 3, 32, 32)  # another batch size than the example
    with torch.no_grad():
        diff = output_difference(fast(x), resnet20(x))
    assert diff["max_rel_diff"] < 1e-2 and diff["same_top1"]
    plain = optimize(resnet20, example, channels_last=False, fold_bn=False)
    assert plain.report["steps"] == [] and plain.report["max_rel_diff"] == 0.0


def test_optimize_rejects_bad_arguments(resnet20: nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ConfigError, match="quantize"):
        optimize(resnet20, x, quantize="int4")
    with pytest.raises(ConfigError, match="runtime"):
        optimize(resnet20, x, runtime="tensorrt")
    with pytest.raises(ConfigError, match="example"):
        optimize(resnet20, torch.zeros(3, 32, 32))
    with pytest.raises(ConfigError, match="calibration"):
        optimize(resnet20, x, quantize="int8")


class _SlicedHead(nn.Module):
    """Like VGG's forward_head: calls a slice of a Sequential, a module built in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head[-1](self.head[:-1](self.features(x)))


def test_fold_batchnorm_traces_through_modules_built_in_forward() -> None:
    net = _trained_like(_SlicedHead())
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)


class _Untraceable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x  # data-dependent Python branch


def test_fold_batchnorm_untraceable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="torch.fx"):
        fold_batchnorm(_Untraceable())


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                    reason="onnxruntime not installed (pip install 'resnetlab[onnx]')")
def test_int8_onnxruntime_reports_accuracy_change() -> None:
    torch.manual_seed(3)
    net = _trained_like(nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)))
    g = torch.Generator().manual_seed(2)
    calibration = torch.randn(32, 3, 16, 16, generator=g)
    x_val = torch.randn(48, 3, 16, 16, generator=g)
    with torch.no_grad():
        y_val = net(x_val).argmax(1)  # labels the fp32 model gets all right
    fast = optimize(net, calibration[:4], quantize="int8", calibration=calibration,
                    validation=[(x_val[:24], y_val[:24]), (x_val[24:], y_val[24:])])
    acc = fast.report["accuracy"]
    assert fast.report["runtime"] == "onnxruntime" and fast.report["calibration_images"] == 32
    assert acc["n"] == acc["n_labelled"] == 48 and acc["top1_acc_fp32"] == 1.0
    assert acc["top1_delta"] == pytest.approx(acc["top1_acc"] - 1.0) and acc["top1_agreement"] == acc["top1_acc"]
    assert acc["top1_agreement"] > 0.7  # int8 is close to, not equal to, fp32
    out = fast(x_val[:5])  # another batch size than the example
    assert out.shape == (5, 10) and out.dtype == torch.float32
    assert fast.report["max_rel_diff"] < 0.2


@pytest.mark.skipif(not os.environ.get("RESNETLAB_TEST_COMPILE"),
                    reason="torch.compile on CPU takes minutes on 2 shared cores; set RESNETLAB_TEST_COMPILE=1")
def test_optimize_compile_same_outputs(resnet20: nn.Module) -> None:
    example = torch.randn(2, 3, 32, 32)
    fast = optimize(resnet20, example, compile=True)
    assert fast.report["steps"][-1].startswith("torch.compile")
    assert fast.report["same_top1"] and fast.report["max_rel_diff"] < 1e-2


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                    reason="onnxruntime not installed (pip install 'resnetlab[onnx]')")
def test_auto_runtime_times_both_and_keeps_the_fastest(resnet20: nn.Module) -> None:
    example = torch.randn(4, 3, 32, 32)
    fast = optimize(resnet20, example, runtime="auto")
    timings = fast.report["candidates_img_s"]
    assert set(timings) == {"torch", "onnxruntime"} and all(v > 0 for v in timings.values())
    assert fast.report["runtime"] == max(timings, key=timings.__getitem__)
    assert fast.report["same_top1"] and fast.report["max_rel_diff"] < 1e-4
    with torch.no_grad():
        torch.testing.assert_close(fast(example), resnet20.eval()(example), rtol=1e-4, atol=1e-4)
