"""Detection recipes as data: one frozen :class:`DetectConfig` per recipe, overridable as ``key=value``.

Numbers follow the paper's appendix A, which takes its settings from Faster R-CNN (Ren et al.
2015): shorter side 600 (longer at most 1000), horizontal flips, anchors of 3 scales x 3
ratios, momentum 0.9, weight decay 0.0005; VOC lr 0.001 for 60k mini-batches then 0.0001 for
20k; COCO 240k iterations at 0.001 then 80k at 0.0001.  ``shapes_demo`` is ours: the same
design, small enough for a CPU and the synthetic ``--data shapes``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..config import apply_overrides, parse_overrides
from ..errors import ConfigError

__all__ = ["DetectConfig", "DETECT_RECIPES", "get_detect_recipe"]


@dataclass(frozen=True)
class DetectConfig:
    """Every knob of a detection run; lengths and milestones count iterations (mini-batches)."""

    # --- detector
    model: str = "fasterrcnn_resnet101_c4"
    backbone: str = ""  # "" = the detector's own; any resnetlab model name otherwise
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)  # e.g. {"variant": "v1.5"}
    backbone_weights: str = ""  # a resnetlab weights file ("" = random init)
    trainable_stages: int = 3  # conv3_x..conv5_x train; conv1, conv2_x frozen (appendix A)
    frozen_bn: bool = True  # BN as a constant scale and shift (appendix A)
    roi_pool: Literal["roipool", "roialign"] = "roipool"
    roi_output_size: int = 14
    anchor_sizes: tuple[int, ...] = (128, 256, 512)
    min_size: int = 600
    max_size: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 300  # Faster R-CNN tests on 300 proposals
    box_batch_size_per_image: int = 128  # Fast R-CNN: 128 RoIs per image, 25 % foreground
    # --- data
    data: str = ""  # default --data ("" = must be given)
    train_split: str = "train"
    val_split: str = "val"
    flip: bool = True
    skip_bad_images: bool = False
    # --- optimisation
    batch_size: int = 1  # images per mini-batch (Faster R-CNN: 1 per GPU)
    iterations: int = 80_000
    lr: float = 0.001
    milestones: tuple[int, ...] = (60_000,)
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0005
    warmup_iterations: int = 0  # linear warm-up from lr/10 (not in the paper)
    grad_clip: float = 0.0
    # --- run folder
    device: str = "auto"
    seed: int = 0
    threads: int = 0  # 0: torch's default
    log_every: int = 20
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 500
    val_images: int = 0  # 0: every validation image

    def __post_init__(self) -> None:
        for key in ("batch_size", "min_size", "max_size", "log_every", "checkpoint_every", "roi_output_size",
                    "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test", "box_batch_size_per_image"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("iterations", "warmup_iterations", "eval_every", "val_images", "threads", "weight_decay",
                    "momentum", "grad_clip"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.min_size > self.max_size:
            raise ConfigError(f"min_size {self.min_size} is above max_size {self.max_size}")
        if list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"milestones must increase, got {list(self.milestones)}")
        if not self.anchor_sizes or any(s < 1 for s in self.anchor_sizes):
            raise ConfigError(f"anchor_sizes must be positive, got {list(self.anchor_sizes)}")

    def detector_kwargs(self) -> dict[str, Any]:
        """The :func:`~resnetlab.detection.create_detector` arguments of this config (JSON-able)."""
        kwargs: dict[str, Any] = dict(
            trainable_stages=self.trainable_stages, frozen_bn=self.frozen_bn,
            anchor_sizes=list(self.anchor_sizes), min_size=self.min_size, max_size=self.max_size,
            rpn_post_nms_top_n_train=self.rpn_post_nms_top_n_train, rpn_pre_nms_top_n_train=self.rpn_post_nms_top_n_train,
            rpn_post_nms_top_n_test=self.rpn_post_nms_top_n_test, rpn_pre_nms_top_n_test=max(1000, self.rpn_post_nms_top_n_test),
            box_batch_size_per_image=self.box_batch_size_per_image,
        )
        if not self.model.endswith("_fpn"):
            kwargs.update(roi_pool=self.roi_pool, roi_output_size=self.roi_output_size)
        if self.backbone:
            kwargs["backbone"] = self.backbone
        if self.backbone_kwargs:
            kwargs["backbone_kwargs"] = dict(self.backbone_kwargs)
        return kwargs


_BASE = DetectConfig()

#: name -> (config, citation)
DETECT_RECIPES: dict[str, tuple[DetectConfig, str]] = {
    # He et al. 2015 appendix A with Ren et al. 2015's VOC schedule: 07+12 trainval, tested on 07 test.
    "paper_voc": (dataclasses.replace(_BASE, train_split="2007_trainval+2012_trainval", val_split="2007_test",
                                      iterations=80_000,
                                      milestones=(60_000,), checkpoint_every=2_000),
                  "He et al. 2015, appendix A; Ren et al. 2015 (Faster R-CNN), section 4.1: VOC lr 0.001 for "
                  "60k mini-batches, 0.0001 for 20k"),
    # Appendix A: COCO 80k train, 40k val; 240k iterations at 0.001, 80k at 0.0001.
    "paper_coco": (dataclasses.replace(_BASE, iterations=320_000, milestones=(240_000,), checkpoint_every=5_000),
                   "He et al. 2015, appendix A: COCO 240k iterations at 0.001, then 80k at 0.0001"),
    # Ours, for a CPU: the C4 design on CIFAR ResNet-20 from scratch (trainable BN, every stage trained) on
    # the 128x128 shapes; fasterrcnn_resnet18_c4 with the same settings (model=..., trainable_stages=5,
    # roi_output_size=8) runs about 4x slower per step here.
    "shapes_demo": (dataclasses.replace(
        _BASE, model="fasterrcnn_cifar_resnet20_c4", data="shapes", trainable_stages=4, frozen_bn=False,
        roi_output_size=14, anchor_sizes=(24, 48, 96), min_size=128, max_size=128, rpn_post_nms_top_n_train=300,
        rpn_post_nms_top_n_test=50, box_batch_size_per_image=32, batch_size=4, iterations=3_000, lr=0.02,
        milestones=(2_300, 2_800), warmup_iterations=100, weight_decay=0.0001, grad_clip=10.0,
        log_every=20, eval_every=1_000, checkpoint_every=100, val_images=0),
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
