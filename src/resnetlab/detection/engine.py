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
from typing import Any, Iterable, Sequence

import torch
from PIL import Image, ImageDraw
from torch import nn
from tqdm import tqdm

from .. import runfolder
from ..analysis.plots import Curve, plot_curves
from ..data.images import decode_image
from ..device import keep_freed_memory, resolve_device
from ..errors import ConfigError, DataError, TrainingError
from ..files import atomic_save, atomic_write_text
from ..machine import choose_threads
from ..train.distributed import StopRequest
from ..train.schedule import Schedule
from .data import DetectionSet, open_detection_data, parse_detection_data
from .metrics import Detections, coco_map, coco_results, voc07_map
from .models import DetectorMeta, create_detector, load_detector, save_detector
from .recipes import DEPARTURES, DetectConfig, get_detect_recipe

__all__ = ["DetectRunResult", "train_detector", "detect", "evaluate_detector", "save_detections", "accumulated_step",
           "lr_schedule", "run_detect_eval", "predict_images", "export_detector", "DETECT_EXPORT_FORMATS"]

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
                      progress: bool = True, save_dets: str | os.PathLike | None = None) -> dict[str, Any]:
    """COCO mAP@[.5:.95] / @.5 / @.75 (pycocotools) of ``detector`` on ``data``; VOC07 mAP too on VOC.
    With ``save_dets`` the detections are written there as a COCO results file (see
    :func:`save_detections`)."""
    seen, detections = detect(detector, data, device, limit, progress)
    result: dict[str, Any] = {"n_images": len(seen.records), **coco_map(seen, detections)}
    if data.name == "voc":
        result.update(voc07_map(seen, detections))
    if data.skipped:
        result["skipped"] = data.skipped
    if save_dets is not None:
        result.update(save_detections(seen, detections, save_dets, complete=seen.records == data.records))
    return result


def save_detections(data: DetectionSet, detections: Sequence[Detections], path: str | os.PathLike,
                    complete: bool = True) -> dict[str, str]:
    """Write ``detections`` of ``data``'s images to ``path`` as a COCO results file (the data set's
    own image and category ids), which ``resnetlab detect score`` or pycocotools score with no
    model.  Returns ``{"dets": path, "gt": ground truth}``: the COCO instances file the data came
    from when every one of its images was evaluated (``complete``), otherwise the ground truth of
    the images evaluated, written beside as ``<path stem>.gt.json``."""
    path = Path(path)
    atomic_write_text(path, json.dumps(coco_results(data, detections)))
    if data.annotation_file and complete:
        return {"dets": str(path), "gt": data.annotation_file}
    gt = path.with_name(path.stem + ".gt.json")
    atomic_write_text(gt, json.dumps(data.coco_ground_truth()))
    return {"dets": str(path), "gt": str(gt)}


def _meta(data: DetectionSet, detector: nn.Module, source: str) -> DetectorMeta:
    """The weights file metadata of ``detector`` trained on ``data``: everything that rebuilds it
    (``resnetlab_kwargs``, the backbone's architecture in full) and the data set's classes and ids."""
    mean = [float(v) for v in detector.transform.image_mean]
    std = [float(v) for v in detector.transform.image_std]
    return DetectorMeta(detector.resnetlab_name, dict(detector.resnetlab_kwargs), list(data.classes), mean, std,
                        source, list(data.category_ids))


def lr_schedule(cfg: DetectConfig) -> Schedule:
    """The run's learning rate: ``lr`` times ``gamma`` at each milestone (appendix A: 0.001, then
    0.0001), after the optional linear warm-up of the training engine's :class:`Schedule`."""
    return Schedule(cfg.lr, "multistep", cfg.iterations, tuple(cfg.milestones), cfg.gamma, cfg.warmup_iterations)


def _note_left_out(spec: str, data: DetectionSet) -> None:
    """One line on stderr naming the files the reader left out (unpaired or corrupt), if any."""
    if data.left_out:
        shown = "; ".join(data.left_out[:3]) + ("; ..." if len(data.left_out) > 3 else "")
        count = f"{len(data.left_out)} file{'s' if len(data.left_out) > 1 else ''}"
        print(f"resnetlab: {spec} {data.split}: {count} left out: {shown}", file=sys.stderr)


def _param_groups(detector: nn.Module, cfg: DetectConfig) -> list[dict[str, Any]]:
    """The trained parameters as SGD groups: weights, and biases at ``bias_lr_mult`` times the lr
    and ``bias_decay_mult`` times the weight decay (py-faster-rcnn's Caffe nets: 2 and 0).  Each
    group's ``lr_mult`` scales the schedule's lr."""
    named = [(n, p) for n, p in detector.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not n.endswith(".bias")], "lr_mult": 1.0,
               "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in named if n.endswith(".bias")], "lr_mult": cfg.bias_lr_mult,
               "weight_decay": cfg.weight_decay * cfg.bias_decay_mult}]
    return [g for g in groups if g["params"]]


def accumulated_step(detector: nn.Module, micro_batches: Iterable[tuple[list, list]], accumulate: int,
                     where: str) -> dict[str, float] | None:
    """Forward and backward ``micro_batches`` (``(images, targets)`` each, at most ``accumulate`` of
    them), each loss divided by ``accumulate``, so the gradients add up to those of one mini-batch
    of all the images (torchvision's losses are means over the sampled anchors and RoIs; BN is
    frozen).  Returns the micro-batches' mean losses (``loss`` and each part) and ``n``, the
    images seen, or None when every micro-batch was empty; a non-finite loss is a
    :class:`TrainingError` naming ``where``."""
    sums: dict[str, float] = {}
    used = images_seen = 0
    for images, targets in micro_batches:
        if not images:
            continue
        parts = detector(images, targets)
        loss = sum(parts.values())
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} {where}; try a lower lr or grad_clip")
        (loss / accumulate).backward()
        for key, value in {"loss": loss, **parts}.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        used += 1
        images_seen += len(images)
    return {**{k: v / used for k, v in sums.items()}, "n": images_seen} if used else None


def _load(data: DetectionSet, indices: Sequence[int], flips: torch.Tensor, flip: bool,
          device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The training images ``indices`` of ``data`` (unreadable ones dropped under ``skip_bad_images``)
    as [0, 1] floats on ``device``, each flipped where its ``flips`` draw is < 0.5 and ``flip``."""
    images, targets = [], []
    for index, draw in zip(indices, flips):
        item = data[index]
        if item is None:
            continue
        image, target = item
        if flip and draw < 0.5:  # horizontal flip (Faster R-CNN, appendix A)
            image, target = _hflip(image, target)
        images.append(image.to(device, torch.float32) / 255)
        targets.append({k: v.to(device) for k, v in target.items()})
    return images, targets


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
    cfg.check_trainable()
    spec = data or cfg.data
    if not spec:
        raise ConfigError(f"recipe {recipe} needs --data (coco=PATH, voc=PATH or shapes)")
    parse_detection_data(spec)
    config = dict(dataclasses.asdict(cfg), data=spec, recipe=recipe)
    config = json.loads(json.dumps(config))  # tuples as lists, as config.json holds them
    checkpoint = runfolder.prepare(out, config, resume)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        keep_freed_memory()  # as classification training: the same arithmetic, less CPU time
    print(f"resnetlab: training {cfg.model} on {device}, {choose_threads(cfg.threads)}", file=sys.stderr)
    train_set = open_detection_data(spec, cfg.train_split, cfg.skip_bad_images)
    val_set = open_detection_data(spec, cfg.val_split, cfg.skip_bad_images)
    train_set.keep_difficult = cfg.train_difficult
    if (train_set.classes, train_set.category_ids) != (val_set.classes, val_set.category_ids):
        raise DataError(f"{spec}: {cfg.train_split} and {cfg.val_split} name different classes")
    for part in (train_set, val_set):
        _note_left_out(spec, part)
    torch.manual_seed(cfg.seed)
    detector = create_detector(cfg.model, len(train_set.classes), cfg.backbone_weights or None,
                               **cfg.detector_kwargs()).to(device)
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(_param_groups(detector, cfg), lr=cfg.lr, momentum=cfg.momentum)
    schedule = lr_schedule(cfg)
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
        runfolder.write_config(out, config, device, provenance={
            "recipe": recipe, "departures": list(DEPARTURES.get(recipe, ())),
            "splits": {"train": train_set.split, "val": val_set.split}})  # as read: train2017 for train, ...
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
            lr = schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            optimizer.zero_grad(set_to_none=True)
            indices = _batch_indices(len(train_set), cfg.batch_size, cfg.seed, step)
            micro = cfg.batch_size // cfg.accumulate
            losses_now = accumulated_step(
                detector, (_load(train_set, indices[i:i + micro], flips[i:i + micro], cfg.flip, device)
                           for i in range(0, cfg.batch_size, micro)),
                cfg.accumulate, f"at step {step + 1}; stopped (last checkpoint kept in {out})")
            if losses_now is not None:
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                window.append(losses_now)
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
    save_detector(detector, weights, _meta(train_set, detector, f"resnetlab detect train {recipe}"))
    _plot(out, cfg)
    return DetectRunResult(out, weights, cfg.iterations, cfg.iterations, last_eval,
                           elapsed_before + time.perf_counter() - started, train_set.skipped, losses)


def _plot(out: Path, cfg: DetectConfig) -> None:
    """``runfolder.CURVES``: the training loss (dashed; as a fraction of its first value) and the validation
    detection error 1 - mAP@.5 (bold)."""
    records = runfolder.read_metrics(out)
    train = [r for r in records if "train_loss" in r]
    first = train[0]["train_loss"] if train else 1.0
    rows = [{"step": r["step"], "train_err": r["train_loss"] / first} for r in train]
    rows += [{"step": r["step"], "val_err": 1 - r["val_map50"]} for r in records if "val_map50" in r]
    curve = Curve.from_metrics(rows, cfg.model)
    plot_curves({"detection": [curve]}, out / runfolder.CURVES,
                note="dashed: training loss / first logged loss; bold: 1 - mAP@.5 on the validation split",
                title=f"Detection training ({cfg.model})")


def run_detect_eval(weights: str | os.PathLike, data: str, split: str = "val", device: str = "auto",
                    progress: bool = True, limit: int = 0, skip_bad_images: bool = False,
                    save_dets: str | os.PathLike | None = None) -> dict[str, Any]:
    """What ``resnetlab detect eval`` prints last: model (and its backbone), dataset, split, n_images,
    map, map50, map75 (fractions), and voc07_map (+ per class) on VOC data; with ``save_dets``
    also ``dets`` and ``gt``, the files :func:`save_detections` names."""
    dev = resolve_device(device)
    detector, meta = load_detector(weights, dev)
    name, _ = parse_detection_data(data)
    dataset = open_detection_data(data, split, skip_bad_images)
    _note_left_out(data, dataset)
    if (dataset.classes, dataset.category_ids) != (meta.classes, meta.category_ids):
        raise DataError(f"{data} names the classes {_named(dataset.classes, dataset.category_ids)}, the detector "
                        f"{_named(meta.classes, meta.category_ids)}")
    result = evaluate_detector(detector, dataset, dev, limit, progress, save_dets)
    return {"model": meta.detector, "backbone": meta.kwargs["backbone"], "weights": str(weights), "dataset": name,
            "split": dataset.split, **result}


def _named(classes: list[str], ids: list[int]) -> str:
    """``"1 circle, 2 square, ..."``: the first classes with their data set ids."""
    return ", ".join(f"{i} {c}" for i, c in zip(ids[:5], classes[:5])) + (", ..." if len(classes) > 5 else "")


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
    (the data set's own category ids), "names" (class names), "scores"}``; with ``out_dir`` each
    image is also written as ``OUT/<name>.png`` with its boxes, class names and scores drawn."""
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
        labels = out["labels"][keep].tolist()
        names = [meta.classes[i - 1] for i in labels]
        scores = [round(s, 4) for s in out["scores"][keep].tolist()]
        results.append({"image": str(path), "boxes": boxes, "labels": [meta.category_ids[i - 1] for i in labels],
                        "names": names, "scores": scores})
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
