"""Importers: akamaster (real files), torchvision, timm; and hostile or broken checkpoints."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from conftest import shared_folder
from resnetlab import create_model
from resnetlab.cli import main
from resnetlab.errors import ConfigError, WeightsError
from resnetlab.importers import import_weights, read_state_dict, torchvision_target
from resnetlab.pickles import Inert, load_pickle
from resnetlab.weights import load_weights

# The published test accuracy of each checkpoint (pytorch_resnet_cifar10's README: 91.73 % and 93.39 %),
# as correct images of the 10,000 of the lossless CIFAR-10 test batch; and, for the run without
# RESNETLAB_FULL_CHECKS, ResNet-56's count on every 10th test image, taken from the same evaluation
# that gave the full published count (9,339).
PUBLISHED_CORRECT = {"resnet20-12fca82f.th": 9_173, "resnet56-4bfd9763.th": 9_339}
SUBSET_STEP = 10
SUBSET_CORRECT = {"resnet56-4bfd9763.th": 933}


def _akamaster_style(model: torch.nn.Module, path: Path) -> None:
    """Save ``model`` the way pytorch_resnet_cifar10 does: DataParallel keys, ``linear``, a dict."""
    state = {"module." + k.replace("fc.", "linear."): v for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state, "best_prec1": 91.0}, path)


def test_akamaster_layout_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("cifar_resnet32").eval()
    _akamaster_style(model, tmp_path / "r32.th")
    meta = import_weights("akamaster", tmp_path / "r32.th", tmp_path / "r32.safetensors")
    assert meta.model == "cifar_resnet32" and meta.classes[0] == "airplane" and meta.source.startswith("akamaster")
    assert meta.mean == pytest.approx([0.485, 0.456, 0.406])
    loaded, _ = load_weights(tmp_path / "r32.safetensors")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))


def test_wrong_depth_refused_and_class_count_kept(tmp_path):
    _akamaster_style(create_model("cifar_resnet20", num_classes=100), tmp_path / "c100.th")
    with pytest.raises(WeightsError, match=r"missing: layer1.3.conv1.weight"):
        import_weights("akamaster", tmp_path / "c100.th", tmp_path / "o.safetensors", model="cifar_resnet32")
    assert not (tmp_path / "o.safetensors").exists()
    # --model picks the architecture; the class count is the checkpoint's (no CIFAR-10 names then).
    meta = import_weights("akamaster", tmp_path / "c100.th", tmp_path / "o.safetensors", model="cifar_resnet20")
    assert meta.kwargs["num_classes"] == 100 and meta.classes[:2] == ["0", "1"]
    with pytest.raises(WeightsError, match=r"fc.weight \(100, 64\) \(model wants \(10, 64\)\)"):
        load_weights(tmp_path / "o.safetensors", model=create_model("cifar_resnet20"))


@pytest.fixture(scope="module")
def cifar10_test_batch(shared_dir: Path) -> Path:
    """The lossless CIFAR-10 of ../shared (python batches), read in place."""
    return shared_folder(shared_dir, "data/cifar10/cifar-10-batches-py", "test_batch", "the lossless CIFAR-10")


@pytest.mark.parametrize("name", ["resnet20-12fca82f.th", "resnet56-4bfd9763.th"])
def test_akamaster_real_files(akamaster_dir, cifar10_test_batch, tmp_path, name):
    """The published checkpoints, imported, give their authors' published test accuracy."""
    from resnetlab.data import open_dataset
    from resnetlab.evaluate import evaluate

    meta = import_weights("akamaster", akamaster_dir / name, tmp_path / "w.safetensors")
    assert meta.model == name.split("-")[0].replace("resnet", "cifar_resnet")
    model, meta = load_weights(tmp_path / "w.safetensors")
    data = open_dataset(f"cifar10={cifar10_test_batch}", "test")
    # ResNet-20 on all 10,000 test images on every run (~10 s on 2 cores); ResNet-56 (~3x longer) on
    # every 10th unless RESNETLAB_FULL_CHECKS=1 asks for all of them.
    full = name.startswith("resnet20") or os.environ.get("RESNETLAB_FULL_CHECKS") == "1"
    if not full:
        data = data.subset(torch.arange(0, len(data), SUBSET_STEP))
    result = evaluate(model, data, protocol="full", mean=meta.mean, std=meta.std, batch_size=500, progress=False)
    assert result["correct"] == (PUBLISHED_CORRECT[name] if full else SUBSET_CORRECT[name])
    if full:
        assert result["n"] == 10_000


def _torchvision_file(tmp_path: Path, builder, **kw) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = builder(weights=None, **kw).eval()
    # Random BN statistics, so that a wrong mapping of running_mean/var shows in the outputs.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "tv.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("builder", [torchvision.models.resnet18])
def test_torchvision_resnet_same_outputs(tmp_path, builder):
    tv, path = _torchvision_file(tmp_path, builder, num_classes=10)
    meta = import_weights("torchvision", path, tmp_path / "o.safetensors")
    assert meta.model == builder.__name__ and meta.kwargs["variant"] == "v1.5"
    model, _ = load_weights(tmp_path / "o.safetensors")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), tv(x), rtol=1e-5, atol=1e-5)


def test_torchvision_densenet_same_outputs_and_old_keys(tmp_path):
    tv, path = _torchvision_file(tmp_path, torchvision.models.densenet121, num_classes=1000)
    # torchvision's published DenseNet files use the old "norm.1" keys.
    old = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in tv.state_dict().items()}
    torch.save(old, path)
    meta = import_weights("torchvision", path, tmp_path / "o.safetensors")
    assert meta.model == "densenet121" and meta.classes[0] == "tench" and len(meta.classes) == 1000
    model, _ = load_weights(tmp_path / "o.safetensors")
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model(x), tv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("builder,name", [(torchvision.models.vgg16_bn, "vgg16_bn"), (torchvision.models.vgg11, "vgg11")])
def test_torchvision_vgg_detected(builder, name):
    with torch.device("meta"):  # VGG's 138M parameters are not needed to test the key mapping
        state = builder(weights=None).state_dict()
    detected, kwargs, _ = torchvision_target(state, Path("vgg.pth"))
    assert (detected, kwargs) == (name, {"num_classes": 1000})
    with torch.device("meta"):
        ours = create_model(name).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in state.items()}


def test_torchvision_alexnet_refused_with_reason(tmp_path):
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11), "features.0.bias": torch.zeros(64),
                "classifier.6.weight": torch.zeros(1000, 4096)}, tmp_path / "alexnet.pth")
    with pytest.raises(WeightsError, match="64 filters instead of 96, no local response normalization"):
        import_weights("torchvision", tmp_path / "alexnet.pth", tmp_path / "o.safetensors")


def _transformers_folder(folder: Path, **config) -> torch.nn.Module:
    """A transformers ResNetForImageClassification with random BN statistics, saved as the hub's folder."""
    transformers = pytest.importorskip("transformers", reason="transformers is a test dependency ([dev])")
    torch.manual_seed(0)
    net = transformers.ResNetForImageClassification(transformers.ResNetConfig(**config)).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    net.save_pretrained(folder)
    return net


@pytest.mark.parametrize("config, model, variant", [
    ({}, "resnet50", "v1.5"),  # microsoft/resnet-50's settings
    ({"downsample_in_bottleneck": True}, "resnet50", "v1"),  # stride on the first 1x1: the paper's
    ({"layer_type": "basic", "hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2], "num_labels": 3,
      "id2label": {0: "cat", 1: "dog", 2: "fox"}}, "resnet18", "v1.5")])
def test_transformers_resnet_same_outputs(tmp_path, config, model, variant):
    """Hugging Face transformers' ResNets (microsoft/resnet-18 ... -152, their hub folders): the same
    logits, the stride where config.json puts it, classes from id2label."""
    net = _transformers_folder(tmp_path / "hub", **config)
    meta = import_weights("transformers", tmp_path / "hub", tmp_path / "o.safetensors")
    assert (meta.model, meta.kwargs["variant"]) == (model, variant)
    assert meta.classes == (["cat", "dog", "fox"] if "id2label" in config else ["0", "1"])  # not LABEL_0, LABEL_1
    ours, _ = load_weights(tmp_path / "o.safetensors")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), net(pixel_values=x).logits, rtol=1e-5, atol=1e-5)


def test_transformers_files_that_are_not_a_resnet_classifier_are_refused(tmp_path):
    net = _transformers_folder(tmp_path / "hub", layer_type="basic", hidden_sizes=[64, 128, 256, 512],
                               depths=[2, 2, 2, 2])
    torch.save(net.state_dict(), tmp_path / "pytorch_model.bin")  # the weights file alone: defaults assumed
    meta = import_weights("transformers", tmp_path / "pytorch_model.bin", tmp_path / "o.safetensors")
    assert meta.model == "resnet18" and "no config.json: transformers' defaults assumed" in meta.source
    torch.save(net.resnet.state_dict(), tmp_path / "backbone.bin")  # ResNetModel: no classifier
    with pytest.raises(WeightsError, match="a backbone without its classifier is not imported"):
        import_weights("transformers", tmp_path / "backbone.bin", tmp_path / "o.safetensors")
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    for change, why in (({"downsample_in_first_stage": True}, "a stride in conv2_x"),
                        ({"hidden_act": "gelu"}, "another activation than ReLU"),
                        ({"model_type": "convnext"}, "a transformers 'convnext' model, not a ResNet")):
        (tmp_path / "hub" / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(WeightsError, match=why):
            import_weights("transformers", tmp_path / "hub", tmp_path / "o.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="a folder without model.safetensors or pytorch_model.bin"):
        import_weights("transformers", tmp_path / "empty", tmp_path / "o.safetensors")


def test_timm_plain_resnet_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    tv, _ = _torchvision_file(tmp_path, torchvision.models.resnet18, num_classes=10)
    save_file(tv.state_dict(), str(tmp_path / "model.safetensors"))  # the Hugging Face hub layout
    meta = import_weights("timm", tmp_path / "model.safetensors", tmp_path / "o.safetensors")
    assert meta.model == "resnet18" and meta.kwargs["variant"] == "v1.5"


@pytest.mark.parametrize("name", ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2",
                                  "wide_resnet101_2", "resnet152"])
def test_torchvision_successors_detected_by_their_shapes(name):
    """Grouped and wider 3x3 convs are read from the shapes and the registered name chosen; before,
    a ResNeXt file was refused as a resnet50 of other widths."""
    with torch.device("meta"):
        state = getattr(torchvision.models, name)(weights=None).state_dict()
    assert torchvision_target(state, Path("tv.pth"))[:2] == (name, {"variant": "v1.5", "num_classes": 1000})


def test_torchvision_resnext_same_outputs(tmp_path):
    tv, path = _torchvision_file(tmp_path, torchvision.models.resnext50_32x4d, num_classes=10)
    meta = import_weights("torchvision", path, tmp_path / "o.safetensors")
    assert meta.model == "resnext50_32x4d"
    model, _ = load_weights(tmp_path / "o.safetensors")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), tv(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(WeightsError, match="do not fit resnet50: shape mismatch"):  # --model cannot drop groups
        import_weights("torchvision", path, tmp_path / "p.safetensors", model="resnet50")


TIMM_NAMES = {"resnet50d": ("resnet50d", {}), "resnet101d": ("resnet101d", {}),
              "resnet50c": ("resnet50", {"stem": "deep"}), "resnext50_32x4d": ("resnext50_32x4d", {}),
              "wide_resnet50_2": ("wide_resnet50_2", {}), "resnet34": ("resnet34", {})}


@pytest.mark.parametrize("timm_name", sorted(TIMM_NAMES))
def test_timm_successors_detected(tmp_path, timm_name, monkeypatch):
    timm = pytest.importorskip("timm", reason="timm (the dev extra) is the reference here")
    import resnetlab.importers as importers

    with torch.device("meta"):
        state = timm.create_model(timm_name, pretrained=False).state_dict()
    monkeypatch.setattr(importers, "read_state_dict", lambda path, prefix=None: state)
    monkeypatch.setattr(importers, "_load", lambda model, state, where: None)  # meta tensors: names only
    name, extra = TIMM_NAMES[timm_name]
    imported = importers.import_timm(tmp_path / "m.pth")
    kwargs = {k: v for k, v in imported.model.resnetlab_kwargs.items() if k != "variant"}  # fixed by resnet*d
    assert kwargs == {"num_classes": 1000, **extra} and imported.model.variant == "v1.5"
    assert importers._resnet_from_keys(state, tmp_path, "timm")[0] == name


def test_timm_resnet_d_same_outputs(tmp_path):
    timm = pytest.importorskip("timm", reason="timm (the dev extra) is the reference here")
    torch.manual_seed(0)
    theirs = timm.create_model("resnet18d", pretrained=False, num_classes=10).eval()
    for m in theirs.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(theirs.state_dict(), tmp_path / "d.pth")
    meta = import_weights("timm", tmp_path / "d.pth", tmp_path / "o.safetensors")
    assert meta.model == "resnet18d"
    model, _ = load_weights(tmp_path / "o.safetensors")
    x = torch.randn(2, 3, 65, 65)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("safe_serialization", [True, False])
def test_timm_hub_folder_gives_its_mean_std_and_labels(tmp_path, safe_serialization):
    """A timm hub folder (what push_to_hf_hub uploads and huggingface_hub downloads: config.json beside
    model.safetensors or pytorch_model.bin) imports with its pretrained_cfg mean/std and its
    label_names; its weights file alone, with the config beside it, the same."""
    timm = pytest.importorskip("timm", reason="timm (the dev extra) is the reference here")
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    theirs = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    theirs.pretrained_cfg = {**theirs.pretrained_cfg, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    save_for_hf(theirs, tmp_path / "hub", model_config={"label_names": ["cat", "dog", "eel"]},
                safe_serialization=safe_serialization)
    weights = tmp_path / "hub" / ("model.safetensors" if safe_serialization else "pytorch_model.bin")
    for source in (tmp_path / "hub", weights):
        meta = import_weights("timm", source, tmp_path / "o.safetensors")
        assert (meta.model, meta.mean, meta.std, meta.classes) == ("resnet18", [0.5] * 3, [0.25] * 3,
                                                                   ["cat", "dog", "eel"])
        assert meta.source.endswith("(timm resnet18)")
    model, _ = load_weights(tmp_path / "o.safetensors")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(x), rtol=1e-5, atol=1e-5)
    (tmp_path / "hub" / weights.name).unlink()
    with pytest.raises(WeightsError, match="a folder without model.safetensors or pytorch_model.bin"):
        import_weights("timm", tmp_path / "hub", tmp_path / "o.safetensors")


def test_timm_resnetv2_into_preact_same_outputs(tmp_path):
    """timm's pre-activation resnetv2_50 (its real weights: resnetv2_50.a1h_in1k) -> preact_resnet50 v1.5."""
    timm = pytest.importorskip("timm", reason="timm (the dev extra) is the reference here")
    torch.manual_seed(0)
    theirs = timm.create_model("resnetv2_50", pretrained=False, num_classes=10).eval()
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    save_file = pytest.importorskip("safetensors.torch").save_file
    save_file(theirs.state_dict(), str(tmp_path / "model.safetensors"))
    meta = import_weights("timm", tmp_path / "model.safetensors", tmp_path / "o.safetensors")
    assert meta.model == "preact_resnet50" and meta.kwargs["variant"] == "v1.5"
    model, _ = load_weights(tmp_path / "o.safetensors")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("timm_name,why", [("resnetv2_50d", "deep stem"), ("resnetv2_50x1_bit", "BiT: GroupNorm"),
                                           ("resnetv2_18", "first unit keeps a clean identity")])
def test_timm_resnetv2_variants_refused_by_name(tmp_path, monkeypatch, timm_name, why):
    timm = pytest.importorskip("timm", reason="timm (the dev extra) is the reference here")
    import resnetlab.importers as importers

    with torch.device("meta"):
        state = timm.create_model(timm_name, pretrained=False).state_dict()
    monkeypatch.setattr(importers, "read_state_dict", lambda path, prefix=None: state)
    with pytest.raises(WeightsError, match=why):
        importers.import_timm(tmp_path / "m.pth")


@pytest.mark.parametrize("keys,variant", [
    ({"conv1.0.weight": (64, 3), "conv1.3.weight": (64, 64), "conv1.6.weight": (128, 64)}, r"\(64, 64, 128\)"),
    ({"layer1.0.se.fc1.weight": (4, 4)}, "squeeze-excitation.*layer1.0.se.fc1.weight"),
    ({"layer1.0.conv2.aa.weight": (4, 4)}, "anti-aliased"),
])
def test_timm_other_variants_refused_by_name(tmp_path, keys, variant):
    state = {f"layer{i}.{b}.conv{c}.weight": torch.zeros(64 * 2 ** (i - 1), 4, 1, 1)
             for i, n in zip(range(1, 5), (2, 2, 2, 2)) for b in range(n) for c in (1, 2)}
    state.update({k: torch.zeros(*shape, 3, 3) for k, shape in keys.items()}, **{"fc.weight": torch.zeros(10, 512)})
    torch.save(state, tmp_path / "v.pth")
    with pytest.raises(WeightsError, match=variant):
        import_weights("timm", tmp_path / "v.pth", tmp_path / "o.safetensors")


class _Touch:
    """Payloads that would leave a marker file if unpickled without weights_only: a method
    (pickled as builtins.getattr), a shell command (os.system), Python source (exec)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _Shell(_Touch):
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec(_Touch):
    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("payload, named", [(_Touch, "builtins.getattr"), (_Shell, r"(posix|nt)\.system"),
                                            (_Exec, "builtins.exec")])
@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy format"])
def test_hostile_pickle_never_runs(tmp_path, payload, named, zipped):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": payload(marker)}, tmp_path / "evil.th",
               _use_new_zipfile_serialization=zipped)
    with pytest.raises(WeightsError, match=rf"evil.th: refused: the pickle names {named}, which a checkpoint only "
                                           r"names to run code on load \(read with weights_only=True; nothing ran\)$"):
        import_weights("akamaster", tmp_path / "evil.th", tmp_path / "o.safetensors")
    assert not marker.exists()


class AttributeDict(dict):
    """Lightning's hyper-parameter dict (a dict subclass that reads keys as attributes)."""

    def __getattr__(self, key):
        return self[key]


@dataclasses.dataclass
class _Config:
    depth: int = 18
    tags: list = dataclasses.field(default_factory=lambda: ["paper"])


class _Tripwire:
    """A user's class whose rebuilding would leave a marker file (its __setstate__ runs on load)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).touch()


def _lightning_checkpoint(net: torch.nn.Module, marker: Path) -> dict:
    """A LightningModule's .ckpt as Lightning 2.x writes it, the net as its attribute ``model``."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    return {"epoch": 3, "global_step": 1_200, "pytorch-lightning_version": "2.5.0",
            "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
            "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                "best_model_score": torch.tensor(0.31), "dirpath": "/runs/x", "last": Path("/runs/x/last.ckpt")}},
            "optimizer_states": [opt.state_dict()],
            "lr_schedulers": [torch.optim.lr_scheduler.StepLR(opt, 30).state_dict()],
            "hparams_name": "kwargs",
            "hyper_parameters": AttributeDict(lr=0.1, config=_Config(), best=np.float64(0.69), hook=_Tripwire(marker),
                                              loss=functools.partial(torch.nn.functional.cross_entropy,
                                                                     label_smoothing=0.1))}


@pytest.mark.parametrize("layout", ["lightning", "whole model", "whole DataParallel under 'model'"])
def test_checkpoints_with_objects_import_and_nothing_runs(tmp_path, layout):
    """A Lightning .ckpt (its hyper-parameters: an AttributeDict, functools.partial, a dataclass, a
    numpy scalar, a class that acts when rebuilt), ``torch.save(model)`` and a DataParallel pickled
    under ``model``: every foreign class becomes an inert stand-in, none is imported or runs, and
    the weights import with the net's outputs. weights_only=True alone refused all three."""
    net, _ = _torchvision_file(tmp_path, torchvision.models.resnet18, num_classes=10)
    marker = tmp_path / "ran"
    saved = {"lightning": lambda: _lightning_checkpoint(net, marker), "whole model": lambda: net,
             "whole DataParallel under 'model'": lambda: {"model": torch.nn.DataParallel(net), "epoch": 2}}[layout]()
    torch.save(saved, tmp_path / "checkpoint.ckpt")
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(tmp_path / "checkpoint.ckpt", weights_only=True)
    meta = import_weights("torchvision", tmp_path / "checkpoint.ckpt", tmp_path / "o.safetensors")
    assert meta.model == "resnet18" and len(meta.classes) == 10 and not marker.exists()
    model, _ = load_weights(tmp_path / "o.safetensors")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), net(x), rtol=1e-5, atol=1e-5)


def test_prefix_picks_the_network_among_several(tmp_path, capsys):
    """A Lightning module with an EMA copy and a class-weighted loss: no prefix is common to every key,
    so nothing is detected; --prefix picks the network (here the EMA copy's, as one usually wants)."""
    net, _ = _torchvision_file(tmp_path, torchvision.models.resnet18, num_classes=10)
    ema = copy.deepcopy(net)
    with torch.no_grad():
        ema.fc.bias.add_(1.0)
    state = {**{f"model.{k}": v for k, v in net.state_dict().items()},
             **{f"model_ema.module.{k}": v for k, v in ema.state_dict().items()},
             "criterion.weight": torch.ones(10)}
    torch.save({"state_dict": state, "epoch": 9}, tmp_path / "last.ckpt")
    with pytest.raises(WeightsError, match="not a torchvision ResNet, VGG or DenseNet state dict"):
        import_weights("torchvision", tmp_path / "last.ckpt", tmp_path / "o.safetensors")
    assert main(["import", "torchvision", str(tmp_path / "last.ckpt"), "-o", str(tmp_path / "o.safetensors"),
                 "--prefix", "model_ema."]) == 0
    model, meta = load_weights(tmp_path / "o.safetensors")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), ema(x), rtol=1e-5, atol=1e-5)
    assert main(["import", "torchvision", str(tmp_path / "last.ckpt"), "-o", str(tmp_path / "o.safetensors"),
                 "--prefix", "net."]) == 2
    assert "no key starts with 'net.' (the keys start with criterion., model., model_ema.)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--prefix selects keys of a PyTorch or safetensors checkpoint"):
        import_weights("caffe", tmp_path / "last.ckpt", tmp_path / "o.safetensors", prefix="model.")


def test_whole_model_in_the_legacy_format_is_refused_with_the_way_out(tmp_path):
    """torch's pre-1.6 format stores a pickled module's source code, which weights_only=True never reads."""
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match=r"old.pth: refused: .*\(Only persistent_load of storage is allowed.*\); "
                                           r"a whole model saved in torch's pre-1.6 format .*save its state_dict"):
        read_state_dict(tmp_path / "old.pth")


def test_stand_ins_keep_what_the_pickle_gave_them(tmp_path):
    torch.save(_lightning_checkpoint(torch.nn.Linear(2, 2), tmp_path / "ran"), tmp_path / "l.ckpt")
    loaded = load_pickle(tmp_path / "l.ckpt")
    hyper = loaded["hyper_parameters"]
    assert type(hyper) is dict and hyper["lr"] == 0.1  # the dict subclass as a plain dict
    assert isinstance(hyper["loss"], Inert) and hyper["loss"].pickled_as == "functools.partial"
    assert hyper["loss"].state[2] == {"label_smoothing": 0.1}  # partial's (func, args, kwargs, dict)
    assert hyper["config"].state == {"depth": 18, "tags": ["paper"]} and hyper["hook"].state["marker"]
    assert loaded["callbacks"]["ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}"]["best_model_score"] == 0.31
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("importer, layout", [
    ("torchvision", lambda net, args: {"model": net.state_dict(), "optimizer": {"state": {}, "param_groups": []},
                                       "lr_scheduler": {"last_epoch": 3}, "epoch": 3, "args": args}),
    ("timm", lambda net, args: {"epoch": 3, "arch": "resnet18", "state_dict": net.state_dict(), "args": args,
                                "version": 2, "metric": 71.2})])
def test_training_checkpoints_of_torchvision_and_timm_scripts_import(tmp_path, importer, layout):
    """torchvision's references/classification/train.py and timm's train.py save the weights beside
    the optimizer, the epoch and their arguments, an argparse.Namespace: weights_only=True refused
    every such file ("Unsupported global: GLOBAL argparse.Namespace"). Namespace is allowed, as safe
    to rebuild as a dict (other classes become inert stand-ins; code is refused: test_hostile_pickle_never_runs)."""
    net, _ = _torchvision_file(tmp_path, torchvision.models.resnet18, num_classes=10)
    torch.save(layout(net, argparse.Namespace(model="resnet18", lr=0.1, epochs=90)), tmp_path / "checkpoint.pth")
    meta = import_weights(importer, tmp_path / "checkpoint.pth", tmp_path / "o.safetensors")
    assert meta.model == "resnet18" and len(meta.classes) == 10
    model, _ = load_weights(tmp_path / "o.safetensors")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), net(x), rtol=1e-5, atol=1e-5)


def test_bad_files_are_one_clear_error(tmp_path):
    (tmp_path / "text.th").write_text("not a checkpoint\n")
    (tmp_path / "empty.th").write_bytes(b"")
    good = tmp_path / "good.th"
    _akamaster_style(create_model("cifar_resnet20"), good)
    (tmp_path / "cut.th").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save([1, 2, 3], tmp_path / "list.th")
    torch.save({1: torch.zeros(1), 2: torch.zeros(2)}, tmp_path / "int_keys.th")
    for name in ("text.th", "empty.th", "cut.th", "list.th", "int_keys.th", "absent.th"):
        with pytest.raises(WeightsError, match=name):
            read_state_dict(tmp_path / name)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64)}, str(tmp_path / "hub.safetensors"))
    (tmp_path / "cut_hub.safetensors").write_bytes((tmp_path / "hub.safetensors").read_bytes()[:-9])
    with pytest.raises(WeightsError, match="cut_hub.safetensors: truncated"):
        read_state_dict(tmp_path / "cut_hub.safetensors")
    # pytorch_resnet_cifar10's files are the legacy (non-zip) format: cut them anywhere.
    legacy = tmp_path / "legacy.th"
    torch.save(torch.load(good, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    for cut in range(1, len(data), max(1, len(data) // 97)):
        (tmp_path / "cut_legacy.th").write_bytes(data[:cut])
        with pytest.raises(WeightsError, match="cut_legacy.th"):
            read_state_dict(tmp_path / "cut_legacy.th")
    with pytest.raises(WeightsError, match="not a pytorch_resnet_cifar10 checkpoint"):
        torch.save({"a": torch.zeros(1)}, tmp_path / "other.th")
        import_weights("akamaster", tmp_path / "other.th", tmp_path / "o.safetensors")


def test_cli_import(tmp_path, capsys):
    _akamaster_style(create_model("cifar_resnet20"), tmp_path / "r20.th")
    out = tmp_path / "r20.safetensors"
    assert main(["import", "akamaster", str(tmp_path / "r20.th"), "-o", str(out)]) == 0
    assert "cifar_resnet20" in capsys.readouterr().out and out.is_file()
    (tmp_path / "junk.th").write_bytes(os.urandom(64))
    assert main(["import", "akamaster", str(tmp_path / "junk.th"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("resnetlab: error:") and "junk.th" in err[0]


# ----------------------------------------------------------------------------- caffe (MSRA layer names)


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(field: int, payload: bytes) -> bytes:
    return _pb_varint(field << 3 | 2) + _pb_varint(len(payload)) + payload


def _pb_blob(t: torch.Tensor) -> bytes:
    dims = b"".join(_pb_varint(d) for d in t.shape)
    return _pb(7, _pb(1, dims)) + _pb(5, t.detach().numpy().astype("<f4").tobytes())


def _pb_layer(name: str, kind: str, blobs=(), stride: int | None = None, eps: float | None = None) -> bytes:
    import struct

    msg = _pb(1, name.encode()) + _pb(2, kind.encode()) + b"".join(_pb(7, _pb_blob(b)) for b in blobs)
    if stride is not None:
        msg += _pb(106, _pb_varint(6 << 3) + _pb_varint(stride))
    if eps is not None:
        msg += _pb(139, _pb_varint(3 << 3 | 5) + struct.pack("<f", eps))
    return _pb(100, msg)


def _caffe_bn(prefix: str, suffix: str, bn: torch.nn.BatchNorm2d, bias: torch.Tensor | None = None) -> bytes:
    # Caffe stores mean and variance times a factor (here 2), with its own eps (here 1e-4);
    # a conv bias before the BN shifts the mean Caffe sees.
    mean = bn.running_mean + (bias if bias is not None else 0)
    var = bn.running_var + 1e-5 - 1e-4
    return (_pb_layer(f"bn{prefix}{suffix}", "BatchNorm", [2 * mean, 2 * var, torch.tensor([2.0])], eps=1e-4)
            + _pb_layer(f"scale{prefix}{suffix}", "Scale", [bn.weight, bn.bias]))


def _msra_caffemodel(net, path: Path) -> None:
    """Write ``net`` (a bottleneck ResNet, variant v1) as an MSRA caffemodel: real layer names, BGR conv1."""
    bias = torch.randn(64) * 0.1
    data = _pb(1, b"ResNet-50")
    data += _pb_layer("conv1", "Convolution", [net.conv1.weight.flip(1), bias], stride=2)
    data += _caffe_bn("_", "conv1", net.bn1, bias)
    data += _pb_layer("conv1_relu", "ReLU") + _pb_layer("pool1", "Pooling")
    for s, stage in enumerate([net.layer1, net.layer2, net.layer3, net.layer4], start=2):
        for j, block in enumerate(stage):
            b = f"{s}{chr(ord('a') + j)}"
            if block.downsample is not None:
                data += _pb_layer(f"res{b}_branch1", "Convolution", [block.downsample[0].weight])
                data += _caffe_bn(b, "_branch1", block.downsample[1])
            for branch, conv, bn in (("2a", block.conv1, block.bn1), ("2b", block.conv2, block.bn2),
                                     ("2c", block.conv3, block.bn3)):
                data += _pb_layer(f"res{b}_branch{branch}", "Convolution", [conv.weight], stride=conv.stride[0])
                data += _caffe_bn(b, f"_branch{branch}", bn)
            data += _pb_layer(f"res{b}", "Eltwise") + _pb_layer(f"res{b}_relu", "ReLU")
    data += _pb_layer("fc1000", "InnerProduct", [net.fc.weight, net.fc.bias]) + _pb_layer("prob", "Softmax")
    path.write_bytes(data)


def test_caffe_msra_mapping_same_outputs(tmp_path):
    from resnetlab.importers import _load, caffe_state_dict, read_caffemodel
    from resnetlab.models.resnet import Bottleneck, ResNet

    torch.manual_seed(0)
    # ResNet-50's stage depths with tiny widths: the MSRA naming and BN/Scale folding at test size.
    net = ResNet(Bottleneck, (3, 4, 6, 3), widths=(4, 8, 16, 32), num_classes=7, variant="v1").eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    _msra_caffemodel(net, tmp_path / "ResNet-50-model.caffemodel")
    layers = read_caffemodel(tmp_path / "ResNet-50-model.caffemodel")
    assert [layer.name for layer in layers][:4] == ["conv1", "bn_conv1", "scale_conv1", "conv1_relu"]
    state, variant = caffe_state_dict(layers, tmp_path)
    assert variant == "v1"
    twin = ResNet(Bottleneck, (3, 4, 6, 3), widths=(4, 8, 16, 32), num_classes=7, variant="v1")
    _load(twin, state, tmp_path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net(x), rtol=1e-4, atol=1e-4)
    # Detected as ResNet-50 (v1) from the names, with the file's widths; pool1 carries no
    # pooling_param here, so the MSRA definition (stem_pool="caffe") is assumed and said so.
    meta = import_weights("caffe", tmp_path / "ResNet-50-model.caffemodel", tmp_path / "o.safetensors")
    assert meta.model == "resnet50"
    assert meta.kwargs == {"variant": "v1", "num_classes": 7, "widths": [4, 8, 16, 32], "stem_pool": "caffe"}
    assert "pool1 not recorded" in meta.source


def test_caffe_names_mean_file_and_bad_files(tmp_path):
    from resnetlab.importers import _caffe_key, _caffe_mean

    assert _caffe_key("res4b22_branch2c") == ("layer3.22.conv3", "res")  # ResNet-101/152 naming
    assert _caffe_key("bn5a_branch1") == ("layer4.0.downsample.1", "bn")
    assert _caffe_key("scale2c_branch2b") == ("layer1.2.bn2", "scale")
    model = tmp_path / "ResNet-50-model.caffemodel"
    mean, note = _caffe_mean(model)
    assert mean == pytest.approx([122.67891434 / 255, 116.66876762 / 255, 104.00698793 / 255]) and "not found" in note
    bgr = torch.rand(1, 3, 4, 4) * 255
    (tmp_path / "ResNet_mean.binaryproto").write_bytes(_pb_blob(bgr))
    mean, note = _caffe_mean(model)
    torch.testing.assert_close(torch.tensor(mean), bgr[0].flip(0) / 255)
    model.write_bytes(_pb_layer("conv1", "Convolution", [torch.zeros(64, 3, 7, 7)])[:-10])
    with pytest.raises(WeightsError, match="not a readable caffemodel"):
        import_weights("caffe", model, tmp_path / "o.safetensors")
    model.write_bytes(_pb_layer("mystery", "Convolution", [torch.zeros(2, 3, 1, 1)]))
    with pytest.raises(WeightsError, match="'mystery' .* is not part of an MSRA ResNet"):
        import_weights("caffe", model, tmp_path / "o.safetensors")
