"""Importers: weight files people already have -> resnetlab weights files (safetensors + metadata).

One function per source maps the foreign keys onto a registered model's state dict:

- ``akamaster``: the CIFAR checkpoints of pytorch_resnet_cifar10 (any depth, option A).
- ``torchvision``: ResNets, ResNeXts and Wide ResNets (into ``variant="v1.5"``), VGG, DenseNet;
  AlexNet refused.
- ``timm``: the same layout, plus the deep stem and avg-pool shortcuts of ``resnet*c``/``resnet*d``;
  and ``resnetv2_50/101/152`` (pre-activation) into ``preact_resnet*``.
- ``caffe``: the MSRA ResNet-50/101/152 ``.caffemodel`` files, read without Caffe.

Foreign pickles are read without running any of their code (:mod:`resnetlab.pickles`:
``torch.load(..., weights_only=True)``, every class it would refuse an inert stand-in), so Lightning
``.ckpt`` files, training checkpoints and whole pickled models give their tensors (safetensors files
hold no pickle at all); every import checks keys and shapes against the target model and
refuses a mismatch naming the offending tensors (:func:`resnetlab.weights.check_state_dict`).
"""

from __future__ import annotations

import math
import os
import re
import struct
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from .constants import CIFAR10_CLASSES, IMAGENET_MEAN, IMAGENET_STD
from .data.imagenet import IMAGENET_WNIDS, imagenet_class_names
from .errors import ConfigError, ResnetlabError, WeightsError
from .models.preact_resnet import PREACT_IMAGENET_STAGES, PreActBottleneck
from .models.resnet import DEEP_STEM_WIDTHS, IMAGENET_STAGES, IMAGENET_WIDTHS, Bottleneck
from .pickles import Inert, is_module, load_pickle, module_state_dict
from .registry import create_model, list_models
from .weights import (WeightsMeta, check_state_dict, read_header, read_json_object, read_meta,
                      save_weights)

__all__ = ["Imported", "IMPORTERS", "read_state_dict", "torchvision_target", "read_caffemodel", "caffe_state_dict",
           "caffe_stem_pool", "import_weights"]


StateDict = dict[str, torch.Tensor]


@dataclass
class Imported:
    """A foreign checkpoint mapped onto a resnetlab model, ready for ``save_weights``."""

    model: nn.Module
    mean: Any
    std: Any
    classes: list[str] | None
    note: str = ""  # recorded in resnetlab.source, e.g. which mean file was used


def read_state_dict(path: str | os.PathLike, prefix: str | None = None) -> StateDict:
    """The tensors of a foreign checkpoint: safetensors, or a torch pickle read without running any of
    its code (:func:`resnetlab.pickles.load_pickle`).

    The weights are the file itself, or what it holds under ``state_dict``, ``model`` or
    ``model_state``: a state dict, or a whole pickled ``nn.Module`` (``torch.save(model)``), read from
    its stand-in.  The prefix every key shares is removed (a Lightning module's ``model.``, a
    DataParallel's ``module.``, ``torch.compile``'s ``_orig_mod.``), as is a ``module.`` on some keys.
    ``prefix``: only the keys under it, without it (a checkpoint holding more than the network: an
    EMA copy, a loss with weights).  Anything else is a :class:`WeightsError`.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":  # safetensors: 8-byte header length, then the JSON header
        read_header(path)  # sizes and offsets checked before safetensors reads the data
        try:
            obj: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable checkpoint ({exc})") from None
    else:
        obj = load_pickle(path)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and (isinstance(obj.get(key), dict) or is_module(obj.get(key))):
            obj = obj[key]
            break
    if is_module(obj):
        obj = module_state_dict(obj)
    if not (isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in obj.items())):
        found = obj.pickled_as if isinstance(obj, Inert) else type(obj).__name__
        raise WeightsError(f"{path}: holds no state dict of tensors (found {found})")
    if prefix:
        under = {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
        if not under:
            tops = sorted({k.split(".", 1)[0] + "." for k in obj})
            raise WeightsError(f"{path}: no key starts with {prefix!r} (the keys start with {', '.join(tops[:8])})")
        obj = under
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    while len(state) > 1 and all("." in k for k in state) and len({k.split(".", 1)[0] for k in state}) == 1:
        state = {k.split(".", 1)[1]: v for k, v in state.items()}
    return state


def _target(model_name: str | None, detected: str, where: Path, **kwargs: Any) -> nn.Module:
    """The model to import into: the detected one, or ``--model`` if given.  Either way it is built
    with what the checkpoint says of its architecture (``kwargs``: class count, variant, stem
    pooling, widths), so that ``--model`` can pick the depth but never silently change the network."""
    name = model_name or detected
    try:
        return create_model(name, **kwargs)
    except ResnetlabError as exc:
        how = "asked for" if model_name else "detected"
        raise WeightsError(f"{where}: {how} {name}, which resnetlab cannot build for these weights: {exc}") from None


def _blocks(state: Mapping[str, torch.Tensor], stage: str) -> int:
    return len({int(m.group(1)) for k in state if (m := re.match(rf"{stage}\.(\d+)\.", k))})


def _imagenet_classes(num_classes: int) -> list[str] | None:
    return list(imagenet_class_names()) if num_classes == len(IMAGENET_WNIDS) else None


# ----------------------------------------------------------------------------- akamaster


def import_akamaster(path: Path, model_name: str | None = None, prefix: str | None = None) -> Imported:
    """pytorch_resnet_cifar10 checkpoints: ``conv1 bn1 layer1..3.N.{conv1,bn1,conv2,bn2} linear``.

    The depth is ``6n + 2`` with ``n`` the blocks of ``layer1``; shortcuts are option A (section
    4.2); inputs normalized with the ImageNet mean/std as that project did.
    """
    state = read_state_dict(path, prefix)
    if "linear.weight" not in state or "layer1.0.conv1.weight" not in state:
        raise WeightsError(f"{path}: not a pytorch_resnet_cifar10 checkpoint (no linear.weight / layer1.0.conv1.weight)")
    state = {("fc." + k[len("linear."):] if k.startswith("linear.") else k): v for k, v in state.items()}
    num_classes = state["fc.weight"].shape[0]
    depth = 6 * _blocks(state, "layer1") + 2
    model = _target(model_name, f"cifar_resnet{depth}", path, num_classes=num_classes)
    _load(model, state, path)
    classes = list(CIFAR10_CLASSES) if num_classes == 10 else None
    return Imported(model, IMAGENET_MEAN, IMAGENET_STD, classes)


def _load(model: nn.Module, state: Mapping[str, torch.Tensor], where: Path) -> None:
    # The foreign file may omit BN step counters (older PyTorch); they carry no weights.
    own = model.state_dict()
    state = dict(state)
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    check_state_dict(model, state, str(where))
    model.load_state_dict(state, strict=True)
    model.eval()


# ----------------------------------------------------------------------------- torchvision


_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _resnet_from_keys(state: Mapping[str, torch.Tensor], where: Path, source: str,
                      variant: str = "v1.5") -> tuple[str, dict]:
    """Registered name and kwargs for a torchvision- or timm-layout ResNet state dict.

    The stacks are paper Table 1's; the keys and shapes say which successors' changes the file
    holds, and each is rebuilt, never dropped: grouped or wider 3x3 convs (ResNeXt, Wide ResNet:
    ``groups``, ``width_per_group``), the deep stem (ResNet-C, ``conv1.0``) and average-pool
    shortcuts (ResNet-D, ``downsample.1`` a conv).  Stage widths other than Table 1's (``planes``:
    each stage's output over the block's expansion) are kept as ``widths``.  A combination with a
    registered name (``resnext50_32x4d``, ``wide_resnet50_2``, ``resnet50d``) gets that name."""
    bottleneck = "layer1.0.conv3.weight" in state
    layers = tuple(_blocks(state, f"layer{i}") for i in range(1, 5))
    depth = next((d for d, (block, stages) in IMAGENET_STAGES.items()
                  if stages == layers and (block is Bottleneck) == bottleneck), None)
    if depth is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise WeightsError(f"{where}: {source} ResNet with {kind} blocks {layers} per stage is not a ResNet of "
                           "paper Table 1 (18/34/50/101/152)")
    last, expansion = ("conv3", Bottleneck.expansion) if bottleneck else ("conv2", 1)
    widths = tuple(int(state[f"layer{i}.0.{last}.weight"].shape[0]) // expansion for i in range(1, 5))
    arch: dict[str, Any] = {}
    if widths != IMAGENET_WIDTHS:
        arch["widths"] = list(widths)
    if bottleneck:  # torchvision's inner width: planes * width_per_group / 64 * groups
        inner, per_group = (int(n) for n in state["layer1.0.conv2.weight"].shape[:2])
        groups, width_per_group = inner // per_group, per_group * 64 // widths[0]
        if (groups, width_per_group) != (1, 64):
            arch.update(groups=groups, width_per_group=width_per_group)
    if "conv1.0.weight" in state:
        stem = tuple(int(state[f"conv1.{i}.weight"].shape[0]) for i in (0, 3, 6) if f"conv1.{i}.weight" in state)
        if stem != DEEP_STEM_WIDTHS:
            raise WeightsError(f"{where}: {source} deep stem with {stem} filters is not ResNet-C's "
                               f"{DEEP_STEM_WIDTHS} (timm's resnet*s and *t stems are other networks): refused")
        arch["stem"] = "deep"
    if "layer2.0.downsample.2.weight" in state:  # [avg-pool, conv, BN] instead of [conv, BN]
        arch["shortcut_avg_down"] = True
    name, arch = _registered_name(depth, arch)
    return name, {"variant": variant, "num_classes": int(state["fc.weight"].shape[0]), **arch}


def _registered_name(depth: int, arch: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The registered name that fixes ``arch`` (what is left of it to pass), else ``resnet{depth}``."""
    if arch == {"stem": "deep", "shortcut_avg_down": True}:
        candidates = [f"resnet{depth}d"]
    elif set(arch) == {"groups", "width_per_group"}:
        wide, factor = arch["groups"] == 1 and arch["width_per_group"] % 64 == 0, arch["width_per_group"] // 64
        candidates = [f"wide_resnet{depth}_{factor}" if wide else f"resnext{depth}_{arch['groups']}x"
                      f"{arch['width_per_group']}d"]
    else:
        candidates = []
    known = set(list_models())
    return next(((name, {}) for name in candidates if name in known), (f"resnet{depth}", arch))


def torchvision_target(state: Mapping[str, torch.Tensor], path: Path) -> tuple[str, dict, StateDict]:
    """``(model name, kwargs, state dict with resnetlab keys)`` for a torchvision state dict."""
    state = dict(state)
    if "fc.weight" in state and "layer1.0.conv1.weight" in state:
        name, kwargs = _resnet_from_keys(state, path, "torchvision")
    elif any(k.startswith("features.denseblock") for k in state):
        # torchvision's published DenseNet files use the old keys "norm.1"; its loader renames them.
        state = {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state.items()}
        blocks = tuple(
            len({k.split(".")[2] for k in state if k.startswith(f"features.denseblock{b}.")}) for b in range(1, 5)
        )
        depths = {(6, 12, 24, 16): 121, (6, 12, 32, 32): 169, (6, 12, 48, 32): 201, (6, 12, 64, 48): 264}
        if blocks not in depths or state["features.conv0.weight"].shape[0] != 64:
            raise WeightsError(f"{path}: torchvision DenseNet with blocks {blocks} (and "
                               f"{state['features.conv0.weight'].shape[0]} stem filters) is not DenseNet-121/169/201/264")
        name, kwargs = f"densenet{depths[blocks]}", {"num_classes": state["classifier.weight"].shape[0]}
    elif "features.0.weight" in state and any(k.startswith("classifier.") for k in state):
        first = state["features.0.weight"]
        if first.shape[-1] == 11:
            raise WeightsError(
                f"{path}: torchvision's AlexNet is a different network from the paper's "
                f"(features.0 has {first.shape[0]} filters instead of 96, no local response normalization, "
                "no two-group convs): refused; train resnetlab's alexnet instead"
            )
        convs = [k for k, v in state.items() if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4]
        batch_norm = "features.1.running_mean" in state
        last = max((k for k in state if k.startswith("classifier.") and k.endswith(".weight")),
                   key=lambda k: int(k.split(".")[1]))
        name = f"vgg{len(convs) + 3}{'_bn' if batch_norm else ''}"
        kwargs = {"num_classes": state[last].shape[0]}
    else:
        raise WeightsError(f"{path}: not a torchvision ResNet, VGG or DenseNet state dict "
                           f"(first keys: {', '.join(list(state)[:3])})")
    return name, kwargs, state


def import_torchvision(path: Path, model_name: str | None = None, prefix: str | None = None) -> Imported:
    """torchvision ResNet, ResNeXt and Wide ResNet (into ``variant="v1.5"``), VGG and DenseNet state
    dicts; AlexNet refused."""
    name, kwargs, state = torchvision_target(read_state_dict(path, prefix), path)
    model = _target(model_name, name, path, **kwargs)
    _load(model, state, path)
    return Imported(model, IMAGENET_MEAN, IMAGENET_STD, _imagenet_classes(kwargs["num_classes"]))


# ----------------------------------------------------------------------------- Hugging Face transformers


def _hub_files(path: Path) -> tuple[Path, Path]:
    """``(folder, weights file)`` of a Hugging Face hub folder (``model.safetensors`` or
    ``pytorch_model.bin`` beside ``config.json``), or of a weights file and the folder it lies in."""
    if not path.is_dir():
        return path.parent, path
    weights = next((f for f in (path / "model.safetensors", path / "pytorch_model.bin") if f.is_file()), None)
    if weights is None:
        raise WeightsError(f"{path}: a folder without model.safetensors or pytorch_model.bin")
    return path, weights


def _transformers_key(key: str) -> str:
    """A transformers ``ResNetForImageClassification`` key -> torchvision's layout (resnetlab's)."""
    key = key.removeprefix("resnet.").replace("classifier.1.", "fc.")
    key = key.replace("embedder.embedder.convolution.", "conv1.").replace("embedder.embedder.normalization.", "bn1.")
    key = re.sub(r"^encoder\.stages\.(\d)\.layers\.(\d+)\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.", key)
    key = key.replace(".shortcut.convolution.", ".downsample.0.").replace(".shortcut.normalization.", ".downsample.1.")
    return re.sub(r"\.layer\.(\d)\.(convolution|normalization)\.",
                  lambda m: f".{'conv' if m[2] == 'convolution' else 'bn'}{int(m[1]) + 1}.", key)


def import_transformers(path: Path, model_name: str | None = None, prefix: str | None = None) -> Imported:
    """Hugging Face transformers' ``ResNetForImageClassification`` (``microsoft/resnet-18`` ... ``-152``):
    a hub folder (``config.json`` beside ``model.safetensors`` or ``pytorch_model.bin``) or its weights
    file.  ``config.json`` says where the stride is: ``downsample_in_bottleneck`` on the first 1x1 is
    the paper's ``v1``, else (transformers' default) the 3x3's ``v1.5``; a stride in ``conv2_x``
    (``downsample_in_first_stage``) or another activation is another network, refused.  Without
    ``config.json`` transformers' defaults are assumed and the weights' ``source`` says so.  Classes
    from ``id2label`` (ImageNet's 1,000 under the names every importer gives them), mean and std from
    ``preprocessor_config.json`` (else ImageNet's)."""
    folder, weights = _hub_files(path)
    config = read_json_object(folder / "config.json")
    if config.get("model_type", "resnet") != "resnet":
        raise WeightsError(f"{folder / 'config.json'}: a transformers {config['model_type']!r} model, not a ResNet")
    for key, default, why in (("downsample_in_first_stage", False, "a stride in conv2_x"),
                              ("hidden_act", "relu", "another activation than ReLU")):
        if config.get(key, default) != default:
            raise WeightsError(f"{folder / 'config.json'}: {key}={config[key]!r} is {why}: another network, refused")
    state = {_transformers_key(k): v for k, v in read_state_dict(weights, prefix).items()}
    if "fc.weight" not in state or "layer1.0.conv1.weight" not in state:
        raise WeightsError(f"{weights}: not a transformers ResNetForImageClassification state dict (a backbone "
                           f"without its classifier is not imported; first keys: {', '.join(list(state)[:3])})")
    variant = "v1" if config.get("downsample_in_bottleneck", False) else "v1.5"
    name, kwargs = _resnet_from_keys(state, weights, "transformers", variant)
    model = _target(model_name, name, path, **kwargs)
    _load(model, state, weights)
    labels = config.get("id2label") or {}
    named = [labels.get(str(i)) for i in range(kwargs["num_classes"])] if isinstance(labels, dict) else []
    generic = [f"LABEL_{i}" for i in range(len(named))]  # transformers' names when a config gives none
    classes = _imagenet_classes(kwargs["num_classes"]) or (
        named if all(isinstance(n, str) for n in named) and named != generic else None)
    pre = read_json_object(folder / "preprocessor_config.json")
    mean, std = pre.get("image_mean", IMAGENET_MEAN), pre.get("image_std", IMAGENET_STD)
    return Imported(model, mean, std, classes,
                    note="" if config else "no config.json: transformers' defaults assumed (stride on the 3x3)")


# ----------------------------------------------------------------------------- timm

#: timm ResNet variants whose architecture resnetlab does not build: a key that betrays each, and why.
#: (Deep stems other than ResNet-C's, timm's resnet*s and *t, are refused by their stem widths.)
TIMM_REFUSED: tuple[tuple[str, str, str], ...] = (
    (r"\.se\.|\.attn\.", "seresnet*/ecaresnet* (squeeze-excitation / attention)", "its blocks carry attention modules"),
    (r"\.aa\.|\.blur", "resnetaa*/resnetblur* (anti-aliased)", "its strided convs are blurred first"),
    (r"\.drop_block|\.layer_scale", "regularised variants", "its blocks carry extra modules"),
)


def import_timm(path: Path, model_name: str | None = None, prefix: str | None = None) -> Imported:
    """timm's ResNets in torchvision's layout (stride on the 3x3: ``v1.5``): ``resnet18..152``,
    ``resnet*c`` (deep stem) and ``resnet*d`` (deep stem, avg-pool shortcuts), ``resnext*`` and
    ``wide_resnet*``; and the pre-activation ``resnetv2_50/101/152``.  SE/ECA attention,
    anti-aliasing and the other stems are refused by name.  A timm hub folder (``timm/resnet50.a1_in1k``,
    or a model saved with timm's ``push_to_hf_hub``/``save_for_hf``), or a weights file with its
    ``config.json`` beside it, gives its ``pretrained_cfg`` mean and std and its ``label_names``.
    """
    folder, weights = _hub_files(path)
    state = read_state_dict(weights, prefix)
    if any(k.startswith("stages.") for k in state):
        imported = _import_timm_resnetv2(state, weights, model_name)
    else:
        for pattern, variant, why in TIMM_REFUSED:
            hit = next((k for k in state if re.search(pattern, k)), None)
            if hit is not None:
                raise WeightsError(f"{weights}: timm {variant} refused: {why} (tensor {hit}); "
                                   "resnetlab builds timm's resnet*, resnet*c/d, resnext* and wide_resnet*")
        if "fc.weight" not in state or "layer1.0.conv1.weight" not in state:
            raise WeightsError(f"{weights}: not a timm ResNet state dict (no fc.weight / layer1.0.conv1.weight)")
        name, kwargs = _resnet_from_keys(state, weights, "timm")
        model = _target(model_name, name, weights, **kwargs)
        _load(model, state, weights)
        imported = Imported(model, IMAGENET_MEAN, IMAGENET_STD, _imagenet_classes(kwargs["num_classes"]))
    config = read_json_object(folder / "config.json")
    if "architecture" not in config:  # not timm's (a transformers config.json says "architectures")
        return imported
    cfg = config.get("pretrained_cfg", config)  # timm's older single-level config.json holds it all
    n = imported.model.fc.out_features
    labels = config.get("label_names", cfg.get("label_names", cfg.get("labels")))
    if isinstance(labels, dict):  # {class index: name}, where the indices have gaps
        labels = [labels.get(str(i)) for i in range(n)]
    named = isinstance(labels, list) and len(labels) == n and all(isinstance(label, str) for label in labels)
    return replace(imported, mean=cfg.get("mean", imported.mean), std=cfg.get("std", imported.std),
                   classes=imported.classes or (labels if named else None), note=f"timm {config['architecture']}")


def _timm_resnetv2_key(key: str) -> str:
    """A timm ``resnetv2`` key -> resnetlab's pre-activation ResNet key."""
    key = key.replace("stem.conv.", "conv1.").replace("head.fc.", "fc.").replace("downsample.conv.", "downsample.0.")
    key = re.sub(r"^norm\.", "final_bn.", key)
    key = re.sub(r"^stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"layer{int(m.group(1)) + 1}.{m.group(2)}.", key)
    return re.sub(r"\.norm(\d)\.", r".bn\1.", key)


def _import_timm_resnetv2(state: StateDict, path: Path, model_name: str | None) -> Imported:
    """timm's ``resnetv2_50/101/152`` (pre-activation with BN, stride on the 3x3): resnetlab's
    ``preact_resnet*`` with ``variant="v1.5"``, the same outputs (tests/test_importers.py).  Its
    other stems, BiT's GroupNorm and weight-standardized convs, and the basic-block nets (whose first
    unit keeps a clean identity where He et al. 2016 share the BN-ReLU) are refused by name."""
    if "stem.conv.weight" not in state:
        raise WeightsError(f"{path}: timm resnetv2 with a deep stem (resnetv2_*d) refused: its stem is three 3x3 "
                           "convs; resnetlab's pre-activation nets have the 7x7 stem")
    if "norm.running_mean" not in state:
        raise WeightsError(f"{path}: timm resnetv2 without BN statistics (BiT: GroupNorm and weight-standardized "
                           "convs) refused: another network")
    if "stages.0.blocks.0.conv3.weight" not in state:
        raise WeightsError(f"{path}: timm resnetv2_18/34 refused: their first unit keeps a clean identity, where "
                           "He et al. 2016 (and resnetlab's preact_resnet18/34) share its BN-ReLU")
    layers = tuple(_blocks(state, rf"stages\.{i}\.blocks") for i in range(4))
    depth = next((d for d, (block, stages) in PREACT_IMAGENET_STAGES.items()
                  if stages == layers and block is PreActBottleneck), None)
    if depth is None:
        raise WeightsError(f"{path}: timm resnetv2 with bottleneck units {layers} per stage is not a "
                           f"pre-activation ResNet-{'/'.join(map(str, sorted(PREACT_IMAGENET_STAGES)))}")
    state = {_timm_resnetv2_key(k): v.flatten(1) if k == "head.fc.weight" else v for k, v in state.items()}
    num_classes = int(state["fc.weight"].shape[0])
    model = _target(model_name, f"preact_resnet{depth}", path, variant="v1.5", num_classes=num_classes)
    _load(model, state, path)
    return Imported(model, IMAGENET_MEAN, IMAGENET_STD, _imagenet_classes(num_classes))


# ----------------------------------------------------------------------------- caffe
# The MSRA ResNet-50/101/152 models (the paper's own) are Caffe NetParameter protobufs. The few
# fields needed are read from the protobuf wire format (schema: caffe/src/caffe/proto/caffe.proto),
# so neither Caffe nor protobuf is required.

#: caffe.proto field numbers
_NET_LAYER, _NET_V1_LAYERS = 100, 2
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS, _LAYER_CONV, _LAYER_BN = 1, 2, 7, 106, 139
_LAYER_POOL, _LAYER_SCALE = 121, 142
_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH, _BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE = 1, 2, 3, 4, 5, 7, 8
_CONV_STRIDE, _BN_EPS, _SCALE_BIAS_TERM = 6, 3, 4
#: PoolingParameter: pool, kernel_size, stride, pad, their (h, w) forms, global_pooling, round_mode
_POOL_METHOD, _POOL_KERNEL, _POOL_STRIDE, _POOL_PAD = 1, 2, 3, 4
_POOL_KERNEL_HW, _POOL_STRIDE_HW, _POOL_PAD_HW, _POOL_GLOBAL, _POOL_ROUND = (5, 6), (7, 8), (9, 10), 12, 13
_POOL_MAX, _ROUND_CEIL = 0, 0  # PoolMethod.MAX and RoundMode.CEIL, both caffe.proto's defaults
#: BatchNormParameter.eps when the layer does not set it (caffe.proto's default)
CAFFE_BN_EPS = 1e-5
#: BGR mean (0-255) of the ILSVRC-2012 training images, used when the per-pixel mean file is absent
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
_CAFFE_BLOCK = re.compile(r"^(res|bn|scale)(\d)([a-z])(\d*)_branch(1|2a|2b|2c)$")
_CAFFE_STEM = {"conv1": ("conv1", "res"), "bn_conv1": ("bn1", "bn"), "scale_conv1": ("bn1", "scale")}
_CAFFE_BRANCH = {"1": ("downsample.0", "downsample.1"), "2a": ("conv1", "bn1"), "2b": ("conv2", "bn2"),
                 "2c": ("conv3", "bn3")}
_TORCH_BN_EPS = 1e-5


@dataclass(frozen=True)
class CaffePooling:
    """A Caffe PoolingParameter as ``(h, w)`` pairs, with caffe.proto's defaults: max pooling,
    stride 1, no padding, pooled sizes rounded up (``round_mode: CEIL``)."""

    method: int = _POOL_MAX
    kernel: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    ceil: bool = True
    global_pooling: bool = False

    def describe(self) -> str:
        """One phrase for messages, e.g. ``max 3x3/2 pad 0, rounded up``."""
        method = "max" if self.method == _POOL_MAX else f"method {self.method}"
        k, st, pad = self.kernel, self.stride, self.pad
        size = "global" if self.global_pooling else f"{k[0]}x{k[1]}/{st[0] if st[0] == st[1] else st}"
        return f"{method} {size} pad {pad[0] if pad[0] == pad[1] else pad}, rounded {'up' if self.ceil else 'down'}"


@dataclass
class CaffeLayer:
    """The parts of a Caffe LayerParameter an import needs."""

    name: str
    type: str
    blobs: list[np.ndarray]
    stride: int = 1
    eps: float = CAFFE_BN_EPS
    pooling: CaffePooling | None = None
    scale_bias: bool | None = None  # ScaleParameter.bias_term where the file sets scale_param


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of one protobuf message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated message")
        yield field, wire, value


def _ints(wire: int, value: Any) -> list[int]:
    """A repeated integer field: one varint, or a packed run of them."""
    if wire == 0:
        return [value]
    out, i = [], 0
    while i < len(value):
        v, i = _varint(value, i)
        out.append(v)
    return out


def _blob(buf: memoryview) -> np.ndarray:
    legacy, shape, chunks = {}, [], []
    for field, wire, value in _fields(buf):
        if field == _BLOB_SHAPE:
            shape = [d for f, w, v in _fields(value) if f == 1 for d in _ints(w, v)]
        elif field in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH):
            legacy[field] = value
        elif field == _BLOB_DATA:
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif field == _BLOB_DOUBLE:
            chunks.append(np.frombuffer(value, dtype="<f8").astype(np.float32))
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if not shape and legacy:
        shape = [legacy.get(f, 1) for f in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH)]
    if math.prod(shape) != data.size:
        raise ValueError(f"blob of shape {shape} holds {data.size} values")
    return data.reshape(shape)


def _pooling(buf: memoryview) -> CaffePooling:
    values = {f: v for f, w, v in _fields(buf) if w == 0}

    def pair(single: int, hw: tuple[int, int], default: int) -> tuple[int, int]:
        if hw[0] in values or hw[1] in values:
            return values.get(hw[0], default), values.get(hw[1], default)
        return (values[single],) * 2 if single in values else (default, default)

    return CaffePooling(
        method=values.get(_POOL_METHOD, _POOL_MAX),
        kernel=pair(_POOL_KERNEL, _POOL_KERNEL_HW, 0),
        stride=pair(_POOL_STRIDE, _POOL_STRIDE_HW, 1),
        pad=pair(_POOL_PAD, _POOL_PAD_HW, 0),
        ceil=values.get(_POOL_ROUND, _ROUND_CEIL) == _ROUND_CEIL,
        global_pooling=bool(values.get(_POOL_GLOBAL, 0)),
    )


def read_caffemodel(path: str | os.PathLike) -> list[CaffeLayer]:
    """The layers of a binary ``.caffemodel`` (NetParameter) with their blobs, conv strides, BN eps,
    pooling parameters and Scale ``bias_term``."""
    path = Path(path)
    try:
        buf = memoryview(path.read_bytes())
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    layers = []
    try:
        for field, _, value in _fields(buf):
            if field == _NET_V1_LAYERS:
                raise WeightsError(f"{path}: a V1-format caffemodel ('layers'); upgrade it with Caffe's "
                                   "upgrade_net_proto_binary first")
            if field != _NET_LAYER:
                continue
            layer = CaffeLayer("", "", [])
            for f, w, v in _fields(value):
                if f == _LAYER_NAME:
                    layer.name = bytes(v).decode("utf-8")
                elif f == _LAYER_TYPE:
                    layer.type = bytes(v).decode("utf-8")
                elif f == _LAYER_BLOBS:
                    layer.blobs.append(_blob(v))
                elif f == _LAYER_CONV:
                    strides = [s for cf, cw, cv in _fields(v) if cf == _CONV_STRIDE for s in _ints(cw, cv)]
                    layer.stride = strides[0] if strides else 1
                elif f == _LAYER_BN:
                    eps = [struct.unpack("<f", cv)[0] for cf, cw, cv in _fields(v) if cf == _BN_EPS and cw == 5]
                    layer.eps = eps[-1] if eps else layer.eps
                elif f == _LAYER_POOL:
                    layer.pooling = _pooling(v)
                elif f == _LAYER_SCALE:
                    bias = [bool(sv) for sf, sw, sv in _fields(v) if sf == _SCALE_BIAS_TERM and sw == 0]
                    layer.scale_bias = bias[-1] if bias else False
            layers.append(layer)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: not a readable caffemodel ({exc})") from None
    if not layers:
        raise WeightsError(f"{path}: not a caffemodel (no layers found)")
    return layers


def _caffe_key(name: str) -> tuple[str, str] | None:
    """``(module prefix, kind)`` of an MSRA layer name: ``res3b2_branch2a`` -> ``("layer2.2.conv1", "res")``."""
    if name in _CAFFE_STEM:
        return _CAFFE_STEM[name]
    m = _CAFFE_BLOCK.match(name)
    if m is None:
        return None
    kind, stage, letter, number, branch = m.groups()
    # ResNet-50 names its blocks a, b, c, ...; ResNet-101/152 a, b1, b2, ... (res4b22).
    index = int(number) if number else ord(letter) - ord("a")
    conv, bn = _CAFFE_BRANCH[branch]
    return f"layer{int(stage) - 1}.{index}.{conv if kind == 'res' else bn}", kind


def caffe_state_dict(layers: list[CaffeLayer], where: Path) -> tuple[StateDict, str]:
    """Map MSRA ResNet layers onto resnetlab keys; returns ``(state dict, variant)``.

    Caffe's BatchNorm layer (mean, variance, moving-average factor; eps) and the Scale layer
    after it (gamma, and beta where ``bias_term``) become one BatchNorm2d: mean and variance are
    divided by the factor (a zero factor gives zeros, as BatchNormLayer does), an eps other
    than PyTorch's 1e-5 is folded into the variance, and a BatchNorm with no Scale gets gamma 1,
    beta 0.  A conv bias before a BN is folded into its mean; conv1 is turned from BGR to RGB.
    """
    state: StateDict = {}
    conv_bias: dict[str, torch.Tensor] = {}
    variant = "v1"
    for layer in layers:
        if not layer.blobs:
            continue
        blobs = [torch.from_numpy(b.copy()) for b in layer.blobs]
        if layer.type == "InnerProduct":
            weight = blobs[0].reshape(blobs[0].shape[-2:])
            state["fc.weight"] = weight
            state["fc.bias"] = blobs[1].flatten() if len(blobs) > 1 else torch.zeros(weight.shape[0])
            continue
        key = _caffe_key(layer.name)
        if key is None:
            raise WeightsError(f"{where}: layer {layer.name!r} ({layer.type}) is not part of an MSRA ResNet")
        prefix, kind = key
        if kind == "res":
            weight = blobs[0]
            if prefix == "conv1":
                weight = weight.flip(1)  # Caffe feeds BGR images; resnetlab feeds RGB
            state[prefix + ".weight"] = weight
            if len(blobs) > 1:
                conv_bias[prefix] = blobs[1].flatten()
            if prefix == "layer2.0.conv2" and layer.stride == 2:
                variant = "v1.5"  # stride on the 3x3: not the MSRA layout, but read as it is
        elif kind == "bn":
            state.update(_caffe_batch_norm(layer, prefix, blobs, where))
        else:
            if layer.scale_bias is not None and len(blobs) != 1 + layer.scale_bias:
                raise WeightsError(f"{where}: Scale layer {layer.name!r} has bias_term: {str(layer.scale_bias).lower()} "
                                   f"but {len(blobs)} blob{'s' if len(blobs) != 1 else ''}")
            state[prefix + ".weight"] = blobs[0].flatten()
            state[prefix + ".bias"] = blobs[1].flatten() if len(blobs) > 1 else torch.zeros_like(blobs[0].flatten())
    for key in [k for k in state if k.endswith(".running_mean")]:
        bn = key.removesuffix(".running_mean")
        if bn + ".weight" not in state:  # a BatchNorm with no Scale after it normalizes only
            state[bn + ".weight"] = torch.ones_like(state[key])
            state[bn + ".bias"] = torch.zeros_like(state[key])
    for conv, bias in conv_bias.items():
        bn = "bn1" if conv == "conv1" else conv.replace("conv", "bn").replace("downsample.0", "downsample.1")
        if bn + ".running_mean" not in state:
            raise WeightsError(f"{where}: convolution {conv} has a bias but no BatchNorm layer to fold it into")
        state[bn + ".running_mean"] = state[bn + ".running_mean"] - bias  # BN(x + b) with mean shifted by b
    return state, variant


def _caffe_batch_norm(layer: CaffeLayer, prefix: str, blobs: list[torch.Tensor], where: Path) -> StateDict:
    """``running_mean`` and ``running_var`` of one Caffe BatchNorm layer, for PyTorch's eps."""
    if len(blobs) != 3:
        raise WeightsError(f"{where}: BatchNorm layer {layer.name!r} holds {len(blobs)} blobs; Caffe's holds 3 "
                           "(mean, variance, moving-average factor)")
    # Caffe stores running sums: BatchNormLayer::Forward_cpu multiplies mean and variance by
    # 1 / factor, and by 0 when the factor is 0; it adds eps to the variance before the sqrt.
    factor = float(blobs[2].flatten()[0])
    scale = 0.0 if factor == 0 else 1.0 / factor
    mean = blobs[0].flatten().double() * scale
    var = blobs[1].flatten().double() * scale + layer.eps - _TORCH_BN_EPS
    if (var < 0).any():
        raise WeightsError(f"{where}: BatchNorm layer {layer.name!r} has eps {layer.eps:g} and variances below "
                           f"{_TORCH_BN_EPS - layer.eps:g}: not representable with PyTorch's eps {_TORCH_BN_EPS:g}")
    return {prefix + ".running_mean": mean.float(), prefix + ".running_var": var.float()}


def caffe_stem_pool(layers: list[CaffeLayer], where: Path) -> tuple[str, str]:
    """``(stem_pool, note)`` for the model's ``pool1``.

    The MSRA prototxts define it as 3x3 max pooling, stride 2, no padding, and Caffe rounds
    pooled sizes up: ``stem_pool="caffe"``.  Padding 1 rounded down (``round_mode: FLOOR``) is
    PyTorch's pooling, ``"torch"``.  Any other pooling is refused; a file that does not record
    ``pool1`` (only layers with weights kept) gets the MSRA definition, said in the note.
    """
    pool1 = next((layer for layer in layers if layer.name == "pool1"), None)
    if pool1 is None or pool1.pooling is None:
        return "caffe", "pool1 not recorded: the MSRA prototxts' 3x3/2 max pool, pad 0, rounded up"
    p = pool1.pooling
    square_3x3_2 = p.method == _POOL_MAX and not p.global_pooling and p.kernel == (3, 3) and p.stride == (2, 2)
    if square_3x3_2 and p.pad == (0, 0) and p.ceil:
        return "caffe", f"pool1 {p.describe()}"
    if square_3x3_2 and p.pad == (1, 1) and not p.ceil:
        return "torch", f"pool1 {p.describe()}"
    raise WeightsError(f"{where}: pool1 is {p.describe()}; resnetlab builds max 3x3/2 with pad 0 rounded up "
                       "(Caffe's, stem_pool='caffe') or pad 1 rounded down (stem_pool='torch')")


#: the MSRA models' per-pixel mean file, looked for beside the ``.caffemodel``
CAFFE_MEAN_FILE = "ResNet_mean.binaryproto"


def _caffe_mean(path: Path, mean_file: Path | None = None) -> tuple[Any, str]:
    """The input mean (RGB, [0, 1] scale) and what it is: the per-pixel mean of ``mean_file``, or
    of :data:`CAFFE_MEAN_FILE` beside ``path``; without either, the per-channel ILSVRC mean, with
    a warning on stderr (the MSRA models were trained with the per-pixel one)."""
    if mean_file is None:
        mean_file = path.with_name(CAFFE_MEAN_FILE)
        if not mean_file.is_file():
            bgr = torch.tensor(CAFFE_BGR_MEAN)
            print(f"resnetlab: warning: no {CAFFE_MEAN_FILE} beside {path}: the imported model subtracts the "
                  f"per-channel ILSVRC mean (BGR {', '.join(f'{v:.1f}' for v in CAFFE_BGR_MEAN)}), not the per-pixel "
                  "mean the MSRA models were trained with; give the mean file with --mean PATH", file=sys.stderr)
            return (bgr.flip(0) / 255).tolist(), f"per-channel ILSVRC mean, {CAFFE_MEAN_FILE} not found"
    try:
        blob = torch.from_numpy(_blob(memoryview(Path(mean_file).read_bytes())).copy())
    except FileNotFoundError:
        raise WeightsError(f"{mean_file}: no such mean file") from None
    except ValueError as exc:
        raise WeightsError(f"{mean_file}: not a readable mean file ({exc})") from None
    blob = blob.reshape(blob.shape[-3:])
    return (blob.flip(0) / 255).tolist(), f"per-pixel mean {mean_file}"


def import_caffe(path: Path, model_name: str | None = None, mean_file: Path | None = None) -> Imported:
    """MSRA ResNet-50/101/152 ``.caffemodel`` (paper's "v1": stride 2 on the first 1x1 of a
    downsampling block; ``pool1`` as the file defines it, ``stem_pool="caffe"`` for the MSRA
    models; BGR, 0-255 inputs minus the per-pixel mean of ``mean_file``, by default
    ``ResNet_mean.binaryproto`` beside the model file: see :func:`_caffe_mean`)."""
    layers = read_caffemodel(path)
    state, variant = caffe_state_dict(layers, path)
    if "fc.weight" not in state or "layer1.0.conv1.weight" not in state:
        raise WeightsError(f"{path}: no MSRA ResNet layers (conv1, res2a_branch2a, ..., fc1000) found")
    name, kwargs = _resnet_from_keys(state, path, "caffe", variant=variant)
    kwargs["stem_pool"], pool_note = caffe_stem_pool(layers, path)
    model = _target(model_name, name, path, **kwargs)
    _load(model, state, path)
    mean, mean_note = _caffe_mean(path, mean_file)
    # inputs on the 0-255 scale: (x / 255 - mean / 255) / (1 / 255) = x - mean
    return Imported(model, mean, [1 / 255] * 3, _imagenet_classes(kwargs["num_classes"]),
                    note=f"{mean_note}; {pool_note}")


# ----------------------------------------------------------------------------- entry point


IMPORTERS: dict[str, Callable[..., Imported]] = {
    "akamaster": import_akamaster,
    "torchvision": import_torchvision,
    "timm": import_timm,
    "transformers": import_transformers,
    "caffe": import_caffe,
}


def import_weights(source: str, path: str | os.PathLike, out: str | os.PathLike,
                   model: str | None = None, mean_file: str | os.PathLike | None = None,
                   prefix: str | None = None) -> WeightsMeta:
    """Convert the checkpoint ``path`` from ``source`` into the resnetlab weights file ``out``.

    ``model`` forces the target architecture (a mismatch is refused naming the tensors);
    otherwise it is detected from the keys.  ``mean_file``: the Caffe models' per-pixel mean
    (``caffe`` only; default ``ResNet_mean.binaryproto`` beside ``path``).  ``prefix``: import
    only the tensors whose keys start with it (see :func:`read_state_dict`; not for ``caffe``).
    Returns the metadata written (its ``source`` says which mean a Caffe model subtracts).
    """
    if source not in IMPORTERS:
        raise WeightsError(f"unknown import source {source!r}; one of {', '.join(IMPORTERS)}")
    if mean_file is not None and source != "caffe":
        raise ConfigError(f"a mean file is for caffe imports; {source} checkpoints come with their normalization")
    if prefix and source == "caffe":
        raise ConfigError("--prefix selects keys of a PyTorch or safetensors checkpoint; a .caffemodel names layers")
    if source == "caffe":
        imported = import_caffe(Path(path), model, Path(mean_file) if mean_file is not None else None)
    else:
        imported = IMPORTERS[source](Path(path), model, prefix)
    note = f" ({imported.note})" if imported.note else ""
    save_weights(imported.model, out, mean=imported.mean, std=imported.std, classes=imported.classes,
                 source=f"{source}:{Path(path).name}{note}")
    return read_meta(out)
