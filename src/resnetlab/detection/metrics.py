"""Detection metrics: COCO mAP through pycocotools, and Pascal VOC 2007's 11-point AP.

- :func:`coco_map`: mAP@[.5:.95], mAP@.5 and mAP@.75 of ``COCOeval`` on the data set's ground
  truth (:meth:`DetectionSet.coco_ground_truth`) and the detections, boxes sent as COCO's
  ``[x, y, w, h]`` with the data set's own category ids and image ids (:func:`coco_results`,
  the results file format anyone can score).
- :func:`score_files`: the same numbers, and VOC07 mAP, of a COCO results file against a COCO
  instances file, made by anyone (``resnetlab detect score``): pycocotools reads the instances
  file itself.
- :func:`voc07_ap`: the VOC devkit's ``VOCevaldet`` for one class: detections of all images
  sorted by score; each is a true positive if its best-overlapping ground truth (IoU > 0.5)
  is not yet taken, a false positive otherwise; a match to a "difficult" object counts as
  neither, and difficult objects are not in the number of positives; AP is the mean over
  recall 0, 0.1, ..., 1 of the highest precision at that recall or above (11-point).
  Boxes are continuous coordinates (the VOC reader turns the 1-based inclusive ``xmin`` into
  ``xmin - 1``), so the IoU here equals the devkit's ``+1`` formula on the original pixels.
  COCO crowd regions count as difficult objects (ignored), as pycocotools ignores them.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .data import DetectionSet, read_coco_file

__all__ = ["Detections", "coco_results", "coco_map", "score_files", "voc07_ap", "voc07_map", "box_iou"]

#: one image's detections: ``{"boxes": N x 4 (x1, y1, x2, y2), "scores": N, "labels": N in 1..K}``
Detections = dict[str, torch.Tensor]


def coco_results(data: DetectionSet, detections: Sequence[Detections]) -> list[dict[str, Any]]:
    """The detections (one entry per image of ``data``, in order) in COCO's results format, with the
    data set's own category ids (``data.category_ids[label - 1]``) and image ids."""
    if len(detections) != len(data.records):
        raise ConfigError(f"{len(detections)} detection sets for {len(data.records)} images")
    out = []
    for rec, det in zip(data.records, detections):
        for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            x1, y1, x2, y2 = box
            out.append({"image_id": rec.image_id, "category_id": data.category_ids[int(label) - 1],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return out


def _cocoeval(gt: dict[str, Any] | str, results: list[dict[str, Any]]) -> dict[str, float]:
    """``{"map", "map50", "map75"}`` of pycocotools' ``COCOeval`` (bbox) on the ground truth ``gt``
    (an instances dict, or the path of an instances file, read by pycocotools) and ``results``."""
    try:  # optional dependency: the [detection] extra
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ConfigError("COCO mAP needs pycocotools: pip install 'resnetlab[detection]'") from None
    if not results:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0}
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
            if isinstance(gt, str):
                coco = COCO(gt)
            else:
                coco = COCO()
                coco.dataset = gt
                coco.createIndex()
            ev = COCOeval(coco, coco.loadRes(results), iouType="bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
    except (KeyError, AssertionError, TypeError, ValueError, IndexError) as exc:  # a file pycocotools cannot read
        where = gt if isinstance(gt, str) else "the ground truth"
        raise DataError(f"pycocotools cannot score {where}: {type(exc).__name__}: {exc}") from None
    return {"map": float(ev.stats[0]), "map50": float(ev.stats[1]), "map75": float(ev.stats[2])}


def coco_map(data: DetectionSet, detections: Sequence[Detections]) -> dict[str, float]:
    """``{"map", "map50", "map75"}`` (fractions) of ``detections`` on ``data`` by pycocotools."""
    return _cocoeval(data.coco_ground_truth(), coco_results(data, detections))


def _read_results(path: Path, data: DetectionSet) -> list[dict[str, Any]]:
    """A COCO results file, checked against the ground truth ``data``: a list of ``{"image_id",
    "category_id", "bbox": [x, y, w, h], "score"}`` naming its images and categories."""
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a JSON file ({type(exc).__name__}: {exc})") from None
    images = {rec.image_id for rec in data.records}
    categories = set(data.category_ids)
    if not isinstance(results, list):
        raise DataError(f"{path}: a COCO results file is a JSON list of detections")
    for i, r in enumerate(results):
        try:
            ok = (len(r["bbox"]) == 4 and all(math.isfinite(float(v)) for v in [*r["bbox"], r["score"]])
                  and r["image_id"] in images and r["category_id"] in categories)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(f"{path}: detection {i} ({json.dumps(r)[:120]}) is not {{image_id, category_id, bbox "
                            "[x, y, w, h], score}} with an image and a category of the ground truth")
    return results


def score_files(gt: str | os.PathLike, dets: str | os.PathLike) -> dict[str, Any]:
    """Score the COCO results file ``dets`` against the COCO instances file ``gt``, without a model:
    ``{"gt", "dets", "n_images", "n_detections", "map", "map50", "map75"}`` from pycocotools reading
    ``gt`` itself, plus ``voc07_map`` and ``voc07_ap`` per class (crowd regions ignored)."""
    gt, dets = Path(gt), Path(dets)
    data = read_coco_file(gt, [gt.parent], split=gt.stem)
    results = _read_results(dets, data)
    label_of = {cid: i + 1 for i, cid in enumerate(data.category_ids)}
    per_image: dict[int, list[dict[str, Any]]] = {rec.image_id: [] for rec in data.records}
    for r in results:
        per_image[r["image_id"]].append(r)
    detections = []
    for rec in data.records:
        mine = per_image[rec.image_id]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)],
                             dtype=torch.float64).reshape(-1, 4)
        detections.append({"boxes": boxes, "scores": torch.tensor([float(r["score"]) for r in mine]),
                           "labels": torch.tensor([label_of[r["category_id"]] for r in mine], dtype=torch.int64)})
    return {"gt": str(gt), "dets": str(dets), "n_images": len(data.records), "n_detections": len(results),
            **_cocoeval(str(gt), results), **voc07_map(data, detections)}


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
            mine = rec.labels == label
            gt_b.append(rec.boxes[mine].numpy())
            gt_d.append(((rec.difficult[mine] > 0) | (rec.iscrowd[mine] > 0)).numpy())
            hit = det["labels"] == label
            dt_b.append(det["boxes"][hit].numpy())
            dt_s.append(det["scores"][hit].numpy())
        ap = voc07_ap(gt_b, gt_d, dt_b, dt_s)
        if not np.isnan(ap):
            per_class[name] = ap
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {"voc07_map": mean, "voc07_ap": per_class}
