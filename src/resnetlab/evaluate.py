"""Test protocols of the paper (section 3.4, Tables 3-4), for any registered model.

- ``full``: the image as it is (CIFAR 32x32, section 4.2: "we only evaluate the single view
  of the original 32x32 image").
- ``center``: shorter side resized to 256, the central 224x224 crop.
- ``10crop``: "the standard 10-crop testing" (section 3.4): the 4 corner and the centre
  224x224 crops of the 256-resized image and their horizontal flips, scores averaged.
- ``multiscale``: "the fully-convolutional form as in [41, 13]", scores averaged at the
  shorter sides {224, 256, 384, 480, 640} and their flips (section 3.4, Table 4): the
  classifier runs as a 1x1 convolution over the last feature map of the whole image (VGG:
  fc6 as a 7x7 and fc7/fc8 as 1x1 convolutions, its paper's dense test).

Scores are softmax probabilities; views of one image are averaged.  Crop sizes follow the
weights' input size (224 on ImageNet): the resize side is ``crop * 256 / 224`` (the crop side
itself for CIFAR-size models).

Which protocol fits which model (:func:`check_protocol`, decided from the model before any image
is read): ``center`` and ``10crop`` fit every model (a CIFAR-size model's crops are cut from the
image resized to its own side: on 32x32 images ``10crop`` is the image and its flip); ``full``
needs a model that takes the data's images at their own size (AlexNet's fc6 takes only its
224x224 input; a CIFAR-size model fed images of another size is warned about); ``multiscale``
is the ImageNet test, refused for CIFAR-size models (input side <= 64), which the paper tests
on "the single view of the original 32x32 image" only (upscaled to 224-640 pixels, a CIFAR
ResNet that scores 86 % top-1 with ``full`` answered 12 %), and for a head that cannot run
fully-convolutionally (AlexNet's, whatever the image size).

Ensembles (the paper's 3.57 % top-5 on ImageNet came from six models, section 3.4): each model
gets the views of its own input size and normalization, its probabilities are averaged over
its views, then the models' probabilities are averaged.  A single model is an ensemble of one:
the same code path, the same numbers.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from .analysis.complexity import check_input_size
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .data import open_dataset
from .data.imagenet import IMAGENET_WNIDS, imagenet_class_names
from .data.transforms import SMALL_INPUT, center_view, normalize, resize_side
from .device import keep_freed_memory, resolve_device
from .errors import ConfigError, DataError, ImageError
from .machine import choose_threads
from .registry import create_model, model_info
from .weights import WeightsMeta, load_weights

__all__ = ["PROTOCOLS", "MULTISCALE_SIDES", "Member", "evaluate", "probabilities", "check_same_classes", "label_map",
           "center_view", "crop_views", "resize_side", "dense_head", "fully_convolutional_scores", "write_report",
           "default_protocol", "check_protocol", "load_model_or_weights", "run_eval"]

PROTOCOLS = ("full", "center", "10crop", "multiscale")
#: shorter sides of the multi-scale fully-convolutional test (section 3.4, Table 4)
MULTISCALE_SIDES = (224, 256, 384, 480, 640)
#: pixels one forward pass may hold, in units of 224x224 images per ``batch_size``
_PIXELS_PER_IMAGE = 224 * 224


@dataclass
class Member:
    """One model of an evaluation (an ensemble of one or more) and how its inputs are made.

    ``mean``/``std`` on the [0, 1] scale, per channel or per pixel (C x H x W); ``input_size``
    (C, H, W) sets the crop side of ``center`` and ``10crop`` (224 when None).
    """

    model: nn.Module
    mean: Any
    std: Any
    input_size: Sequence[int] | None = None

    def __post_init__(self) -> None:
        self.mean = torch.as_tensor(self.mean, dtype=torch.float32)  # once: a per-pixel mean is 150k numbers
        self.std = torch.as_tensor(self.std, dtype=torch.float32)

    @property
    def crop(self) -> int:
        """Side of the square test crop."""
        return int(self.input_size[-1]) if self.input_size is not None else 224

    @property
    def name(self) -> str:
        """The model's registered name, for messages."""
        return getattr(self.model, "resnetlab_name", type(self.model).__name__)


class _Views(Dataset):
    """Decodes one image and, for ``center``/``10crop``, cuts its views for each crop side in
    ``crops`` in the loader's workers; ``full``/``multiscale`` pass the image on. An unreadable
    image becomes its message, raised (or skipped) in the main process: a worker's exception
    would reach the user wrapped in its traceback."""

    def __init__(self, dataset: Dataset, protocol: str, crops: Sequence[int]) -> None:
        self.dataset, self.protocol, self.crops = dataset, protocol, tuple(crops)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[tuple[torch.Tensor, ...] | None, int, str | None]:
        try:
            image, target = self.dataset[i]
        except DataError as exc:
            return None, -1, str(exc)
        if self.protocol in ("full", "multiscale"):
            return (image,), int(target), None
        return tuple(crop_views(image, self.protocol, crop) for crop in self.crops), int(target), None


def crop_views(image: torch.Tensor, protocol: str, crop: int) -> torch.Tensor:
    """The test views ``V x C x crop x crop`` of one uint8 image under ``center`` (V = 1, see
    :func:`center_view`) or ``10crop`` (V = 10).

    10-crop is "the standard 10-crop testing" (section 3.4, after AlexNet): shorter side to
    :func:`resize_side`, the four corner crops and the centre crop (the ``center`` view), and
    the horizontal flips of those five crops.
    """
    if protocol == "center":
        return center_view(image, crop)[None]
    if protocol != "10crop":
        raise ConfigError(f"protocol {protocol!r} has no crops (center or 10crop)")
    image = TF.resize(image, [resize_side(crop)], antialias=True)
    h, w = image.shape[-2:]
    corners = [image[..., top:top + crop, left:left + crop] for top in (0, h - crop) for left in (0, w - crop)]
    five = torch.stack([*corners, TF.center_crop(image, [crop])])
    return torch.cat([five, five.flip(-1)])


def _collate(items: list[tuple[tuple[torch.Tensor, ...] | None, int, str | None]]
             ) -> tuple[list[list[torch.Tensor]], torch.Tensor, list[str]]:
    good = [(x, t) for x, t, error in items if error is None]
    return ([list(views) for views in zip(*(x for x, _ in good))], torch.tensor([t for _, t in good], dtype=torch.int64),
            [error for _, _, error in items if error is not None])


def _batches(dataset: Dataset, protocol: str, crops: Sequence[int], batch_size: int,
             num_workers: int) -> Iterator[tuple[list[list[torch.Tensor]], torch.Tensor, list[str]]]:
    """Batches of ``(inputs, targets, errors)``: ``inputs[j]`` lists the batch's uint8 images
    (``full``, ``multiscale``; j = 0) or their V x C x H x W views at crop side ``crops[j]``;
    ``errors`` names the batch's unreadable images, which are left out."""
    images = getattr(dataset, "images", None)
    if protocol == "full" and isinstance(images, torch.Tensor):
        targets = dataset.targets  # type: ignore[attr-defined]
        for start in range(0, len(images), batch_size):
            yield [list(images[start:start + batch_size])], torch.as_tensor(targets[start:start + batch_size]), []
        return
    loader = DataLoader(_Views(dataset, protocol, crops), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate, persistent_workers=False)
    yield from loader


def _mean_std_for(values: Any, size: tuple[int, int]) -> Any:
    """Per-pixel statistics (C x H x W) only fit images of their own size; other sizes get
    their per-channel average (the multi-scale test of a model trained with a per-pixel mean)."""
    t = torch.as_tensor(values, dtype=torch.float32)
    if t.dim() == 3 and tuple(t.shape[1:]) != tuple(size):
        return t.mean(dim=(1, 2))
    return t


def dense_head(model: nn.Module, features: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's head as a map from a feature map of any size to a class score map.

    A model's own ``forward_dense`` (VGG: fc layers as convolutions), or, for a global average
    pooling + linear head (ResNet, DenseNet), the linear layer as a 1x1 convolution.  Other
    heads are refused: ``features`` (one image's ``forward_features``) is used to check.
    """
    if callable(getattr(model, "forward_dense", None)):
        return model.forward_dense
    name = getattr(model, "resnetlab_name", type(model).__name__)
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, nn.Linear):
        raise ConfigError(f"{name}: no linear classifier (get_classifier); the multiscale protocol needs one")
    pooled = model.forward_head(features, pre_logits=True)
    if pooled.shape != features.shape[:2] or not torch.allclose(pooled, features.mean(dim=(2, 3)), atol=1e-4):
        raise ConfigError(
            f"{name}: its head is not global average pooling + one linear layer, so it cannot run "
            "fully-convolutionally (multiscale protocol); use --protocol 10crop"
        )
    weight = classifier.weight[:, :, None, None]
    return lambda f: F.conv2d(f, weight, classifier.bias)


def fully_convolutional_scores(
    model: nn.Module, x: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """Class scores of ``x`` (N x C x H x W, any size): the fully-convolutional head
    (:func:`dense_head`, found from the model when not given) over the last feature map, the
    score map averaged over positions (section 3.4, after [41, 13])."""
    features = model.forward_features(x)
    if head is None:
        head = dense_head(model, features[:1])
    return head(features).mean(dim=(2, 3))


def check_protocol(protocol: str, member: Member, device: torch.device | str = "cpu",
                   image_size: Sequence[int] | None = None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Refuse a protocol that does not fit the model, with the reason (see the module docstring);
    for ``multiscale``, return the model's fully-convolutional head (:func:`dense_head`).

    Decided from the model and its input size alone, whatever the images are; with ``image_size``
    (H, W of the data's images) ``full`` also checks that the model takes images of that size
    (and warns on stderr when a CIFAR-size model gets images of another size than its own).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    crop = member.crop
    if protocol == "multiscale" and crop <= SMALL_INPUT:
        raise ConfigError(f"{member.name} takes {crop}x{crop} images: protocol multiscale is the ImageNet test (the "
                          f"whole image at shorter sides {', '.join(map(str, MULTISCALE_SIDES))}, section 3.4), while a "
                          "CIFAR-size model is tested on the single view of its image (section 4.2); use --protocol "
                          "full")
    channels = int(member.input_size[0]) if member.input_size is not None else 3
    if protocol == "multiscale":
        probe = torch.randn(1, channels, crop, crop, generator=torch.Generator().manual_seed(0)).to(device)
        return dense_head(member.model, member.model.forward_features(probe))
    if protocol == "full" and image_size is not None and tuple(image_size) != (crop, crop):
        if crop <= SMALL_INPUT:
            print(f"resnetlab: warning: {member.name} takes {crop}x{crop} images and protocol full feeds the data's "
                  f"{image_size[1]}x{image_size[0]} images as they are; --protocol center resizes them to {crop}",
                  file=sys.stderr)
        try:
            check_input_size(member.model, (channels, *image_size))
        except ConfigError as exc:
            raise ConfigError(f"{exc}: protocol full feeds the data's images as they are, and its input is "
                              f"{crop}x{crop}; use --protocol center") from None
    return None


def _chunks(n: int, pixels: int, batch_size: int) -> Iterator[slice]:
    """Slices of ``n`` images of ``pixels`` each, keeping a pass near ``batch_size`` 224x224 images."""
    step = max(1, int(batch_size * _PIXELS_PER_IMAGE // max(pixels, 1)))
    for start in range(0, n, step):
        yield slice(start, start + step)


def _probabilities(member: Member, images: list[torch.Tensor], protocol: str, batch_size: int, device: torch.device,
                   head: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """Softmax scores (N x K) of one member on one batch of images (or of their views), views averaged."""
    model, mean, std = member.model, member.mean, member.std

    def run(x: torch.Tensor, fcn: bool) -> torch.Tensor:
        out = []
        h, w = x.shape[-2:]
        m, s = _mean_std_for(mean, (h, w)), _mean_std_for(std, (h, w))
        for part in _chunks(len(x), h * w, batch_size):
            xb = normalize(x[part].to(device, non_blocking=True), m.to(device), s.to(device))
            logits = fully_convolutional_scores(model, xb, head) if fcn else model(xb)
            out.append(logits.float().softmax(dim=1))
        return torch.cat(out)

    if protocol in ("full", "center", "10crop"):
        views = torch.stack(images)  # N x C x H x W, or N x V x C x H x W for crops
        if views.dim() == 4:
            views = views[:, None]
        n, v = views.shape[:2]
        return run(views.flatten(0, 1), fcn=False).view(n, v, -1).mean(dim=1)
    # multiscale: resize each image to every scale; batch images that share a resized shape.
    total: torch.Tensor | None = None
    for side in MULTISCALE_SIDES:
        groups: dict[tuple[int, int], list[int]] = {}
        resized = [TF.resize(img, [side], antialias=True) for img in images]
        for i, img in enumerate(resized):
            groups.setdefault(tuple(img.shape[-2:]), []).append(i)
        for idx in groups.values():
            x = torch.stack([resized[i] for i in idx])
            p = run(torch.cat([x, x.flip(-1)]), fcn=True).cpu()
            p = p.view(2, len(idx), -1).sum(dim=0)
            if total is None:
                total = p.new_zeros(len(images), p.shape[1])
            total[idx] += p
    return total / (2 * len(MULTISCALE_SIDES))


def _class_difference(a: Sequence[str], b: Sequence[str]) -> str | None:
    """How two class lists differ, in words (None when they are the same)."""
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} classes"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"class {i} is {x!r} vs {y!r}"
    return None


#: :func:`label_map`'s answer when no name matches: class i is output i
BY_INDEX = "by index: the names differ"


def label_map(data_classes: Sequence[str], model_classes: Sequence[str]) -> tuple[list[int] | None, str]:
    """Where each class of a data set is among a model's outputs: ``(the output index of each data
    class, or None when class i is output i; how they were matched, in words)``.

    Classes match by name (a folder holding some of the model's classes); ImageNet synset-id folders
    (``n01440764`` ...: ImageNet's ``val/``, or a subset such as Imagenette or ImageNet-R's 200) match
    a 1,000-class ImageNet model's outputs by the id's place in :data:`IMAGENET_WNIDS`; folders named
    by class number (ImageNetV2's ``0`` ... ``999``, which an image folder sorts as text: 0, 1, 10,
    100, ...) by that number.  Otherwise class i is output i, and how says the names differ.
    """
    outputs = len(model_classes)
    position = {name: i for i, name in enumerate(model_classes)}
    wnid_position = {wnid: i for i, wnid in enumerate(IMAGENET_WNIDS)} if outputs == len(IMAGENET_WNIDS) else {}
    for found, how in (([position.get(c) for c in data_classes], "by name"),
                       ([wnid_position.get(c) for c in data_classes], "by ImageNet synset id"),
                       ([int(c) if c.isdecimal() and int(c) < outputs else None for c in data_classes],
                        "by class number")):
        if None not in found:
            return (None if found == list(range(len(found))) else found), how
    return None, BY_INDEX


def check_same_classes(metas: Sequence[WeightsMeta], names: Sequence[str] | None = None) -> None:
    """Refuse an ensemble whose models do not share one class list (their probabilities are
    averaged class by class); ``names`` label the models in the message."""
    names = list(names) if names is not None else [meta.model for meta in metas]
    for name, meta in zip(names[1:], metas[1:]):
        difference = _class_difference(metas[0].classes, meta.classes)
        if difference is not None:
            raise ConfigError(f"{name} and {names[0]} predict different classes ({difference}); an ensemble "
                              "averages probabilities class by class, so its models must share the class list")


@torch.inference_mode()
def probabilities(
    members: Sequence[Member],
    dataset: Dataset,
    *,
    protocol: str = "center",
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int | None = None,
    skipped: list[str] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(probabilities, targets)`` of each batch of ``dataset`` (N x K on the CPU, and N).

    Each member's softmax probabilities are averaged over the protocol's views of its own
    input size and normalization (crops, or scales and flips), then averaged across members: an
    ensemble, and with one member the model alone.  ``dataset`` yields ``(uint8 C x H x W,
    target)``.  An unreadable image is a :class:`DataError` naming it; given a ``skipped`` list,
    such images are left out and their messages appended to it.  On a CPU it asks malloc to keep
    freed memory for reuse (:func:`~resnetlab.device.keep_freed_memory`, process-wide, as
    :func:`~resnetlab.train.train` does): the process then stays at its peak memory.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    if not members:
        raise ConfigError("no models to evaluate")
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()  # as in training: batches reuse the heap (1.4x images/s, BENCHMARKS.md)
    for member in members:
        member.model.to(device).eval()
    heads = [check_protocol(protocol, member, device) for member in members]
    checked_size = protocol != "full"
    crops = sorted({member.crop for member in members}) if protocol in ("center", "10crop") else [0]
    slot = [crops.index(member.crop) if protocol in ("center", "10crop") else 0 for member in members]
    if num_workers is None:
        in_memory = isinstance(getattr(dataset, "images", None), torch.Tensor)
        num_workers = 0 if in_memory else min(4, os.cpu_count() or 1)
    for inputs, targets, errors in _batches(dataset, protocol, crops, batch_size, num_workers):
        if errors and skipped is None:
            raise ImageError(errors[0])
        if errors:
            skipped.extend(errors)
        if len(targets) == 0:
            continue
        total: torch.Tensor | None = None
        if not checked_size:  # full: the models take the images at their own size
            for member in members:
                check_protocol(protocol, member, device, tuple(inputs[0][0].shape[-2:]))
            checked_size = True
        for i, member in enumerate(members):
            images = inputs[slot[i]]
            try:
                probs = _probabilities(member, images, protocol, batch_size, device, heads[i]).cpu()
            except RuntimeError as exc:
                if "stack expects each tensor to be equal size" in str(exc):
                    raise DataError("protocol 'full' needs images of one size; use --protocol center") from None
                raise
            if total is not None and probs.shape != total.shape:
                raise ConfigError(f"the models of an ensemble predict different numbers of classes "
                                  f"({total.shape[1]} vs {probs.shape[1]})")
            total = probs if total is None else total + probs
        yield total / len(members), targets


def evaluate(
    model: nn.Module | None = None,
    dataset: Dataset | None = None,
    *,
    models: Sequence[tuple[nn.Module, WeightsMeta]] | None = None,
    protocol: str | None = None,
    mean: Sequence | None = None,
    std: Sequence | None = None,
    input_size: Sequence[int] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int | None = None,
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
    skip_bad_images: bool = False,
    among: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Top-1/top-5 accuracy and error of ``model``, or of the ensemble ``models``, on ``dataset``
    under ``protocol`` (default: :func:`default_protocol` of the models' input size, as
    ``resnetlab eval`` chooses: ``full`` for CIFAR-size models, ``center`` for the others).

    ``evaluate(model, dataset)``: one model; its input normalization and size come from the
    weights' metadata that :func:`~resnetlab.weights.load_weights` and
    :func:`~resnetlab.hub.from_pretrained` attach to it (``model.pretrained_meta``), else they are
    given: ``mean``/``std`` on the [0, 1] scale (per channel or per pixel), ``input_size``
    (C, H, W; default: the registered model's) sets the crop side of ``center`` and ``10crop``.
    ``evaluate(models=[(model, meta), ...],
    dataset=...)``: an ensemble of ``(model, WeightsMeta)`` pairs as :func:`load_weights`
    returns them, each model fed with its own metadata's mean, std and input size (so these
    three arguments are refused); their class lists must agree.  Probabilities are averaged as
    :func:`probabilities` does.  ``dataset`` yields ``(uint8 C x H x W, target)``.  With
    ``out_dir``, per-class accuracy (``per_class.json``) and a confusion-matrix plot
    (``confusion.png``) are written there (see :func:`write_report`).  An unreadable image is a
    :class:`DataError` naming it; with ``skip_bad_images`` it is left out of ``n`` and named in
    ``skipped``.  ``among``: the only outputs an answer may be (the data set's classes among a
    model's, as ImageNet-A and ImageNet-R score their 200 classes with a 1,000-class model); by
    default every output.  Returns the eval JSON keys: ``protocol n correct top1_acc top5_acc
    top1_err top5_err`` (fractions), ``answers_among`` (how many outputs an answer could be) and
    ``seconds`` (and ``skipped`` when images were).
    """
    if (model is None) == (models is None):
        raise ConfigError("evaluate: give either a model (with mean and std) or models=[(model, meta), ...]")
    if models is not None:
        if mean is not None or std is not None or input_size is not None:
            raise ConfigError("evaluate(models=...) takes mean, std and input size from each model's metadata; "
                              "do not pass mean, std or input_size")
        if not models:
            raise ConfigError("evaluate(models=...) needs at least one (model, meta) pair")
        check_same_classes([meta for _, meta in models])
        members = [Member(m, meta.mean, meta.std, meta.input_size) for m, meta in models]
        classes = classes if classes is not None else models[0][1].classes
    else:
        meta = getattr(model, "pretrained_meta", None)
        mean = mean if mean is not None else getattr(meta, "mean", None)
        std = std if std is not None else getattr(meta, "std", None)
        if mean is None or std is None:
            raise ConfigError("evaluate(model, ...) needs the model's input normalization: a model from "
                              "load_weights or from_pretrained carries it, else pass mean and std")
        if input_size is None:
            name = getattr(model, "resnetlab_name", None)
            input_size = meta.input_size if meta is not None else model_info(name).input_size if name else None
        members = [Member(model, mean, std, input_size)]
    if dataset is None:
        raise ConfigError("evaluate: no data set given")
    if protocol is None:
        defaults = sorted({default_protocol((3, member.crop, member.crop)) for member in members})
        if len(defaults) > 1:
            raise ConfigError(f"the models' default protocols differ ({' and '.join(defaults)}); choose one "
                              "with --protocol")
        protocol = defaults[0]
    n_total = len(dataset)  # type: ignore[arg-type]
    if n_total == 0:
        raise DataError("the data set is empty")
    correct1 = correct5 = seen = 0
    confusion: torch.Tensor | None = None
    start = time.perf_counter()
    bar = tqdm(total=n_total, unit="img", desc=f"eval {protocol}", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        skipped: list[str] = []
        for probs, targets in probabilities(members, dataset, protocol=protocol, batch_size=batch_size,
                                            device=device, num_workers=num_workers,
                                            skipped=skipped if skip_bad_images else None):
            num_classes = probs.shape[1]
            if confusion is None:
                confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
                if among is not None and not (among and all(0 <= i < num_classes for i in among)):
                    raise ConfigError(f"among: the answers must be outputs 0..{num_classes - 1} (at least one)")
                allowed = torch.zeros(num_classes, dtype=torch.bool)
                allowed[list(among) if among is not None else slice(None)] = True
            if targets.max() >= num_classes or targets.min() < 0:
                raise DataError(f"data set has class index {int(targets.max())} but the model has "
                                f"{num_classes} outputs")
            top = probs.masked_fill(~allowed, -1.0).topk(min(5, int(allowed.sum())), dim=1).indices
            hits = top == targets[:, None]
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
            confusion.index_put_((targets, top[:, 0]), torch.ones(len(targets), dtype=torch.int64), accumulate=True)
            seen += len(targets)
            bar.update(len(targets))
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if seen == 0:
        raise DataError(f"none of the {n_total} images could be read; the first: {skipped[0]}")
    # errors as (n - correct) / n: 1 - 0.93 prints as 0.06999999999999995
    result = {
        "protocol": protocol,
        "n": seen,
        "correct": correct1,
        "top1_acc": correct1 / seen,
        "top5_acc": correct5 / seen,
        "top1_err": (seen - correct1) / seen,
        "top5_err": (seen - correct5) / seen,
        "answers_among": int(allowed.sum()),
        "seconds": round(seconds, 3),
    }
    if skipped:
        result["skipped"] = skipped
    if out_dir is not None and confusion is not None:
        write_report(out_dir, confusion, classes, result)
    return result


def write_report(out_dir: str | os.PathLike, confusion: torch.Tensor, classes: Sequence[str] | None,
                 result: dict[str, Any]) -> None:
    """Write ``per_class.json`` (accuracy and count of every class), ``eval.json`` and
    ``confusion.png`` (rows: true class, columns: predicted, normalised per row) into ``out_dir``."""
    import matplotlib  # heavy (about a second); only the report files need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # as above, after choosing the file-only backend

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = confusion.shape[0]
    names = list(classes) if classes is not None and len(classes) == k else [str(i) for i in range(k)]
    counts = confusion.sum(dim=1)
    per_class = {  # Python ints divided: a float32 tensor ratio prints 0.9 as 0.8999999761581421
        name: {"n": int(counts[i]), "top1_acc": (int(confusion[i, i]) / int(counts[i]) if counts[i] else None)}
        for i, name in enumerate(names)
    }
    (out / "per_class.json").write_text(json.dumps(per_class, indent=1) + "\n")
    (out / "eval.json").write_text(json.dumps(result) + "\n")
    rates = confusion.double() / counts.clamp(min=1)[:, None].double()
    side = min(12.0, 3 + 0.4 * k)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        ax.set_xticks(range(k), names, rotation=90)
        ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion ({result['protocol']}, top-1 {100 * result['top1_acc']:.2f} %, n={result['n']})")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=100)
    plt.close(fig)


def default_protocol(input_size: Sequence[int]) -> str:
    """``full`` for small-image models (CIFAR, digits: "the single view of the original 32x32
    image", section 4.2), ``center`` for ImageNet-size ones."""
    return "full" if input_size[-1] <= SMALL_INPUT else "center"


def load_model_or_weights(target: str, device: str = "cpu") -> tuple[nn.Module, WeightsMeta, bool]:
    """``(model, meta, pretrained)`` from a weights file, or a registered model name with random
    weights (``pretrained`` False; ImageNet normalization, the registry's input size)."""
    if Path(target).suffix == ".safetensors" or Path(target).is_file():
        model, meta = load_weights(target, map_location=device)
        return model, meta, True
    model = create_model(target)
    info = model_info(target)
    n = model.resnetlab_kwargs["num_classes"]
    meta = WeightsMeta(target, dict(model.resnetlab_kwargs), list(IMAGENET_MEAN), list(IMAGENET_STD),
                       tuple(info.input_size), [str(i) for i in range(n)], "random initialisation")
    return model.to(device).eval(), meta, False


def run_eval(
    targets: str | os.PathLike | Sequence[str | os.PathLike],
    data: str,
    *,
    split: str = "test",
    protocol: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    threads: int = 0,
    data_classes_only: bool = False,
) -> dict[str, Any]:
    """``resnetlab eval``: evaluate a weights file (or a bare model name, random weights), or an
    ensemble of several, on the ``split`` of the data spec ``data``; returns the eval
    JSON object plus ``models`` (the targets) and ``ensemble`` (more than one).  ``device``
    ``auto`` picks CUDA when available.

    Normalization, input size and class names come from each weights file; an ensemble's
    models must share the class list.  A model whose classes differ from the data set's is
    refused (count) or warned about (names) on stderr.  The protocol defaults to the models'
    common default (:func:`default_protocol`).  ``threads``: CPU threads (0: the automatic
    choice of :func:`resnetlab.machine.choose_threads`), said on stderr with the progress.
    ``data_classes_only``: an answer is one of the data set's classes, not any of the model's
    outputs (ImageNet-A/R's published protocol for their 200 classes; see :func:`evaluate`).
    """
    names = [str(targets)] if isinstance(targets, (str, os.PathLike)) else [str(t) for t in targets]
    if not names:
        raise ConfigError("no model or weights file to evaluate")
    device = str(resolve_device(device))
    loaded = [load_model_or_weights(name, device) for name in names]
    metas = [meta for _, meta, _ in loaded]
    check_same_classes(metas, names)
    for name, (_, _, pretrained) in zip(names, loaded):
        if not pretrained:
            print(f"resnetlab: note: {name!r} is a model name, not a weights file: evaluating random weights",
                  file=sys.stderr)
    if protocol is not None:  # refused before any image is read
        for model, m, _ in loaded:
            check_protocol(protocol, Member(model, m.mean, m.std, m.input_size), device)
    meta = metas[0]
    dataset = open_dataset(data, split)
    if len(dataset.classes) > len(meta.classes):
        raise DataError(f"{data} has {len(dataset.classes)} classes but {names[0]} predicts {len(meta.classes)}")
    index_of, labels = label_map(dataset.classes, meta.classes)
    from_files = any(pretrained for _, _, pretrained in loaded)  # random weights have no classes to match
    if from_files and labels == BY_INDEX:
        print(f"resnetlab: warning: class names of {data} differ from the weights' ({dataset.classes[:3]}... vs "
              f"{meta.classes[:3]}...); comparing by index", file=sys.stderr)
    elif from_files and (index_of is not None or labels != "by name"):
        print(f"resnetlab: {data}: its {len(dataset.classes)} classes are found among the model's "
              f"{len(meta.classes)} outputs {labels}", file=sys.stderr)
    if index_of is not None:
        dataset = dataset.relabelled(index_of, meta.classes)
    threads_line = choose_threads(threads)
    if progress:
        print(f"resnetlab: evaluating on {device}, {threads_line}", file=sys.stderr)
    among = (index_of or list(range(len(dataset.classes)))) if data_classes_only else None
    result = evaluate(models=[(model, m) for model, m, _ in loaded], dataset=dataset, protocol=protocol,
                      batch_size=batch_size, device=device, progress=progress, out_dir=out_dir, among=among)
    single = len(names) == 1
    return {"model": "+".join(m.model for m in metas), "weights": names[0] if single and loaded[0][2] else None,
            "labels": labels,
            "models": names, "ensemble": not single, "dataset": dataset.name, "split": split, **result}
