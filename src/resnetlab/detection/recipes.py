"""Detection recipes as data: one frozen :class:`DetectConfig` per recipe, overridable as ``key=value``.

Numbers follow the paper's appendix A, which takes its settings from Faster R-CNN (Ren et al.
2015, and its authors' code, py-faster-rcnn): shorter side 600 (longer at most 1000),
horizontal flips, momentum 0.9, weight decay 0.0005; VOC: anchors of 3 scales x 3 ratios, one
image per mini-batch, lr 0.001 for 60k mini-batches then 0.0001 for 20k; COCO: a fourth anchor
scale (64 squared), 8 images per mini-batch, 240k iterations at 0.001 then 80k at 0.0001.
Where torchvision's Faster R-CNN cannot do what the papers did, :data:`DEPARTURES` says so; it
is part of each recipe's description, of the run folder's ``config.json`` and of REPORT.md.
``shapes_demo`` is ours: the same design, small enough for a CPU and the synthetic ``--data shapes``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..config import apply_overrides, parse_overrides
from ..errors import ConfigError

__all__ = ["DetectConfig", "DETECT_RECIPES", "DEPARTURES", "get_detect_recipe"]


@dataclass(frozen=True)
class DetectConfig:
    """Every knob of a detection run; lengths and milestones count iterations (mini-batches)."""

    # --- detector
    model: str = "fasterrcnn_resnet101_c4"
    backbone: str = ""  # "" = the detector's own; any resnetlab model name otherwise
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)  # e.g. {"variant": "v1.5"}
    backbone_weights: str = ""  # a resnetlab weights file ("" = random init: then frozen_bn=false)
    trainable_stages: int = 3  # conv3_x..conv5_x train; conv1, conv2_x frozen (Detectron's practice)
    frozen_bn: bool = True  # BN as a constant scale and shift (appendix A)
    roi_pool: Literal["roipool", "roialign"] = "roipool"  # C4 only
    roi_output_size: int = 14  # C4 only
    anchor_sizes: tuple[int, ...] = (128, 256, 512)  # box sides (areas 128^2 ...), 3 ratios each
    min_size: int = 600
    max_size: int = 1000
    rpn_pre_nms_top_n_train: int = 2000  # proposals kept before the RPN's NMS (torchvision's default)
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 300  # Faster R-CNN tests on 300 proposals
    box_batch_size_per_image: int = 128  # Fast R-CNN: 128 RoIs per image, 25 % foreground
    box_nms_thresh: float = 0.5  # NMS of the final detections, per class (torchvision's default)
    # --- data
    data: str = ""  # default --data ("" = must be given)
    train_split: str = "train"
    val_split: str = "val"
    flip: bool = True
    train_difficult: bool = False  # train on VOC "difficult" objects (py-faster-rcnn: no, use_diff=False)
    skip_bad_images: bool = False
    # --- optimisation
    batch_size: int = 1  # images per mini-batch (Faster R-CNN: 1 per GPU)
    accumulate: int = 1  # micro-batches per mini-batch (same gradient: BN is frozen, losses are means)
    iterations: int = 80_000
    lr: float = 0.001
    milestones: tuple[int, ...] = (60_000,)
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0005
    bias_lr_mult: float = 1.0  # lr factor of biases (py-faster-rcnn's Caffe nets: 2)
    bias_decay_mult: float = 1.0  # weight decay factor of biases (py-faster-rcnn's Caffe nets: 0)
    warmup_iterations: int = 0  # linear warm-up from lr/10 (not in the paper)
    grad_clip: float = 0.0
    # --- run folder
    device: str = "auto"
    seed: int = 0
    threads: int = 0  # 0: automatic (resnetlab.machine.choose_threads), said when the run starts
    log_every: int = 20
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 500
    val_images: int = 0  # 0: every validation image

    def __post_init__(self) -> None:
        for key in ("batch_size", "accumulate", "min_size", "max_size", "log_every", "checkpoint_every",
                    "roi_output_size", "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test",
                    "rpn_post_nms_top_n_test", "box_batch_size_per_image"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("iterations", "warmup_iterations", "eval_every", "val_images", "threads", "weight_decay",
                    "momentum", "grad_clip", "bias_lr_mult", "bias_decay_mult"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.box_nms_thresh <= 1:
            raise ConfigError(f"box_nms_thresh must be in (0, 1], got {self.box_nms_thresh}")
        if self.batch_size % self.accumulate:
            raise ConfigError(f"batch_size {self.batch_size} is not divisible by accumulate {self.accumulate}")
        if self.min_size > self.max_size:
            raise ConfigError(f"min_size {self.min_size} is above max_size {self.max_size}")
        if list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"milestones must increase, got {list(self.milestones)}")
        if not self.anchor_sizes or any(s < 1 for s in self.anchor_sizes):
            raise ConfigError(f"anchor_sizes must be positive, got {list(self.anchor_sizes)}")

    def check_trainable(self) -> None:
        """Refuse, before any work, a run that cannot learn: frozen BN on a randomly initialised
        backbone is the identity (a BN layer's statistics are 0 and 1 until trained), so nothing
        normalizes the activations, which grow through the residual stages until the loss is NaN."""
        if self.frozen_bn and not self.backbone_weights:
            raise ConfigError("frozen_bn=true needs backbone_weights: frozen BN on a randomly initialised backbone is "
                              "the identity and the loss diverges within steps. Give backbone_weights=FILE (ImageNet "
                              "weights, e.g. from `resnetlab import torchvision|caffe ...`), or train from scratch with "
                              "frozen_bn=false trainable_stages=5")

    def detector_kwargs(self) -> dict[str, Any]:
        """The :func:`~resnetlab.detection.create_detector` arguments of this config (JSON-able)."""
        kwargs: dict[str, Any] = dict(
            trainable_stages=self.trainable_stages, frozen_bn=self.frozen_bn, roi_pool=self.roi_pool,
            roi_output_size=self.roi_output_size, anchor_sizes=list(self.anchor_sizes), min_size=self.min_size,
            max_size=self.max_size, rpn_pre_nms_top_n_train=self.rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=self.rpn_post_nms_top_n_train, rpn_pre_nms_top_n_test=self.rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=self.rpn_post_nms_top_n_test, box_batch_size_per_image=self.box_batch_size_per_image,
            box_nms_thresh=self.box_nms_thresh,
        )
        if self.backbone:
            kwargs["backbone"] = self.backbone
        if self.backbone_kwargs:
            kwargs["backbone_kwargs"] = dict(self.backbone_kwargs)
        return kwargs


_BASE = DetectConfig()

#: What the paper recipes do where the papers (He et al. appendix A; Faster R-CNN, Ren et al.
#: 2015) or their code (py-faster-rcnn) do otherwise, or say nothing. Settings of theirs we can
#: set are set (pre-NMS proposal counts, test NMS 0.3, biases at twice the lr without weight
#: decay, difficult objects left out of training, the COCO batch and anchors and split).
DEPARTURES: dict[str, tuple[str, ...]] = {}
_COMMON_DEPARTURES = (
    "Training is torchvision's approximate joint training (the RPN and Fast R-CNN losses summed in every step), "
    "not the separate RPN and Fast R-CNN steps the papers describe.",
    "Proposals smaller than 16 px are kept (py-faster-rcnn drops them, RPN_MIN_SIZE 16 at the original scale; "
    "torchvision drops only those under 0.001 px).",
    "Box regression loss: torchvision's smooth L1 with beta 1/9 in both the RPN and the RoI head; py-faster-rcnn "
    "uses sigma 3 (beta 1/9) in the RPN but sigma 1 (beta 1) in the Fast R-CNN head.",
    "conv1 and conv2_x are frozen (trainable_stages=3): Detectron's practice (FREEZE_AT 2), as py-faster-rcnn "
    "freezes VGG-16's conv1 and conv2; the ResNet paper does not say which layers are fine-tuned.",
    "RoI pooling to 14x14 before conv5_x (7x7 after its stride): Detectron's size; the paper does not give one.",
)
DEPARTURES["paper_voc"] = _COMMON_DEPARTURES + (
    "Background RoIs are those with IoU in [0, 0.5) with every object (torchvision); Fast R-CNN on VOC samples "
    "them from [0.1, 0.5) (py-faster-rcnn's BG_THRESH_LO 0.1).",
)
DEPARTURES["paper_coco"] = _COMMON_DEPARTURES + (
    "One mini-batch is 8 images (the RPN step's 8, one per GPU), as 8 accumulated micro-batches of 1 on one "
    "device, with 128 RoIs each: 1,024 RoIs per step, as the Fast R-CNN step's 16 images x 64 RoIs, but from "
    "8 images, not 16.",
)


def _description(citation: str, recipe: str) -> str:
    return citation + "".join(f" Departure: {d}" for d in DEPARTURES.get(recipe, ()))


#: the papers' settings shared by paper_voc and paper_coco (py-faster-rcnn's config: 12,000 / 6,000
#: proposals before NMS, 2,000 / 300 after, for training / test; test NMS 0.3; biases at 2x lr, no decay)
_PAPER = dataclasses.replace(_BASE, rpn_pre_nms_top_n_train=12_000, rpn_pre_nms_top_n_test=6_000, box_nms_thresh=0.3,
                             bias_lr_mult=2.0, bias_decay_mult=0.0)

#: name -> (config, description: the citation and the departures)
DETECT_RECIPES: dict[str, tuple[DetectConfig, str]] = {
    # He et al. 2015 appendix A with Ren et al. 2015's VOC schedule: 07+12 trainval, tested on 07 test.
    "paper_voc": (dataclasses.replace(_PAPER, train_split="2007_trainval+2012_trainval", val_split="2007_test",
                                      iterations=80_000, milestones=(60_000,), checkpoint_every=2_000),
                  _description("He et al. 2015, appendix A; Ren et al. 2015 (Faster R-CNN), section 4.1: VOC lr "
                               "0.001 for 60k mini-batches, 0.0001 for 20k.", "paper_voc")),
    # Appendix A: 8 GPUs, the RPN step 8 images per mini-batch; trained on the 80k train set, evaluated on the
    # 40k val set (COCO 2014); 240k iterations at 0.001, 80k at 0.0001. Faster R-CNN adds the 64^2 anchors on COCO.
    "paper_coco": (dataclasses.replace(_PAPER, train_split="train2014", val_split="val2014",
                                       anchor_sizes=(64, 128, 256, 512), batch_size=8, accumulate=8,
                                       iterations=320_000, milestones=(240_000,), checkpoint_every=5_000),
                   _description("He et al. 2015, appendix A: COCO train2014 (80k) for training, val2014 (40k) for "
                                "evaluation, 8 images per mini-batch, 240k iterations at 0.001, then 80k at 0.0001; "
                                "Ren et al. 2015, section 4.2: a fourth anchor scale, 64^2.", "paper_coco")),
    # Ours, for a CPU: the C4 design on CIFAR ResNet-20 from scratch (trainable BN, every stage trained) on
    # the 128x128 shapes; fasterrcnn_resnet18_c4 with the same settings (model=..., trainable_stages=5,
    # roi_output_size=8) runs about 4x slower per step here.
    "shapes_demo": (dataclasses.replace(
        _BASE, model="fasterrcnn_cifar_resnet20_c4", data="shapes", trainable_stages=4, frozen_bn=False,
        roi_output_size=14, anchor_sizes=(24, 48, 96), min_size=128, max_size=128, rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=300, rpn_post_nms_top_n_test=50, box_batch_size_per_image=32, batch_size=4,
        iterations=3_000, lr=0.02, milestones=(2_300, 2_800), warmup_iterations=100, weight_decay=0.0001,
        grad_clip=10.0, log_every=20, eval_every=1_000, checkpoint_every=100, val_images=0),
        "resnetlab: the appendix A design scaled to the synthetic shapes on a CPU (not a paper recipe)"),
}


def get_detect_recipe(name: str, overrides: list[str] | dict | None = None, *,
                      saved: dict[str, Any] | None = None) -> DetectConfig:
    """The recipe ``name`` with ``key=value`` overrides applied (type-checked; unknown keys
    refused); ``saved`` (a run folder's config, when it is resumed) is applied before them."""
    if name not in DETECT_RECIPES:
        raise ConfigError(f"unknown detection recipe {name!r}; choose one of {', '.join(DETECT_RECIPES)}")
    pairs = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    return apply_overrides(apply_overrides(DETECT_RECIPES[name][0], saved or {}), pairs)
