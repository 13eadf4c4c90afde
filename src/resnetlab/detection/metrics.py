"""Detection metrics: COCO mAP through pycocotools, and Pascal VOC 2007's 11-point AP.

- :func:`coco_map`: mAP@[.5:.95], mAP@.5 and mAP@.75 of ``COCOeval`` on the data set's ground
  truth (:meth:`DetectionSet.coco_ground_truth`) and the detections, boxes sent as COCO's
  ``[x, y, w, h]`` with the data set's own category ids and image ids.
- :func:`voc07_ap`: the VOC devkit's ``VOCevaldet`` for one class: detections of all images
  sorted by score; each is a true positive if its best-overlapping ground truth (IoU > 0.5)
  is not yet taken, a false positive otherwise; a match to a "difficult" object counts as
  neither, and difficult objects are not in the number of positives; AP is the mean over
  recall 0, 0.1, ..., 1 of the highest precision at that recall or above (11-point).
  Boxes are continuous coordinates (the VOC reader turns the 1-based inclusive ``xmin`` into
  ``xmin - 1``), so the IoU here equals the devkit's ``+1`` formula on the original pixels.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .data import DetectionSet

__all__ = ["Detections", "coco_results", "coco_map", "voc07_ap", "voc07_map", "box_iou"]

#: one image's detections: ``{"boxes": N x 4 (x1, y1, x2, y2), "scores": N, "labels": N in 1..K}``
Detections = dict[str, torch.Tensor]


def coco_results(data: DetectionSet, detections: Sequence[Detections]) -> list[dict[str, Any]]:
    """The detections (one entry per image of ``data``, in order) in COCO's results format."""
    if len(detections) != len(data.records):
        raise ConfigError(f"{len(detections)} detection sets for {len(data.records)} images")
    out = []
    for rec, det in zip(data.records, detections):
        for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            x1, y1, x2, y2 = box
            out.append({"image_id": rec.image_id, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": float(score)})
    return out


def coco_map(data: DetectionSet, detections: Sequence[Detections]) -> dict[str, float]:
    """``{"map", "map50", "map75"}`` (fractions) of ``detections`` on ``data`` by pycocotools."""
    try:  # optional dependency: the [detection] extra
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ConfigError("COCO mAP needs pycocotools: pip install 'resnetlab[detection]'") from None
    results = coco_results(data, detections)
    if not results:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        gt = COCO()
        gt.dataset = data.coco_ground_truth()
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": float(ev.stats[0]), "map50": float(ev.stats[1]), "map75": float(ev.stats[2])}


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``[x1, y1, x2, y2]`` box with each row of ``boxes`` (continuous coordinates)."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / union


def voc07_ap(
    gt_boxes: Sequence[np.ndarray],
    gt_difficult: Sequence[np.ndarray],
    det_boxes: Sequence[np.ndarray],
    det_scores: Sequence[np.ndarray],
    iou_threshold: float = 0.5,
) -> float:
    """VOC07 11-point AP of one class; per image ``i``: ground truth ``gt_boxes[i]`` (G x 4) with
    flags ``gt_difficult[i]`` (G), detections ``det_boxes[i]`` (D x 4) and ``det_scores[i]`` (D).
    Returns NaN when the class has no non-difficult object (the devkit divides by zero there)."""
    npos = int(sum(int((~np.asarray(d, bool)).sum()) for d in gt_difficult))
    entries = [(float(s), i, b) for i, (boxes, scores) in enumerate(zip(det_boxes, det_scores))
               for b, s in zip(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores).reshape(-1))]
    # the devkit sorts by descending confidence (MATLAB's sort is stable: ties keep file order)
    entries.sort(key=lambda e: -e[0])
    taken = [np.zeros(len(np.asarray(g).reshape(-1, 4)), bool) for g in gt_boxes]
    tp, fp = np.zeros(len(entries)), np.zeros(len(entries))
    for d, (_, i, box) in enumerate(entries):
        gts = np.asarray(gt_boxes[i], np.float64).reshape(-1, 4)
        if len(gts) == 0:
            fp[d] = 1
            continue
        overlaps = box_iou(box, gts)
        j = int(np.argmax(overlaps))
        if overlaps[j] > iou_threshold:
            if gt_difficult[i][j]:
                continue  # neither true nor false positive
            if not taken[i][j]:
                tp[d], taken[i][j] = 1, True
            else:
                fp[d] = 1
        else:
            fp[d] = 1
    if npos == 0:
        return float("nan")
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        ap += (precision[recall >= t].max() if (recall >= t).any() else 0.0) / 11
    return float(ap)


def voc07_map(data: DetectionSet, detections: Sequence[Detections]) -> dict[str, Any]:
    """``{"voc07_map", "voc07_ap": {class: AP}}``: :func:`voc07_ap` per class, averaged over the
    classes that have objects."""
    if len(detections) != len(data.records):
        raise ConfigError(f"{len(detections)} detection sets for {len(data.records)} images")
    per_class = {}
    for label, name in enumerate(data.classes, start=1):
        gt_b, gt_d, dt_b, dt_s = [], [], [], []
        for rec, det in zip(data.records, detections):
            mine = (rec.labels == label) & (rec.iscrowd == 0)
            gt_b.append(rec.boxes[mine].numpy())
            gt_d.append(rec.difficult[mine].numpy().astype(bool))
            hit = det["labels"] == label
            dt_b.append(det["boxes"][hit].numpy())
            dt_s.append(det["scores"][hit].numpy())
        ap = voc07_ap(gt_b, gt_d, dt_b, dt_s)
        if not np.isnan(ap):
            per_class[name] = ap
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {"voc07_map": mean, "voc07_ap": per_class}
