"""Faster R-CNN with resnetlab backbones, built on ``torchvision.models.detection``.

``fasterrcnn_resnet101_c4`` is the design of the paper's appendix A: conv1..conv4_x compute
the shared full-image features at stride 16; RoI pooling (RoIPool, as in the paper; RoIAlign on
request) cuts each proposal from conv4_x; conv5_x, its first block striding, and global average
pooling run per region, as VGG-16's fc layers did; two sibling layers give class scores and box
offsets.  BN is a constant scale and shift (statistics and affine parameters frozen, appendix A);
conv1 and conv2_x are frozen too (``trainable_stages=3``: conv3_x..conv5_x train).  Any resnetlab
backbone fits the same design (``backbone=NAME``): its last feature stage is the per-region head,
the stages before it the shared trunk.  ``fasterrcnn_resnet50_fpn`` is the modern comparison
(Lin et al. 2017): conv2_x..conv5_x through torchvision's feature pyramid and RoIAlign.

The RPN, anchor generator (3 scales x 3 ratios), RoI sampling, box coding, NMS and the
image transform (shorter side 600, longer at most 1000; mean/std of the backbone's weights)
are torchvision's.
"""

from __future__ import annotations

import inspect
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign, roi_align, roi_pool
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError, UnknownModelError, WeightsError
from ..files import atomic_save
from ..models.features import FeatureNet
from ..registry import create_model, model_info
from ..weights import DETECTOR_FORMAT, PREFIX, check_state_dict, load_weights, read_header

__all__ = [
    "DETECTORS",
    "DetectorSpec",
    "DetectorMeta",
    "create_detector",
    "list_detectors",
    "freeze_batchnorm",
    "save_detector",
    "load_detector",
    "read_detector_meta",
    "build_from_meta",
]

#: Faster R-CNN (Ren et al. 2015) anchors, used by the paper: 3 scales x 3 aspect ratios
ANCHOR_SIZES = (128, 256, 512)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
#: appendix A / Faster R-CNN: shorter side 600, longer side at most 1000
MIN_SIZE, MAX_SIZE = 600, 1000


@dataclass(frozen=True)
class DetectorSpec:
    """A registered detector: its backbone model name and design (``c4`` or ``fpn``)."""

    name: str
    backbone: str
    design: str
    paper: str


DETECTORS: dict[str, DetectorSpec] = {
    s.name: s
    for s in (
        DetectorSpec("fasterrcnn_resnet101_c4", "resnet101", "c4", "He et al. 2015, appendix A"),
        DetectorSpec("fasterrcnn_resnet50_c4", "resnet50", "c4", "He et al. 2015, appendix A (ResNet-50)"),
        DetectorSpec("fasterrcnn_resnet18_c4", "resnet18", "c4", "He et al. 2015, appendix A (ResNet-18)"),
        DetectorSpec("fasterrcnn_resnet50_fpn", "resnet50", "fpn", "Lin et al. 2017 (FPN), torchvision's design"),
        # the C4 design on the CIFAR ResNet-20 (trunk conv1..conv3_x at stride 2, conv4_x per region): the
        # shapes demo's detector, small enough to train on a CPU
        DetectorSpec("fasterrcnn_cifar_resnet20_c4", "cifar_resnet20", "c4", "resnetlab (the appendix A design)"),
    )
}


def list_detectors() -> list[str]:
    """Registered detector names (any resnetlab backbone also works through ``backbone=NAME``)."""
    return list(DETECTORS)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a ``FrozenBatchNorm2d`` holding the same
    statistics and affine parameters: BN becomes a constant scale and shift (appendix A)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


class C4Trunk(nn.Module):
    """The shared full-image layers (conv1..conv4_x for a ResNet): one map at stride ``reduction``."""

    def __init__(self, stages: nn.ModuleList, out_channels: int, reduction: int) -> None:
        super().__init__()
        self.body = stages
        self.out_channels = out_channels
        self.reduction = reduction

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for stage in self.body:
            x = stage(x)
        return OrderedDict([("0", x)])


class C4RoIPool(MultiScaleRoIAlign):
    """RoIPool (Fast R-CNN; the paper's) or RoIAlign of each proposal from the trunk's one map at
    the trunk's known stride (a ``MultiScaleRoIAlign`` subclass: torchvision's FasterRCNN takes that type)."""

    def __init__(self, output_size: int, reduction: int, align: bool) -> None:
        super().__init__(["0"], output_size, sampling_ratio=2)
        self.size = output_size
        self.spatial_scale = 1.0 / reduction
        self.align = align

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        x = features["0"]
        if self.align:
            return roi_align(x, proposals, self.size, self.spatial_scale, sampling_ratio=2, aligned=True)
        return roi_pool(x, proposals, self.size, self.spatial_scale)


class C4Head(nn.Module):
    """The per-region layers: the backbone's last stage (conv5_x, first block striding) and
    global average pooling, giving one vector per RoI (appendix A)."""

    def __init__(self, stage: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.stage = stage
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(torch.mean(self.stage(x), dim=(2, 3)), 1)


class FPNBackbone(nn.Module):
    """conv2_x..conv5_x through torchvision's FeaturePyramidNetwork (+ a max-pooled top level)."""

    def __init__(self, body: FeatureNet, out_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        self.fpn = torchvision.ops.FeaturePyramidNetwork(body.feature_info.channels(), out_channels,
                                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.body(x)
        return self.fpn(OrderedDict([(str(i), m) for i, m in enumerate(maps)]))


def _set_trainable(stages: Sequence[nn.Module], trainable_stages: int) -> None:
    """Freeze the first ``len(stages) - trainable_stages`` stages (conv1 = stage 0)."""
    if not 0 <= trainable_stages <= len(stages):
        raise ConfigError(f"trainable_stages must be in 0..{len(stages)} (stages conv1, conv2_x, ...), "
                          f"got {trainable_stages}")
    for i, stage in enumerate(stages):
        for p in stage.parameters():
            p.requires_grad_(i >= len(stages) - trainable_stages)


def _architecture(name: str, model: nn.Module) -> dict[str, Any]:
    """Every argument that builds the classification ``model`` (of registered name ``name``) as
    its builder's defaults made explicit, JSON-ready, without ``num_classes`` (the detector drops
    the classifier): what a detector file must record to rebuild its backbone exactly, whatever
    the builder's defaults become later (``variant``, ``stem_pool``, ``widths`` ...)."""
    info = model_info(name)
    full = {p.name: p.default for p in inspect.signature(info.builder).parameters.values()
            if p.default is not p.empty}
    full.update(getattr(model, "resnetlab_kwargs", {}))
    for fixed in ("num_classes", *info.defaults):  # the name fixes these
        full.pop(fixed, None)
    return json.loads(json.dumps(full))  # tuples as lists, as a weights file holds them


def _backbone(backbone: str, backbone_weights: str | os.PathLike | None, backbone_kwargs: dict[str, Any]
              ) -> tuple[nn.Module, tuple, tuple]:
    """The classification model (random init, or a weights file's) and its per-channel input mean/std.

    A weights file of another model, or one built with other arguments than ``backbone_kwargs``
    asks for, is refused naming the difference; without ``backbone_kwargs`` the file's are used
    (a torchvision import is ``variant="v1.5"``).
    """
    if backbone_weights is None:
        model_info(backbone)  # an unknown name is an UnknownModelError here
        return create_model(backbone, **backbone_kwargs), IMAGENET_MEAN, IMAGENET_STD
    model, meta = load_weights(backbone_weights)
    if meta.model != backbone:
        raise WeightsError(f"{backbone_weights}: holds {meta.model}, but the detector's backbone is {backbone} "
                           f"(pass backbone={meta.model} to use it)")
    built = _architecture(backbone, model)
    asked = json.loads(json.dumps(backbone_kwargs))
    differ = [f"{k}={built.get(k)!r} in the file, {v!r} asked" for k, v in asked.items() if built.get(k) != v]
    if differ:
        raise WeightsError(f"{backbone_weights}: the backbone does not fit: {'; '.join(differ)}")
    if meta.input_size[0] != 3:
        raise WeightsError(f"{backbone_weights}: takes {meta.input_size[0]}-channel input; detection images are RGB")
    return model.train(), _per_channel(meta.mean), _per_channel(meta.std)


def _per_channel(values: list) -> tuple[float, ...]:
    """A per-pixel mean (Caffe's mean image) becomes its per-channel average: detector inputs have
    any size, and Faster R-CNN subtracts per-channel ``PIXEL_MEANS`` likewise."""
    t = torch.as_tensor(values, dtype=torch.float64)
    return tuple(float(v) for v in (t if t.dim() == 1 else t.mean(dim=(1, 2))))


def create_detector(
    name: str,
    num_classes: int,
    backbone_weights: str | os.PathLike | None = None,
    *,
    backbone: str | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    trainable_stages: int = 3,
    frozen_bn: bool = True,
    roi_pool: str = "roipool",
    roi_output_size: int = 14,
    anchor_sizes: Sequence[int] = ANCHOR_SIZES,
    aspect_ratios: Sequence[float] = ASPECT_RATIOS,
    min_size: int = MIN_SIZE,
    max_size: int = MAX_SIZE,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    **detector_kwargs: Any,
) -> FasterRCNN:
    """Build the detector ``name`` (see :func:`list_detectors`) for ``num_classes`` object classes.

    Args:
        backbone_weights: a resnetlab weights file of the backbone (e.g. imported ImageNet weights);
            its architecture must be the backbone's, and its mean/std become the transform's.
        backbone: any resnetlab model name in place of the registered backbone.
        backbone_kwargs: its model arguments (``variant="v1.5"`` ...).
        trainable_stages: stages trained, counted from the top (conv1 is stage 0): 3 trains
            conv3_x..conv5_x, freezing conv1 and conv2_x (appendix A); 5 trains everything.
        frozen_bn: BN as a constant scale and shift (appendix A); ``False`` keeps ordinary BN,
            trained with batch statistics (for training from scratch).
        roi_pool: ``"roipool"`` (the paper's) or ``"roialign"``; C4 only (FPN uses torchvision's
            multi-scale RoIAlign).
        roi_output_size: RoI grid fed to the per-region head (14: conv5_x's stride gives 7x7).
        anchor_sizes, aspect_ratios: the RPN's anchors (C4: every size and ratio on the one map;
            FPN: one size per pyramid level, default 32..512).
        min_size, max_size: the transform's shorter / longest side (600 / 1000).
        image_mean, image_std: input normalization without ``backbone_weights`` (default ImageNet's).
        detector_kwargs: other ``torchvision.models.detection.FasterRCNN`` arguments
            (``rpn_post_nms_top_n_test``, ``box_batch_size_per_image``, ...).
    """
    if name not in DETECTORS:
        raise UnknownModelError(f"unknown detector {name!r}; registered: {', '.join(DETECTORS)} "
                                "(any resnetlab backbone with backbone=NAME)")
    spec = DETECTORS[name]
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer (object classes, no background), got {num_classes!r}")
    if roi_pool not in ("roipool", "roialign"):
        raise ConfigError(f"roi_pool={roi_pool!r} is not one of 'roipool', 'roialign'")
    if backbone_weights is not None and (image_mean is not None or image_std is not None):
        raise ConfigError("image_mean/image_std come from backbone_weights; do not give both")
    backbone = backbone or spec.backbone
    classifier, mean, std = _backbone(backbone, backbone_weights, dict(backbone_kwargs or {}))
    mean = tuple(image_mean) if image_mean is not None else mean
    std = tuple(image_std) if image_std is not None else std
    infos = classifier.feature_stages()
    if len(infos) < 3:
        raise ConfigError(f"{backbone} has too few stages for a detector backbone")
    common = dict(min_size=min_size, max_size=max_size, image_mean=list(mean), image_std=list(std))
    if spec.design == "c4":
        stages = list(FeatureNet(classifier, out_indices=tuple(range(len(infos)))).stages)
        if frozen_bn:
            freeze_batchnorm(nn.ModuleList(stages))
        _set_trainable(stages, trainable_stages)
        trunk = C4Trunk(nn.ModuleList(stages[:-1]), infos[-2].channels, infos[-2].reduction)
        head = C4Head(stages[-1], infos[-1].channels)
        anchors = AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(aspect_ratios),))
        detector = FasterRCNN(
            trunk, num_classes=None, rpn_anchor_generator=anchors,
            box_roi_pool=C4RoIPool(roi_output_size, trunk.reduction, align=roi_pool == "roialign"),
            box_head=head, box_predictor=FastRCNNPredictor(head.out_channels, num_classes + 1),
            **common, **detector_kwargs,
        )
    else:
        if roi_pool != "roipool" or roi_output_size != 14:
            raise ConfigError("roi_pool and roi_output_size are C4 options; the FPN detector uses torchvision's "
                              "7x7 multi-scale RoIAlign")
        body = FPNBackbone(FeatureNet(classifier))
        if frozen_bn:
            freeze_batchnorm(body.body)
        _set_trainable(list(body.body.stages), trainable_stages)
        levels = len(body.body.feature_info) + 1  # + the max-pooled top level
        sizes = (32, 64, 128, 256, 512)[:levels] if tuple(anchor_sizes) == ANCHOR_SIZES else tuple(anchor_sizes)
        if len(sizes) != levels:
            raise ConfigError(f"the FPN detector needs one anchor size per level ({levels}), got {list(anchor_sizes)}")
        anchors = AnchorGenerator(sizes=tuple((s,) for s in sizes), aspect_ratios=(tuple(aspect_ratios),) * levels)
        pool = MultiScaleRoIAlign([str(i) for i in range(levels - 1)], output_size=7, sampling_ratio=2)
        detector = FasterRCNN(body, num_classes=num_classes + 1, rpn_anchor_generator=anchors, box_roi_pool=pool,
                              **common, **detector_kwargs)
    detector.resnetlab_name = name
    # everything that rebuilds this network (a plain attribute, not in the state dict): what a
    # detector weights file records, the backbone's architecture in full (model arguments that keep
    # the same keys and shapes, such as variant or stem_pool, would otherwise pass a strict load)
    detector.resnetlab_kwargs = json.loads(json.dumps(dict(
        backbone=backbone, backbone_kwargs=_architecture(backbone, classifier), trainable_stages=trainable_stages,
        frozen_bn=frozen_bn, roi_pool=roi_pool, roi_output_size=roi_output_size, anchor_sizes=list(anchor_sizes),
        aspect_ratios=list(aspect_ratios), min_size=min_size, max_size=max_size, **detector_kwargs)))
    return detector


# ----------------------------------------------------------------------------- weight files


@dataclass(frozen=True)
class DetectorMeta:
    """Metadata of a detector weights file: enough to rebuild it and name its classes.

    ``kwargs`` are :func:`create_detector`'s (the backbone's architecture in full, see
    ``resnetlab_kwargs``); ``classes`` the object classes of labels 1..K and ``category_ids`` the
    data set's own id of each (COCO's 1..90 with gaps; 1..K for VOC, shapes and VOC-XML folders).
    """

    detector: str
    kwargs: dict[str, Any]
    classes: list[str]
    mean: list[float]
    std: list[float]
    source: str
    category_ids: list[int]

    def to_metadata(self) -> dict[str, str]:
        """The safetensors string metadata (``resnetlab.*`` keys)."""
        return {PREFIX + "format": DETECTOR_FORMAT, PREFIX + "detector": self.detector,
                PREFIX + "kwargs": json.dumps(self.kwargs, sort_keys=True), PREFIX + "classes": json.dumps(self.classes),
                PREFIX + "category_ids": json.dumps(self.category_ids),
                PREFIX + "mean": json.dumps(self.mean), PREFIX + "std": json.dumps(self.std),
                PREFIX + "source": self.source}


#: what a detector file's ``resnetlab.kwargs`` must name to rebuild its backbone exactly
_REBUILD_KEYS = ("backbone", "backbone_kwargs")


def read_detector_meta(path: str | os.PathLike) -> DetectorMeta:
    """The metadata of the detector weights file ``path`` (no tensors read); a classification
    weights file, a corrupt one, or one that does not record its backbone's architecture and
    its classes' ids is a :class:`WeightsError`."""
    meta = read_header(Path(path)).get("__metadata__") or {}
    if meta.get(PREFIX + "format") != DETECTOR_FORMAT:
        what = "a classification weights file" if PREFIX + "model" in meta else "not a resnetlab detector file"
        raise WeightsError(f"{path}: {what}; `resnetlab detect` needs the final.safetensors of a `detect train` run")
    try:
        out = DetectorMeta(meta[PREFIX + "detector"], json.loads(meta[PREFIX + "kwargs"]),
                           json.loads(meta[PREFIX + "classes"]), json.loads(meta[PREFIX + "mean"]),
                           json.loads(meta[PREFIX + "std"]), meta.get(PREFIX + "source", ""),
                           json.loads(meta.get(PREFIX + "category_ids", "null")))
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: corrupt detector metadata ({type(exc).__name__}: {exc})") from None
    if not (isinstance(out.classes, list) and out.classes and isinstance(out.kwargs, dict)):
        raise WeightsError(f"{path}: corrupt detector metadata (classes, kwargs)")
    if any(k not in out.kwargs for k in _REBUILD_KEYS) or not isinstance(out.category_ids, list):
        raise WeightsError(f"{path}: does not record its backbone's architecture and its classes' data set ids "
                           "(written by an older resnetlab); it cannot be rebuilt for certain: train it again")
    if len(out.category_ids) != len(out.classes):
        raise WeightsError(f"{path}: corrupt detector metadata ({len(out.category_ids)} category ids for "
                           f"{len(out.classes)} classes)")
    return out


def save_detector(detector: nn.Module, path: str | os.PathLike, meta: DetectorMeta) -> None:
    """Write the detector's weights and ``meta`` as safetensors (atomically)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in detector.state_dict().items()}
    atomic_save(path, lambda tmp: save_file(tensors, tmp, metadata=meta.to_metadata()))


def build_from_meta(meta: DetectorMeta) -> FasterRCNN:
    """The detector a weights file describes (random weights)."""
    try:
        return create_detector(meta.detector, len(meta.classes), image_mean=meta.mean, image_std=meta.std,
                               **meta.kwargs)
    except (ConfigError, UnknownModelError) as exc:
        raise WeightsError(f"cannot build {meta.detector!r} from its metadata: {exc}") from None


def load_detector(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[FasterRCNN, DetectorMeta]:
    """Rebuild the detector of the weights file ``path`` and load it strictly; eval mode."""
    meta = read_detector_meta(path)
    detector = build_from_meta(meta)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: cannot read tensors: {exc}") from None
    check_state_dict(detector, state, str(path))
    detector.load_state_dict(state, strict=True)
    return detector.to(map_location).eval(), meta
