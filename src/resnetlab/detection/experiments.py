"""``resnetlab reproduce table7`` / ``table8``: the paper's detection results (appendix A) beside ours.

Table 7 is Pascal VOC (07 test, trained on 07+12), Table 8 COCO val (trained on train).  The
paper's numbers are :data:`resnetlab.paper.DETECTION_VOC_MAP` / ``DETECTION_COCO_MAP``.  Ours
come from one training run of the settings' recipe (``paper_voc`` / ``paper_coco``) in
``ROOT/runs/<experiment>-<model>``, reused when finished and resumed when not, evaluated on the
test split.  Anything shorter than the recipe (``iterations=``, ``val_images=``, a backbone
without ImageNet pre-training) is labelled "shortened" in the table.

The full runs need ImageNet weights for ResNet-101 and a GPU (:data:`FULL_COMMANDS`).
:func:`backbone_complexity` gives the parameter and multiply-add counts of a detector's
shared trunk at the paper's 600x1000 input and of its per-region head on one RoI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import paper, runfolder
from ..analysis.complexity import complexity
from ..errors import ConfigError
from .engine import run_detect_eval, train_detector
from .models import MIN_SIZE, MAX_SIZE, create_detector
from .recipes import get_detect_recipe

__all__ = ["DetectionTableSettings", "DETECTION_EXPERIMENTS", "FULL_COMMANDS", "run_table7", "run_table8",
           "backbone_complexity"]


@dataclass(frozen=True)
class DetectionTableSettings:
    """One detection experiment: the detection recipe, the detector, and what may shorten it.

    ``iterations`` (None: the recipe's, milestones scaled with it), ``backbone_weights`` (the
    ImageNet weights file of the backbone; "" = random init, which the paper does not do, with
    BN trained and every stage trained, since frozen BN on a random net is the identity) and
    ``val_images`` (0: the whole test split) shorten a run; ``train_split`` / ``val_split`` ("":
    the recipe's, the paper's) name other splits, e.g. ``train2017`` / ``val2017`` for a COCO 2017
    download; ``device`` only sets where it runs.  On data of another kind than the recipe's
    (``shapes``), a smoke run, the splits are that data's ``train`` and ``val``.
    """

    detect_recipe: str
    model: str = "fasterrcnn_resnet101_c4"
    iterations: int | None = None
    backbone_weights: str = ""
    val_images: int = 0
    train_split: str = ""
    val_split: str = ""
    device: str = "auto"

    def overrides(self) -> dict[str, Any]:
        """The recipe overrides of these settings."""
        cfg = get_detect_recipe(self.detect_recipe)
        out: dict[str, Any] = {"model": self.model, "device": self.device}
        if self.iterations is not None:
            if self.iterations < 1:
                raise ConfigError(f"iterations must be >= 1, got {self.iterations}")
            scale = self.iterations / cfg.iterations
            out.update(iterations=self.iterations, milestones=[max(1, round(m * scale)) for m in cfg.milestones],
                       checkpoint_every=max(1, min(cfg.checkpoint_every, self.iterations)))
        if self.backbone_weights:
            out["backbone_weights"] = self.backbone_weights
        else:
            out.update(frozen_bn=False, trainable_stages=5)
        if self.val_images:
            out["val_images"] = self.val_images
        for key in ("train_split", "val_split"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    def shortening(self) -> str | None:
        """"shortened: ..." naming what differs from the paper's run, or None."""
        cfg = get_detect_recipe(self.detect_recipe)
        parts = []
        if self.iterations is not None and self.iterations != cfg.iterations:
            parts.append(f"iterations={self.iterations} (paper: {cfg.iterations})")
        if not self.backbone_weights:
            parts.append("backbone from random init, BN and every stage trained (paper: ImageNet pre-trained, "
                         "BN frozen)")
        if self.val_images:
            parts.append(f"val_images={self.val_images} (paper: the whole split)")
        for key in ("train_split", "val_split"):
            if getattr(self, key) and getattr(self, key) != getattr(cfg, key):
                parts.append(f"{key}={getattr(self, key)} (paper: {getattr(cfg, key)})")
        if self.model != "fasterrcnn_resnet101_c4":
            parts.append(f"model={self.model} (paper: fasterrcnn_resnet101_c4)")
        return "shortened: " + "; ".join(parts) if parts else None


#: the paper's two detection tables, with the settings of the paper's runs as defaults
DETECTION_EXPERIMENTS: dict[str, DetectionTableSettings] = {
    "table7": DetectionTableSettings("paper_voc"),
    "table8": DetectionTableSettings("paper_coco"),
}

#: the full runs behind Tables 7 and 8 (ImageNet ResNet-101 weights, one GPU)
FULL_COMMANDS = {
    "weights": "resnetlab import caffe ResNet-101-model.caffemodel -o r101_caffe.safetensors   # the paper's v1 "
               "net (or: resnetlab import torchvision resnet101-63fe2227.pth -o r101.safetensors, v1.5)",
    "table7": "resnetlab reproduce table7 backbone_weights=r101_caffe.safetensors device=cuda --data voc=VOCdevkit",
    "table8": "resnetlab reproduce table8 backbone_weights=r101_caffe.safetensors device=cuda --data coco=COCO",
    "train_voc": "resnetlab detect train paper_voc backbone_weights=r101_caffe.safetensors device=cuda "
                 "--data voc=VOCdevkit --out runs/voc_r101",
    "train_coco": "resnetlab detect train paper_coco backbone_weights=r101_caffe.safetensors device=cuda "
                  "--data coco=COCO --out runs/coco_r101",
}


#: the data each paper recipe's splits name
_PAPER_DATA = {"paper_voc": "voc", "paper_coco": "coco"}


def _run(ctx: Any, settings: DetectionTableSettings) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse / resume) the settings' run under ``ROOT/runs`` and evaluate it on its
    validation split (the paper's test set: VOC 2007 test, COCO val2014)."""
    if ctx.data is None:
        raise ConfigError(f"{ctx.experiment} measures on data: give --data "
                          f"{'voc=PATH' if settings.detect_recipe == 'paper_voc' else 'coco=PATH'} (or shapes for a smoke run)")
    run = ctx.folder.parent / "runs" / f"{ctx.experiment}-{settings.model}"
    weights = run / runfolder.FINAL
    overrides = settings.overrides()
    if not ctx.data.startswith(_PAPER_DATA[settings.detect_recipe] + "="):  # a smoke run on other data
        overrides.update(train_split="train", val_split="val")
    split = overrides.get("val_split", get_detect_recipe(settings.detect_recipe).val_split)
    if not weights.is_file():
        resume = (run / runfolder.CHECKPOINT).is_file()
        if train_detector(settings.detect_recipe, overrides, data=ctx.data, out_dir=run, resume=resume).interrupted:
            raise KeyboardInterrupt  # the run saved a checkpoint; the same command resumes it
    return run, run_detect_eval(weights, ctx.data, split=split, device=settings.device, limit=settings.val_images)



def _table(title: str, header: list[str], rows: list[list[str]], note: str | None, data: str, full: str) -> str:
    lines = [f"## {title}", ""]
    if note:
        lines += [f"**{note}**", ""]
    lines += [f"data: `{data}`", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"The paper's run (ImageNet weights, a GPU): `{FULL_COMMANDS['weights']}` then `{full}`"]
    return "\n".join(lines) + "\n"


def run_table7(ctx: Any) -> dict:
    """Table 7: VOC 2007 test mAP (VOC07 11-point, difficult objects ignored), paper vs ours."""
    settings: DetectionTableSettings = ctx.settings
    run, result = _run(ctx, settings)
    note = settings.shortening()
    ours = result.get("voc07_map")
    rows = [[f"{b} (paper)", f"{v07:.1f}", f"{v12:.1f}"] for b, (v07, v12) in paper.DETECTION_VOC_MAP.items()]
    shown = f"{100 * ours:.1f}" if ours is not None else f"n/a (not VOC data; COCO mAP@.5 {100 * result['map50']:.1f})"
    rows.append([f"{settings.model} (ours{', shortened' if note else ''})", shown,
                 "n/a (VOC 12 test: evaluation server only)"])
    ctx.write_table(_table("Table 7: Faster R-CNN on Pascal VOC (He et al. 2015, appendix A)",
                           ["detector backbone", "VOC 07 test mAP (07+12)", "VOC 12 test mAP (07++12)"], rows, note,
                           ctx.data, FULL_COMMANDS["table7"]))
    return {"run": str(run), "result": result, "note": note, "paper": paper.DETECTION_VOC_MAP}


def run_table8(ctx: Any) -> dict:
    """Table 8: COCO val mAP@.5 and mAP@[.5, .95], paper vs ours."""
    settings: DetectionTableSettings = ctx.settings
    run, result = _run(ctx, settings)
    note = settings.shortening()
    rows = [[f"{b} (paper)", f"{m50:.1f}", f"{m:.1f}"] for b, (m50, m) in paper.DETECTION_COCO_MAP.items()]
    rows.append([f"{settings.model} (ours{', shortened' if note else ''})", f"{100 * result['map50']:.1f}",
                 f"{100 * result['map']:.1f}"])
    ctx.write_table(_table("Table 8: Faster R-CNN on COCO val (He et al. 2015, appendix A)",
                           ["detector backbone", "mAP@.5", "mAP@[.5, .95]"], rows, note, ctx.data,
                           FULL_COMMANDS["table8"]))
    return {"run": str(run), "result": result, "note": note, "paper": paper.DETECTION_COCO_MAP}


def backbone_complexity(name: str = "fasterrcnn_resnet101_c4", image: tuple[int, int] = (MIN_SIZE, MAX_SIZE),
                        rois: int = 300) -> dict[str, Any]:
    """Parameters and multiply-adds of detector ``name``: the shared trunk on one ``image`` (H, W;
    the paper's 600x1000), the per-region head on one RoI, and the head over ``rois`` proposals
    (Faster R-CNN tests on 300).  Counted on the meta device (shapes only, no arithmetic), BN
    unfrozen so that its scale and shift count as parameters, as in the classifier's count."""
    with torch.device("meta"):
        detector = create_detector(name, 20, frozen_bn=False)
        trunk = complexity(detector.backbone, (3, *image))
        roi = detector.roi_heads.box_roi_pool.size
        head = complexity(detector.roi_heads.box_head, (detector.backbone.out_channels, roi, roi))
    return {"detector": name, "image": list(image), "trunk_params": trunk["params"], "trunk_macs": trunk["macs"],
            "head_params": head["params"], "head_macs_per_roi": head["macs"], "rois": rois,
            "backbone_macs": trunk["macs"] + rois * head["macs"]}
