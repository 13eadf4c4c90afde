"""Model-hub folders: ``model.safetensors`` + ``config.json`` + ``README.md`` (a model card).

This is the layout models are shared in on the Hugging Face hub, and the one timm reads.
:func:`save_pretrained` writes it; :func:`from_pretrained` rebuilds the model exactly from a
folder or from ``"hf-hub:ORG/NAME[@REVISION]"`` (through huggingface_hub's cache: the ``hub``
extra) and returns it, as Hugging Face and timm do, with its metadata on it.  ``model.safetensors``
is an ordinary resnetlab weights file (its metadata rebuilds the model); ``config.json`` repeats
that metadata for people and tools and adds timm's ``pretrained_cfg``, so that a network timm
builds identically (a ``variant="v1.5"`` ResNet with option-B shortcuts, a ResNet-D, ResNeXt or
ImageNet Wide ResNet) loads there with the same outputs::

    timm.create_model("resnet50", pretrained=True,
                      pretrained_cfg_overlay=dict(file="DIR/model.safetensors"))
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .analysis.complexity import complexity
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .data.transforms import resize_side
from .errors import ConfigError, WeightsError
from .evaluate import default_protocol
from .files import atomic_write_text
from .models.resnet import IMAGENET_WIDTHS
from .registry import model_info
from .weights import WeightsMeta, load_weights, read_json_object, read_meta, save_weights

__all__ = ["WEIGHTS_NAME", "CONFIG_NAME", "CARD_NAME", "HF_PREFIX", "save_pretrained", "from_pretrained",
           "hub_config", "pretrained_cfg", "model_card", "timm_equivalent"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
HF_PREFIX = "hf-hub:"
#: keys of a ``meta`` mapping given to :func:`save_pretrained`
META_KEYS = ("mean", "std", "classes", "source", "input_size", "evaluation")
#: columns of an evaluation result (the JSON line of ``resnetlab eval``) that the model card shows
EVAL_KEYS = ("dataset", "split", "protocol", "n", "top1_err", "top5_err")

#: registry paper reference (the part before the comma) -> (title, arXiv id)
PAPERS = {
    "He et al. 2015": ("Deep Residual Learning for Image Recognition", "arXiv:1512.03385"),
    "Krizhevsky et al. 2012": ("ImageNet Classification with Deep Convolutional Neural Networks", None),
    "Simonyan & Zisserman 2015": ("Very Deep Convolutional Networks for Large-Scale Image Recognition",
                                  "arXiv:1409.1556"),
    "Huang et al. 2017": ("Densely Connected Convolutional Networks", "arXiv:1608.06993"),
    "He et al. 2016": ("Identity Mappings in Deep Residual Networks", "arXiv:1603.05027"),
    "Xie et al. 2017": ("Aggregated Residual Transformations for Deep Neural Networks", "arXiv:1611.05431"),
    "Zagoruyko & Komodakis 2016": ("Wide Residual Networks", "arXiv:1605.07146"),
    "He et al. 2019": ("Bag of Tricks for Image Classification with Convolutional Neural Networks",
                       "arXiv:1812.01187"),
}

#: registry family -> what the network is, for the model card
FAMILY_TEXT = {
    "resnet": "residual network",
    "plain": "plain network (the residual network's stack with no shortcuts)",
    "cifar_resnet": "CIFAR residual network",
    "cifar_plain": "CIFAR plain network (no shortcuts)",
    "alexnet": "AlexNet",
    "vgg": "VGG network",
    "densenet": "densely connected network",
    "preact_resnet": "pre-activation residual network",
    "cifar_preact_resnet": "CIFAR pre-activation residual network",
    "resnext": "ResNeXt (aggregated residual transformations)",
    "wide_resnet": "wide residual network",
    "wrn": "CIFAR wide residual network",
    "resnet_d": "ResNet-D (deep stem, average-pool shortcuts)",
}

#: registry families whose every name timm builds identically under the same name (torchvision's
#: keys and layout) when the arguments are the ones checked in :func:`timm_equivalent`
TIMM_FAMILIES = ("resnet", "resnet_d", "resnext", "wide_resnet")

#: what a (kwarg, value) says about the network, for the model card
_ARGUMENT_TEXT = {
    ("variant", "v1"): "the paper's v1: a downsampling bottleneck strides on its first 1x1 conv, as the MSRA "
                       "Caffe models do",
    ("variant", "v1.5"): "v1.5: a downsampling bottleneck strides on its 3x3 conv, as torchvision and timm do",
    ("shortcut", "A"): "option A shortcuts: zero-padded identities where dimensions increase (section 4.1)",
    ("shortcut", "B"): "option B shortcuts: projections only where dimensions increase (section 4.1)",
    ("shortcut", "C"): "option C shortcuts: projections on every block (section 4.1)",
    ("stem_pool", "caffe"): "stem max pool as in the MSRA Caffe models: 3x3, stride 2, no padding, pooled sizes "
                            "rounded up",
    ("stem_pool", "torch"): "stem max pool as in torchvision: 3x3, stride 2, padding 1",
    ("stem", "deep"): "ResNet-C's deep stem: three 3x3 convs of 32, 32 and 64 filters in place of the 7x7 "
                      "(He et al. 2019)",
    ("shortcut_avg_down", True): "ResNet-D's shortcuts: 2x2 average pooling, then a stride-1 projection "
                                 "(He et al. 2019)",
}


def _first_conv_and_classifier(model: nn.Module) -> tuple[str | None, str | None]:
    """Module names of the first convolution and of the classifier (timm's ``first_conv`` and
    ``classifier``)."""
    names = {id(m): n for n, m in model.named_modules()}
    first = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    return first, names.get(id(head)) if head is not None else None


def _per_channel(values: Any) -> list[float]:
    """Per-channel values of a normalization (a per-pixel one averaged over the image)."""
    t = torch.as_tensor(values, dtype=torch.float64)
    return (t.mean(dim=(1, 2)) if t.dim() == 3 else t).tolist()


def timm_equivalent(meta: WeightsMeta) -> tuple[str | None, str]:
    """``(timm model name, why)``: the timm model that is this exact network (same keys, same
    outputs), or ``None`` and the reason it is not.

    timm's ``resnet18 ... resnet152``, ``resnet18d ... resnet152d``, ``resnext*`` and
    ``wide_resnet*`` stride on the 3x3 conv (``variant="v1.5"``), use option-B shortcuts,
    torchvision's stem pooling and Table 1's widths; other networks are not claimed.
    """
    info = model_info(meta.model)
    if info.family not in TIMM_FAMILIES:
        return None, f"timm has no network known to be identical to resnetlab's {meta.model}"
    builder = {k: p.default for k, p in inspect.signature(info.builder).parameters.items() if p.default is not p.empty}
    args = {**builder, **info.defaults, **meta.kwargs}
    differences = []
    if args["depth"] >= 50 and args["variant"] != "v1.5":
        differences.append(f"variant={args['variant']!r} strides on the first 1x1 conv, timm's on the 3x3")
    if args["shortcut"] != "B":
        differences.append(f"shortcut={args['shortcut']!r}, timm's are option B")
    if args.get("stem_pool", "torch") != "torch":
        differences.append("stem_pool='caffe' pools other windows than timm's padded max pool")
    if tuple(args.get("widths", IMAGENET_WIDTHS)) != IMAGENET_WIDTHS:
        differences.append(f"widths={list(args['widths'])}, timm's are {list(IMAGENET_WIDTHS)}")
    if args["in_chans"] != 3:
        differences.append(f"in_chans={args['in_chans']}")
    checked = {"num_classes", "zero_init_residual", "variant", "shortcut", "stem_pool", "widths", "in_chans"}
    differences += [f"{k}={v!r}, timm's {meta.model} has {info.defaults.get(k, builder.get(k))!r}"
                    for k, v in sorted(meta.kwargs.items()) if k not in checked]
    if differences:
        return None, f"not timm's {meta.model}: " + "; ".join(differences)
    return meta.model, f"timm's {meta.model} is the same network (torchvision's keys and layout)"


def pretrained_cfg(meta: WeightsMeta, model: nn.Module) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of a weights file: per-channel mean/std (a per-pixel mean averaged),
    resize and crop of resnetlab's test view, classes, first conv and classifier, the paper."""
    info = model_info(meta.model)
    side = meta.input_size[-1]
    protocol = default_protocol(meta.input_size)
    first_conv, classifier = _first_conv_and_classifier(model)
    title, arxiv = PAPERS.get(info.paper.split(",")[0], (None, None))
    cfg = {
        "architecture": meta.model,
        "input_size": list(meta.input_size),
        "fixed_input_size": False,  # global average pooling: any input size runs
        "interpolation": "bilinear",
        "crop_pct": 1.0 if protocol == "full" else side / resize_side(side),
        "crop_mode": "center",
        "mean": _per_channel(meta.mean),
        "std": _per_channel(meta.std),
        "num_classes": len(meta.classes),
        "label_names": list(meta.classes),
        "first_conv": first_conv,
        "classifier": classifier,
        "paper_name": title,
        "paper_ids": arxiv,
        "origin_url": None,
        "description": f"resnetlab {meta.model}; weights: {meta.source}",
    }
    return {k: v for k, v in cfg.items() if v is not None}


def hub_config(meta: WeightsMeta, model: nn.Module, evaluation: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The ``config.json`` of a hub folder: resnetlab's metadata, the evaluation results and
    timm's ``pretrained_cfg`` (:func:`pretrained_cfg`)."""
    info = model_info(meta.model)
    timm_name, timm_why = timm_equivalent(meta)
    return {
        "library": "resnetlab",
        "format_version": meta.format_version,
        "architecture": meta.model,
        "kwargs": meta.kwargs,
        "family": info.family,
        "paper": info.paper,
        "num_classes": len(meta.classes),
        "input_size": list(meta.input_size),
        "mean": meta.mean,
        "std": meta.std,
        "classes": list(meta.classes),
        "source": meta.source,
        "evaluation": [dict(e) for e in evaluation],
        "timm": {"model": timm_name, "note": timm_why},
        "pretrained_cfg": pretrained_cfg(meta, model),
    }


def _percent(value: Any) -> str:
    return f"{100 * value:.2f} %" if isinstance(value, (int, float)) else "-"


def model_card(meta: WeightsMeta, model: nn.Module, evaluation: Sequence[Mapping[str, Any]] = ()) -> str:
    """The ``README.md`` of a hub folder: what the model is, its paper, variant, complexity,
    input normalization, the source of the weights and the evaluation results given."""
    info = model_info(meta.model)
    title, arxiv = PAPERS.get(info.paper.split(",")[0], (None, None))
    counts = complexity(model, tuple(meta.input_size))
    timm_name, timm_why = timm_equivalent(meta)
    size = "x".join(map(str, meta.input_size[1:]))
    per_pixel = torch.as_tensor(meta.mean).dim() == 3
    lines = [
        "---",
        "library_name: resnetlab",
        "tags:",
        "- image-classification",
        "- resnetlab",
        *(["- timm"] if timm_name else []),
        "---",
        "",
        f"# {meta.model}",
        "",
        f"`{meta.model}` from resnetlab: a {FAMILY_TEXT.get(info.family, info.family)} ({info.paper}) with "
        f"{len(meta.classes)} classes, "
        f"{counts['params'] / 1e6:.2f} M parameters and {counts['macs'] / 1e9:.3f} G multiply-adds for one "
        f"{size} image.",
        "",
        "## Architecture",
        "",
        f"- Paper: {info.paper}" + (f": *{title}*" if title else "") + (f" ({arxiv})." if arxiv else "."),
    ]
    for key, value in sorted(meta.kwargs.items()):
        if key == "num_classes":
            continue
        if key == "widths":
            text = f"stage widths {list(value)} instead of Table 1's {list(IMAGENET_WIDTHS)}"
        elif key == "variant" and getattr(getattr(model, "block", None), "expansion", 1) == 1:  # not a bottleneck
            text = "no effect on basic blocks (it places the stride of a downsampling bottleneck)"
        else:
            text = _ARGUMENT_TEXT.get((key, value)) if isinstance(value, (str, int, float, bool)) else None
        lines.append(f"- `{key}={value!r}`" + (f": {text}." if text else "."))
    mean_text = "a per-pixel mean" if per_pixel else f"mean {[round(v, 4) for v in _per_channel(meta.mean)]}"
    lines += [
        "",
        "## Input",
        "",
        f"RGB images, {size} ({default_protocol(meta.input_size)} test view), on the [0, 1] scale minus "
        f"{mean_text}, divided by std {[round(v, 6) for v in _per_channel(meta.std)]}."
        + (" The per-pixel mean is in the weights file's metadata; `config.json`'s `pretrained_cfg` holds its "
           "per-channel average." if per_pixel else ""),
        f"Classes ({len(meta.classes)}): {', '.join(meta.classes[:5])}{', ...' if len(meta.classes) > 5 else '.'}",
        "",
        "## Weights",
        "",
        f"Source: {meta.source}.",
        "",
        "## Evaluation",
        "",
    ]
    if evaluation:
        lines += ["| dataset | split | protocol | images | top-1 error | top-5 error |",
                  "|---|---|---|---:|---:|---:|"]
        lines += [f"| {e['dataset']} | {e['split']} | {e['protocol']} | {e['n']} | {_percent(e['top1_err'])} | "
                  f"{_percent(e['top5_err'])} |" for e in evaluation]
    else:
        lines.append("No evaluation results were recorded with these weights.")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import resnetlab",
        "model = resnetlab.from_pretrained(\"DIR\")  # or \"hf-hub:ORG/NAME\"; metadata: model.pretrained_cfg",
        "```",
        "",
    ]
    if timm_name:
        lines += [f"In timm ({timm_why}), with this folder's normalization and classes:", "", "```python",
                  "import json, timm",
                  "cfg = json.load(open(\"DIR/config.json\"))[\"pretrained_cfg\"]",
                  f"model = timm.create_model(\"{timm_name}\", pretrained=True, num_classes={len(meta.classes)},",
                  "                          pretrained_cfg_overlay=dict(cfg, file=\"DIR/model.safetensors\"))",
                  "```", ""]
    else:
        lines += [f"Not for timm: {timm_why}.", ""]
    return "\n".join(lines)


def _check_evaluation(evaluation: Any) -> list[dict[str, Any]]:
    results = [evaluation] if isinstance(evaluation, Mapping) else list(evaluation)
    for result in results:
        missing = [k for k in EVAL_KEYS if not isinstance(result, Mapping) or k not in result]
        if missing:
            raise ConfigError(f"an evaluation result must be a mapping with {', '.join(EVAL_KEYS)} (the JSON line "
                              f"of `resnetlab eval`); missing {', '.join(missing)}")
    return [dict(r) for r in results]


def save_pretrained(model: nn.Module, directory: str | os.PathLike,
                    meta: WeightsMeta | Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as a hub folder ``directory``: ``model.safetensors``, ``config.json``, ``README.md``.

    ``meta`` is the :class:`~resnetlab.weights.WeightsMeta` that :func:`resnetlab.load_weights`
    returned, or a mapping with any of ``mean``, ``std`` (input normalization, [0, 1] RGB scale),
    ``classes``, ``source``, ``input_size`` and ``evaluation`` (a result of ``resnetlab eval``, or
    a list of them, shown in the model card).  Without normalization the ImageNet mean/std are
    written.  ``model`` must come from :func:`resnetlab.create_model`.  Returns the folder.
    """
    if meta is None:
        meta = {}
    if isinstance(meta, WeightsMeta):
        meta = {k: v for k, v in dataclasses.asdict(meta).items() if k in META_KEYS}
    unknown = sorted(set(meta) - set(META_KEYS))
    if unknown:
        raise ConfigError(f"save_pretrained: unknown meta key(s) {', '.join(map(repr, unknown))}; "
                          f"accepted: {', '.join(META_KEYS)}")
    evaluation = _check_evaluation(meta.get("evaluation", []))
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: exists and is not a folder")
    weights = directory / WEIGHTS_NAME
    save_weights(model, weights, mean=meta.get("mean", IMAGENET_MEAN), std=meta.get("std", IMAGENET_STD),
                 classes=meta.get("classes"), source=meta.get("source", "resnetlab"),
                 input_size=meta.get("input_size"))
    written = read_meta(weights)
    config = hub_config(written, model, evaluation)
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    atomic_write_text(directory / CARD_NAME, model_card(written, model, evaluation))
    return directory


def _hub_snapshot(repo: str, cache_dir: str | os.PathLike | None) -> Path:
    """The local folder of ``ORG/NAME[@REVISION]`` in huggingface_hub's cache (downloaded if needed
    and allowed)."""
    try:
        import huggingface_hub  # optional dependency: the `hub` extra
    except ImportError:
        raise ConfigError(f"{HF_PREFIX}{repo} needs huggingface_hub: pip install 'resnetlab[hub]'") from None
    repo_id, _, revision = repo.partition("@")
    try:
        folder = huggingface_hub.snapshot_download(repo_id, revision=revision or None, cache_dir=cache_dir,
                                                   allow_patterns=[WEIGHTS_NAME, CONFIG_NAME, CARD_NAME])
    except (OSError, ValueError, huggingface_hub.errors.EntryNotFoundError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{HF_PREFIX}{repo}: not available from the hub or its cache ({reason})") from None
    return Path(folder)


def from_pretrained(source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                    map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model of a hub folder, or of ``"hf-hub:ORG/NAME[@REVISION]"``, in eval mode, and
    return it, as Hugging Face and timm do (:func:`resnetlab.load_weights` returns ``(model, meta)``).

    The metadata rides on the model: ``model.pretrained_cfg`` is timm's dict (``architecture``,
    per-channel ``mean``/``std``, ``input_size``, ``crop_pct``, ``label_names``, ...), which timm's
    data helpers read; ``model.pretrained_meta`` is the weights file's exact
    :class:`~resnetlab.weights.WeightsMeta` (a per-pixel mean as it is, the source).  The
    architecture comes from ``model.safetensors``'s metadata; a ``config.json`` that says otherwise
    is refused.  ``cache_dir`` is huggingface_hub's cache folder (its default otherwise).
    """
    text = str(source)
    folder = _hub_snapshot(text[len(HF_PREFIX):], cache_dir) if text.startswith(HF_PREFIX) else Path(source)
    if not folder.is_dir():
        raise WeightsError(f"{source}: not a model folder (no such directory)")
    if not (folder / WEIGHTS_NAME).is_file():
        raise WeightsError(f"{source}: not a model folder (no {WEIGHTS_NAME})")
    model, meta = load_weights(folder / WEIGHTS_NAME, map_location=map_location)
    config = read_json_object(folder / CONFIG_NAME)
    said = (config.get("architecture"), config.get("kwargs"))
    if config and said != (meta.model, meta.kwargs):
        raise WeightsError(f"{folder / CONFIG_NAME}: says {said[0]!r} {said[1]}, "
                           f"but {WEIGHTS_NAME} holds {meta.model!r} {meta.kwargs}")
    model.pretrained_cfg = pretrained_cfg(meta, model)
    model.pretrained_meta = meta
    return model
