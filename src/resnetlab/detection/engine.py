"""Train, evaluate, predict and export detectors: what ``resnetlab detect`` runs.

The training loop (:func:`train_detector`) keeps a run folder like classification's
(``resnetlab.runfolder``): ``config.json``, ``metrics.jsonl``, an atomic ``checkpoint.pt`` every
``checkpoint_every`` steps, ``final.safetensors`` (a detector weights file) and ``curves.png``.
Each step is a pure function of (seed, step): the images of step ``s`` come from a per-epoch
permutation drawn from the seed, the flips from a generator seeded by the step, and the global
RNG (torchvision's RPN/RoI sampling) is re-seeded at every step, so ``--resume`` continues to
the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image, ImageDraw
from torch import nn
from tqdm import tqdm

from .. import runfolder
from ..analysis.plots import Curve, plot_curves
from ..data.images import decode_image
from ..device import resolve_device
from ..errors import ConfigError, DataError, TrainingError
from ..files import atomic_save
from ..train.distributed import StopRequest
from ..train.schedule import Schedule
from .data import DetectionSet, open_detection_data, parse_detection_data
from .metrics import Detections, coco_map, voc07_map
from .models import DETECTORS, DetectorMeta, create_detector, load_detector, save_detector
from .recipes import DetectConfig, get_detect_recipe

__all__ = ["DetectRunResult", "train_detector", "detect", "evaluate_detector", "run_detect_eval", "predict_images",
           "export_detector", "DETECT_EXPORT_FORMATS"]

DETECT_EXPORT_FORMATS = ("torchscript", "onnx")


@dataclass
class DetectRunResult:
    """What a finished (or stopped) detection run left."""

    out_dir: Path
    weights: Path | None
    step: int
    iterations: int
    metrics: dict[str, Any] | None
    seconds: float
    skipped: int
    losses: list[float]
    interrupted: bool = False  # stopped by Ctrl-C/SIGTERM: a checkpoint at ``step``, no weights


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63 - 1)


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Images of step ``step``: positions ``step * B ...`` of the epoch permutations of ``seed``."""
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(position, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_step_seed(seed, -1 - epoch)))
        out.append(int(perm[i]))
    return out


def _hflip(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), dict(target, boxes=boxes)


@torch.inference_mode()
def detect(detector: nn.Module, data: DetectionSet, device: torch.device, limit: int = 0,
           progress: bool = True, batch_size: int = 4) -> tuple[DetectionSet, list[Detections]]:
    """Run ``detector`` (eval mode) over ``data`` (the first ``limit`` images if > 0); returns the
    images evaluated (unreadable ones dropped when ``skip_bad_images``) and their detections."""
    detector.eval()
    n = min(limit, len(data)) if limit else len(data)
    records, detections = [], []
    bar = tqdm(total=n, unit="img", desc=f"detect {data.name}/{data.split}", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    for start in range(0, n, batch_size):
        items = [(i, data[i]) for i in range(start, min(n, start + batch_size))]
        items = [(i, item) for i, item in items if item is not None]
        if items:
            outputs = detector([item[0].to(device, torch.float32) / 255 for _, item in items])
            for (i, _), out in zip(items, outputs):
                records.append(data.records[i])
                detections.append({k: v.detach().cpu() for k, v in out.items()})
        bar.update(min(n, start + batch_size) - start)
    bar.close()
    return dataclasses.replace(data, records=records), detections


def evaluate_detector(detector: nn.Module, data: DetectionSet, device: torch.device, limit: int = 0,
                      progress: bool = True) -> dict[str, Any]:
    """COCO mAP@[.5:.95] / @.5 / @.75 (pycocotools) of ``detector`` on ``data``; VOC07 mAP too on VOC."""
    seen, detections = detect(detector, data, device, limit, progress)
    result: dict[str, Any] = {"n_images": len(seen.records), **coco_map(seen, detections)}
    if data.name == "voc":
        result.update(voc07_map(seen, detections))
    if data.skipped:
        result["skipped"] = data.skipped
    return result


def _meta(cfg: DetectConfig, classes: list[str], detector: nn.Module, source: str) -> DetectorMeta:
    mean = [float(v) for v in detector.transform.image_mean]
    std = [float(v) for v in detector.transform.image_std]
    return DetectorMeta(cfg.model, cfg.detector_kwargs(), list(classes), mean, std, source)


def train_detector(recipe: str, overrides: list[str] | dict | None = None, *, data: str | None = None,
                   out_dir: str | os.PathLike | None = None, resume: bool = False,
                   progress: bool = True) -> DetectRunResult:
    """Train the detection recipe ``recipe`` (``paper_voc``, ``paper_coco``, ``shapes_demo``) with
    ``key=value`` ``overrides`` on ``data`` (``coco=PATH``, ``voc=PATH``, ``shapes``) into ``out_dir``.
    With ``resume`` the run folder's ``config.json`` gives the config and the data, so
    ``--out DIR --resume`` alone continues a run; overrides may then change only keys that do
    not change the result (``device``, ``threads``, ...)."""
    out = Path(out_dir) if out_dir is not None else Path("runs") / f"detect_{recipe}"
    saved = runfolder.saved_config(out, recipe, "resnetlab detect train") if resume else None
    if saved is not None:
        saved_data = saved.pop("data", None)  # popped whether or not --data is given: not an override
        data = data or saved_data
        saved.pop("recipe", None)
    cfg = get_detect_recipe(recipe, overrides, saved=saved)
    spec = data or cfg.data
    if not spec:
        raise ConfigError(f"recipe {recipe} needs --data (coco=PATH, voc=PATH or shapes)")
    parse_detection_data(spec)
    config = dict(dataclasses.asdict(cfg), data=spec, recipe=recipe)
    config = json.loads(json.dumps(config))  # tuples as lists, as config.json holds them
    checkpoint = runfolder.prepare(out, config, resume)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_set = open_detection_data(spec, cfg.train_split, cfg.skip_bad_images)
    val_set = open_detection_data(spec, cfg.val_split, cfg.skip_bad_images)
    if train_set.classes != val_set.classes:
        raise DataError(f"{spec}: {cfg.train_split} and {cfg.val_split} name different classes")
    torch.manual_seed(cfg.seed)
    detector = create_detector(cfg.model, len(train_set.classes), cfg.backbone_weights or None,
                               **cfg.detector_kwargs()).to(device)
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # appendix A: lr divided by 10 at the milestones; the optional warm-up is the training engine's
    schedule = Schedule(cfg.lr, "multistep", cfg.iterations, tuple(cfg.milestones), cfg.gamma, cfg.warmup_iterations)
    metrics = runfolder.MetricsLog(out)
    start, elapsed_before = 0, 0.0
    window: list[dict[str, float]] = []  # per-step losses since the last log line
    if checkpoint is not None:
        state = runfolder.load_checkpoint(checkpoint)
        detector.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed_before = int(state["step"]), float(state["elapsed"])
        train_set.skipped = int(state.get("skipped", 0))
        window = list(state.get("window", []))  # the losses since the last log line
        metrics.truncate(int(state["metrics_offset"]))
    else:
        out.mkdir(parents=True, exist_ok=True)
        runfolder.write_config(out, config, device, provenance={"recipe": recipe})
    if start >= cfg.iterations and (out / runfolder.FINAL).is_file():  # --resume of a finished run: nothing to do
        print(f"resnetlab: {out} already finished (step {start} of {cfg.iterations}); nothing to train",
              file=sys.stderr)
        evals = [r for r in runfolder.read_metrics(out) if "val_map" in r]
        last = {k[len("val_"):]: v for k, v in evals[-1].items() if k.startswith("val_")} if evals else None
        return DetectRunResult(out, out / runfolder.FINAL, start, cfg.iterations, last, elapsed_before, train_set.skipped, [])
    started = time.perf_counter()

    def save(step: int) -> None:
        runfolder.save_checkpoint(out / runfolder.CHECKPOINT, {
            "step": step, "model": detector.state_dict(), "optimizer": optimizer.state_dict(),
            "skipped": train_set.skipped, "window": window, "metrics_offset": metrics.offset(),
            "elapsed": elapsed_before + time.perf_counter() - started})

    bar = tqdm(total=cfg.iterations, initial=start, unit="step", desc=f"detect train {cfg.model}", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    window_start = time.perf_counter()
    losses: list[float] = []
    last_eval: dict[str, Any] | None = None
    step = start
    detector.train()
    with StopRequest() as stop:  # Ctrl-C or SIGTERM: the step in progress ends, a checkpoint, return
        for step in range(start, cfg.iterations):
            if stop.requested(step):
                save(step)
                bar.close()
                return DetectRunResult(out, None, step, cfg.iterations, last_eval,
                                       elapsed_before + time.perf_counter() - started, train_set.skipped, losses,
                                       interrupted=True)
            torch.manual_seed(_step_seed(cfg.seed, step))
            flips = torch.rand(cfg.batch_size, generator=torch.Generator().manual_seed(_step_seed(cfg.seed, step)))
            images, targets = [], []
            for index, flip in zip(_batch_indices(len(train_set), cfg.batch_size, cfg.seed, step), flips):
                item = train_set[index]
                if item is None:
                    continue
                image, target = item
                if cfg.flip and flip < 0.5:  # horizontal flip (Faster R-CNN, appendix A)
                    image, target = _hflip(image, target)
                images.append(image.to(device, torch.float32) / 255)
                targets.append({k: v.to(device) for k, v in target.items()})
            lr = schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if images:
                parts = detector(images, targets)
                loss = sum(parts.values())
                if not torch.isfinite(loss):
                    raise TrainingError(f"loss became {loss.item()} at step {step + 1}; stopped (last checkpoint "
                                        f"kept in {out}); try a lower lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                window.append({"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()},
                               "n": len(images)})
            done = step + 1
            bar.update(1)
            if window and (done % cfg.log_every == 0 or done == cfg.iterations):
                seconds = time.perf_counter() - window_start
                record: dict[str, Any] = {"step": done, "lr": lr}
                for key in window[0]:
                    if key != "n":
                        record["train_" + key.replace("loss_", "") if key != "loss" else "train_loss"] = \
                            sum(w[key] for w in window) / len(window)
                record["img_s"] = round(sum(w["n"] for w in window) / seconds, 2)
                record["time"] = round(elapsed_before + time.perf_counter() - started, 1)
                losses.append(record["train_loss"])
                metrics.write(record)
                bar.set_postfix(loss=f"{record['train_loss']:.3f}")
                window.clear()
                window_start = time.perf_counter()
            if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.iterations:
                last_eval = evaluate_detector(detector, val_set, device, cfg.val_images, progress=False)
                metrics.write({"step": done, **{f"val_{k}": v for k, v in last_eval.items() if k != "voc07_ap"}})
                bar.write(f"step {done}: val mAP {last_eval['map']:.4f}, mAP@.5 {last_eval['map50']:.4f}",
                          file=sys.stderr)
                detector.train()
            if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
                save(done)
    bar.close()
    weights = out / runfolder.FINAL
    save_detector(detector, weights, _meta(cfg, train_set.classes, detector, f"resnetlab detect train {recipe}"))
    _plot(out, cfg)
    return DetectRunResult(out, weights, cfg.iterations, cfg.iterations, last_eval,
                           elapsed_before + time.perf_counter() - started, train_set.skipped, losses)


def _plot(out: Path, cfg: DetectConfig) -> None:
    """curves.png: the training loss (dashed; as a fraction of its first value) and the validation
    detection error 1 - mAP@.5 (bold)."""
    records = runfolder.read_metrics(out)
    train = [r for r in records if "train_loss" in r]
    first = train[0]["train_loss"] if train else 1.0
    rows = [{"step": r["step"], "train_err": r["train_loss"] / first} for r in train]
    rows += [{"step": r["step"], "val_err": 1 - r["val_map50"]} for r in records if "val_map50" in r]
    curve = Curve.from_metrics(rows, cfg.model)
    plot_curves({"detection": [curve]}, out / "curves.png",
                note="dashed: training loss / first logged loss; bold: 1 - mAP@.5 on the validation split",
                title=f"Detection training ({cfg.model})")


def run_detect_eval(weights: str | os.PathLike, data: str, split: str = "val", device: str = "auto",
                    progress: bool = True, limit: int = 0, skip_bad_images: bool = False) -> dict[str, Any]:
    """What ``resnetlab detect eval`` prints last: model (and its backbone), dataset, split, n_images,
    map, map50, map75 (fractions), and voc07_map (+ per class) on VOC data."""
    dev = resolve_device(device)
    detector, meta = load_detector(weights, dev)
    name, _ = parse_detection_data(data)
    dataset = open_detection_data(data, split, skip_bad_images)
    if dataset.classes != meta.classes:
        raise DataError(f"{data} names the classes {dataset.classes[:5]}..., the detector {meta.classes[:5]}...")
    result = evaluate_detector(detector, dataset, dev, limit, progress)
    backbone = meta.kwargs.get("backbone") or DETECTORS[meta.detector].backbone
    return {"model": meta.detector, "backbone": backbone, "weights": str(weights), "dataset": name, "split": split,
            **result}


def _draw(image: torch.Tensor, boxes: list, names: list[str], scores: list[float]) -> Image.Image:
    picture = Image.fromarray(image.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(picture.size) / 300))
    for k, (box, name, score) in enumerate(zip(boxes, names, scores)):
        colour = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")[k % 8]
        draw.rectangle(box, outline=colour, width=width)
        text = f"{name} {score:.2f}"
        x, y = box[0], max(0, box[1] - 11)
        draw.rectangle(draw.textbbox((x, y), text), fill=colour)
        draw.text((x, y), text, fill="white")
    return picture


@torch.inference_mode()
def predict_images(weights: str | os.PathLike, images: Sequence[str], score_threshold: float = 0.5,
                   out_dir: str | os.PathLike | None = None, device: str = "auto") -> list[dict[str, Any]]:
    """Detections of each image: ``{"image", "boxes" [[x1, y1, x2, y2]] in original pixels, "labels"
    (class names), "label_ids", "scores"}``; with ``out_dir`` each image is also written as
    ``OUT/<name>.png`` with its boxes, class names and scores drawn."""
    if not 0.0 <= score_threshold <= 1.0:
        raise ConfigError(f"--score-threshold must be in [0, 1], got {score_threshold}")
    dev = resolve_device(device)
    detector, meta = load_detector(weights, dev)
    results = []
    for path in images:
        image = decode_image(path)
        (out,) = detector([image.to(dev, torch.float32) / 255])
        keep = out["scores"] >= score_threshold
        boxes = [[round(v, 2) for v in b] for b in out["boxes"][keep].tolist()]
        ids = out["labels"][keep].tolist()
        names = [meta.classes[i - 1] for i in ids]
        scores = [round(s, 4) for s in out["scores"][keep].tolist()]
        results.append({"image": str(path), "boxes": boxes, "labels": names, "label_ids": ids, "scores": scores})
        if out_dir is not None:
            picture = _draw(image, boxes, names, scores)
            target = Path(out_dir) / f"{Path(path).stem}.png"
            atomic_save(target, lambda tmp, p=picture: p.save(tmp, format="PNG"))
            results[-1]["drawn"] = str(target)
    return results


def export_detector(weights: str | os.PathLike, fmt: str, out: str | os.PathLike) -> dict[str, Any]:
    """Export a detector weights file: ``torchscript`` (``torch.jit.script``, the whole detector with
    its transform and post-processing), or ``onnx`` (torchvision's detection export path).

    Returns ``{"model", "format", "out", "max_abs_diff", "n_boxes"}``: the largest box difference
    against PyTorch on a random image of another size than the traced one (checks the dynamic
    shapes), and how many boxes were compared (None and 0 when PyTorch detects nothing there;
    the number of boxes must agree in any case).
    """
    if fmt not in DETECT_EXPORT_FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {', '.join(DETECT_EXPORT_FORMATS)}")
    detector, meta = load_detector(weights)
    side = detector.transform.min_size[0]
    example = torch.rand(3, side, side + side // 3, generator=torch.Generator().manual_seed(0))
    check = torch.rand(3, side + side // 4, side, generator=torch.Generator().manual_seed(1))
    out = Path(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' notes on their own internals
        with torch.inference_mode():
            want = detector([check])[0]
        if fmt == "torchscript":
            scripted = torch.jit.script(detector)
            extra = {"resnetlab.json": json.dumps(meta.to_metadata())}
            atomic_save(out, lambda tmp: torch.jit.save(scripted, tmp, _extra_files=extra))
            with torch.inference_mode():
                got = torch.jit.load(str(out))([check])[1][0]
            got_boxes = got["boxes"]
        else:
            got_boxes = _export_onnx(detector, example, check, out, meta)
    if got_boxes.shape != want["boxes"].shape:
        raise TrainingError(f"exported {fmt} gives {tuple(got_boxes.shape)} boxes, PyTorch {tuple(want['boxes'].shape)}")
    diff = float((got_boxes - want["boxes"]).abs().max()) if want["boxes"].numel() else None
    return {"model": meta.detector, "format": fmt, "out": str(out), "max_abs_diff": diff,
            "n_boxes": int(want["boxes"].shape[0])}


def _export_onnx(detector: nn.Module, example: torch.Tensor, check: torch.Tensor, out: Path,
                 meta: DetectorMeta) -> torch.Tensor:
    """torchvision's documented ONNX path for detection models (opset 11+, a list of one image,
    dynamic height/width); returns the boxes onnxruntime gives for ``check``."""
    try:  # optional dependencies: the [onnx] extra
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("ONNX export needs the onnx extra: pip install 'resnetlab[onnx]'") from None

    def write(tmp: str) -> None:
        torch.onnx.export(detector, ([example],), tmp, opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["boxes", "labels", "scores"],
                          dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "n"}, "labels": {0: "n"},
                                        "scores": {0: "n"}})
        graph = onnx.load(tmp)
        for key, value in meta.to_metadata().items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, tmp)

    try:
        atomic_save(out, write)
    except (RuntimeError, torch.onnx.errors.OnnxExporterError if hasattr(torch.onnx, "errors") else RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"ONNX export of {meta.detector} failed in torch.onnx: {first}") from None
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    boxes, _, _ = session.run(None, {"image": check.numpy()})
    return torch.from_numpy(boxes)
