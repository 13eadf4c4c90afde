"""``resnetlab detect train|eval|predict|export|score``: parses, calls :mod:`resnetlab.detection.engine`, prints.

As :mod:`resnetlab.cli`: the parsers are plain data and the library is reached as attributes of the
package (``resnetlab.detection.engine``), loaded when a command runs.

```
resnetlab detect train RECIPE [key=value ...] --data coco=PATH|voc=PATH|shapes --out DIR [--resume]
resnetlab detect eval WEIGHTS --data coco=PATH|voc=PATH|shapes [--split val|test] [--save-dets RESULTS.json] [--json]
resnetlab detect predict WEIGHTS IMAGE... [--out DIR] [--score-threshold S] [--json]
resnetlab detect export WEIGHTS --format torchscript|onnx -o OUT
resnetlab detect score --gt INSTANCES.json --dets RESULTS.json [--json]
```
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import resnetlab

from ..arguments import add_run_options
from .recipes import DETECT_RECIPES

__all__ = ["add_detect"]

DATA_HELP = ("coco=PATH (annotations/instances_{train,val}.json + images), voc=PATH (a VOCdevkit, or any folder of "
             "images and Pascal VOC XML files) or shapes (synthetic)")


def add_detect(sub: Any) -> None:
    """Add ``detect`` and its subcommands to the ``resnetlab`` subparsers ``sub``."""
    detect = sub.add_parser("detect", help="object detection: Faster R-CNN with ResNet backbones (paper appendix A)")
    inner = detect.add_subparsers(dest="detect_command", required=True, metavar="train|eval|predict|export|score")

    p = inner.add_parser("train", help=f"train a detection recipe ({', '.join(DETECT_RECIPES)})")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe fields, e.g. model=fasterrcnn_resnet50_c4 lr=0.002")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--out", default=None, help="run folder (default runs/detect_RECIPE)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add_run_options(p, as_overrides=True)
    p.set_defaults(func=cmd_detect_train)

    p = inner.add_parser("eval", help="COCO mAP (and VOC07 mAP on VOC) of a detector weights file")
    p.add_argument("weights")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="val", help="val (default), test, train, or any split the data has")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N images (0: all)")
    p.add_argument("--save-dets", default=None, metavar="RESULTS.json",
                   help="also write the detections as a COCO results file (the data set's own ids), for detect score")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    add_run_options(p)
    p.set_defaults(func=cmd_detect_eval)

    p = inner.add_parser("predict", help="boxes, class names and scores of images")
    p.add_argument("weights")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--out", default=None, help="write each image with its detections drawn as OUT/<name>.png")
    p.add_argument("--score-threshold", type=float, default=0.5, help="keep detections scoring at least S (default 0.5)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    add_run_options(p)
    p.set_defaults(func=cmd_detect_predict)

    p = inner.add_parser("export", help="export a detector weights file to TorchScript or ONNX")
    p.add_argument("weights")
    p.add_argument("--format", choices=["torchscript", "onnx"], required=True)
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(func=cmd_detect_export)

    p = inner.add_parser("score", help="COCO mAP (pycocotools) and VOC07 mAP of saved COCO-format detections, no model")
    p.add_argument("--gt", required=True, metavar="INSTANCES.json", help="the ground truth: a COCO instances file")
    p.add_argument("--dets", required=True, metavar="RESULTS.json",
                   help="the detections: a COCO results file ([{image_id, category_id, bbox [x, y, w, h], score}])")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.set_defaults(func=cmd_detect_score)


def cmd_detect_train(args: argparse.Namespace) -> None:
    result = resnetlab.detection.engine.train_detector(args.recipe, args.overrides, data=args.data, out_dir=args.out,
                                                       resume=args.resume)
    if result.interrupted:
        print(f"resnetlab: stopped at step {result.step}/{result.iterations}; checkpoint saved. Continue with: "
              f"resnetlab detect train {args.recipe} --out {result.out_dir} --resume", file=sys.stderr)
        sys.exit(130)
    print(f"run folder: {result.out_dir}")
    print(f"weights: {result.weights}")
    val = "n/a" if result.metrics is None else (f"mAP {100 * result.metrics['map']:.2f} %, "
                                               f"mAP@.5 {100 * result.metrics['map50']:.2f} %")
    print(f"steps: {result.step}, validation {val}, wall time: {result.seconds:.0f} s"
          + (f", {result.skipped} unreadable images skipped" if result.skipped else ""))


def cmd_detect_eval(args: argparse.Namespace) -> None:
    result = resnetlab.detection.engine.run_detect_eval(args.weights, args.data, split=args.split,
                                                        device=args.device or "auto", limit=args.limit,
                                                        save_dets=args.save_dets)
    if not args.json:
        print(f"{result['model']} on {result['dataset']}/{result['split']} ({result['n_images']} images): "
              + _scores(result) + (f"; detections in {result['dets']} (ground truth {result['gt']})"
                                   if "dets" in result else ""))
    print(json.dumps(result))


def _scores(result: dict[str, Any]) -> str:
    line = (f"mAP {100 * result['map']:.2f} %, mAP@.5 {100 * result['map50']:.2f} %, "
            f"mAP@.75 {100 * result['map75']:.2f} %")
    return line + (f", VOC07 mAP {100 * result['voc07_map']:.2f} %" if "voc07_map" in result else "")


def cmd_detect_predict(args: argparse.Namespace) -> None:
    results = resnetlab.detection.engine.predict_images(args.weights, args.images, score_threshold=args.score_threshold,
                                                        out_dir=args.out, device=args.device or "auto")
    for result in results:
        if args.json:
            print(json.dumps(result))
            continue
        print(f"{result['image']}: {len(result['boxes'])} objects" + (f" -> {result['drawn']}" if "drawn" in result else ""))
        for box, label, name, score in zip(result["boxes"], result["labels"], result["names"], result["scores"]):
            print(f"  {100 * score:6.2f} %  {name:16s} (id {label}) [{', '.join(f'{v:.1f}' for v in box)}]")
    sys.stdout.flush()


def cmd_detect_export(args: argparse.Namespace) -> None:
    result = resnetlab.detection.engine.export_detector(args.weights, args.format, args.out)
    check = ("no detections on the check image to compare" if result["max_abs_diff"] is None else
             f"max |box diff| vs PyTorch {result['max_abs_diff']:.2e} over {result['n_boxes']} boxes")
    print(f"{result['out']}: {result['model']} as {result['format']}, {check}")


def cmd_detect_score(args: argparse.Namespace) -> None:
    result = resnetlab.detection.metrics.score_files(args.gt, args.dets)
    if not args.json:
        print(f"{result['dets']} against {result['gt']} ({result['n_images']} images, {result['n_detections']} "
              f"detections): " + _scores(result))
    print(json.dumps(result))
