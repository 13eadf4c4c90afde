"""The training loop: one for every recipe, short, with its bookkeeping in hooks.

``train(config, data=..., out_dir=...)`` prepares a run (data, pipeline, normalization, the
:class:`~resnetlab.train.state.TrainState`, a resumed checkpoint) and then runs :func:`run_steps`:
per step, the learning rate, one optimizer step, the counts; every N steps the hooks: the NaN
guard and the log line (``log_every``), validation (``eval_every``), the checkpoint
(``checkpoint_every``). SIGINT/SIGTERM is the one interrupt path: the loop stops before the
next step, the checkpoint is written, and ``--resume`` continues bit-identically on CPU.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from .. import runfolder
from ..analysis.complexity import check_input_size
from ..analysis.plots import Curve, plot_curves
from ..config import apply_overrides, parse_overrides
from ..data.datasets import ImageSet, open_dataset, open_train_val, stratified_sample
from ..data.pipeline import Pipeline, TrainBatches, choose_pipeline
from ..device import keep_freed_memory, resolve_device
from ..errors import ConfigError, ImageError, TrainingError
from ..evaluate import evaluate
from ..machine import choose_threads
from ..recipes import TrainConfig, get_recipe
from ..tensorboard import TensorBoardLog
from ..weights import save_weights
from .distributed import Processes, StopRequest, process_group
from .schedule import Schedule
from .state import StepFn, TrainState, build, make_train_step

__all__ = ["RunResult", "Hook", "Meter", "train", "train_recipe", "run_steps", "input_normalization"]

#: unreadable images named on stderr one by one (``metrics.jsonl`` names every one)
_SKIPS_SHOWN = 10
_SKIP_HINT = "skip_bad_images=true leaves such files out and names them"


@dataclass
class RunResult:
    """What a run ended with."""

    out_dir: Path
    step: int
    iterations: int
    val_err: float | None
    weights: Path | None  # runfolder.FINAL (None when interrupted)
    interrupted: bool
    seconds: float
    skipped_images: int = 0  # unreadable images left out (skip_bad_images), each named in ``skipped``
    skipped: list[str] = field(default_factory=list)


@dataclass
class Hook:
    """``run()`` after every ``every``-th step (0: never) and after the last one."""

    every: int
    run: Callable[[], None]

    def due(self, done: int, total: int) -> bool:
        return done == total or (self.every > 0 and done % self.every == 0)


@dataclass
class Meter:
    """Loss sums and correct counts of the steps since the last log line, as device tensors (read
    only when a hook needs them: no host sync per step); part of the checkpoint."""

    pending: list[tuple[torch.Tensor, torch.Tensor, int]] = field(default_factory=list)
    since: float = field(default_factory=time.perf_counter)

    def add(self, loss_sum: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        self.pending.append((loss_sum, correct, n))

    def first_bad_loss(self) -> tuple[int, float] | None:
        """``(position, value)`` of the first non-finite loss among the pending steps, or None."""
        if not self.pending:
            return None
        losses = torch.stack([p[0] for p in self.pending])
        bad = (~torch.isfinite(losses)).nonzero()
        return None if len(bad) == 0 else (int(bad[0]), float(losses[int(bad[0])]))

    def take(self, processes: Processes) -> dict[str, float]:
        """Mean loss, error and images/s of the pending steps over all processes; then starts anew."""
        loss, hits, n = processes.all_sum([float(sum(p[0] for p in self.pending)),
                                           float(sum(p[1] for p in self.pending)),
                                           float(sum(p[2] for p in self.pending))])
        seconds = time.perf_counter() - self.since
        self.pending.clear()
        self.since = time.perf_counter()
        return {"train_loss": loss / n, "train_err": 1 - hits / n, "img_s": round(n / seconds, 1)}

    def seconds(self) -> float:
        """Training seconds spent on the pending steps so far (kept in a checkpoint beside them)."""
        return time.perf_counter() - self.since

    def state_dict(self) -> list[list[float]]:
        return [[float(loss), int(correct), n] for loss, correct, n in self.pending]

    def load_state_dict(self, state: list[list[float]], device: torch.device, seconds: float = 0.0) -> None:
        """The pending steps of a checkpoint and the ``seconds`` they took, so that the first log
        line after a resume reports the images/s they were trained at, not their count over the
        time since the resume."""
        self.pending = [(torch.tensor(loss, dtype=torch.float32, device=device),
                         torch.tensor(int(correct), device=device), int(n)) for loss, correct, n in state]
        self.since = time.perf_counter() - seconds


def run_steps(state: TrainState, step_fn: StepFn, batches: TrainBatches, meter: Meter, hooks: list[Hook],
              total: int, stop: Callable[[int], bool], progress: tqdm) -> bool:
    """Train from ``state.step`` to ``total``; returns True when stopped early by ``stop(step)``."""
    stream = batches.stream(state.step, total)
    while state.step < total:
        if stop(state.step):
            return True
        x, y = next(stream)
        state.set_lr()
        loss_sum, correct = step_fn(x, y)
        meter.add(loss_sum, correct, len(y))
        state.schedule.record(state.step, correct, len(y))
        state.step += 1
        progress.update(1)
        for hook in hooks:
            if hook.due(state.step, total):
                hook.run()
    return False


# ----------------------------------------------------------------------------- preparing a run


def input_normalization(cfg: TrainConfig, train: ImageSet) -> tuple[Any, Any]:
    """``(mean, std)`` on the [0, 1] scale: the per-pixel mean of the training images (section
    4.2) as a C x H x W tensor, or the recipe's per-channel values."""
    if cfg.normalization == "per_channel":
        return torch.tensor(cfg.mean), torch.tensor(cfg.std)
    if train.images is None:
        raise ConfigError("normalization=per_pixel_mean needs an in-memory data set (digits, CIFAR); "
                          "use normalization=per_channel for image folders")
    total = torch.zeros(train.images.shape[1:], dtype=torch.float64)
    for chunk in train.images.split(4096):
        total += chunk.double().sum(0)
    return (total / len(train) / 255).float(), torch.tensor(cfg.std)


def _open_data(cfg: TrainConfig, data: str) -> tuple[ImageSet, ImageSet | None]:
    """The training images (a fixed class-balanced ``train_subset`` if set) and the validation set."""
    skip = cfg.skip_bad_images
    try:
        if cfg.val == "holdout":
            train_set, val_set = open_train_val(data, skip)
        else:
            train_set = open_dataset(data, "train", skip)
            val_set = open_dataset(data, "test", skip) if cfg.val == "test" else None
    except ImageError as exc:  # met while a data set is decoded into memory
        raise ImageError(f"{exc}; {_SKIP_HINT}") from None
    if cfg.train_subset is not None:
        train_set = train_set.subset(stratified_sample(train_set.targets, cfg.train_subset))
    return train_set, val_set


def _pipeline(cfg: TrainConfig, train_set: ImageSet) -> Pipeline:
    pipeline = choose_pipeline(cfg.augment, train_set, crop=cfg.crop, pad=cfg.pad, flip=cfg.flip)
    if cfg.normalization == "per_pixel_mean" and train_set.images is not None \
            and tuple(train_set.images.shape[-2:]) != (pipeline.crop, pipeline.crop):
        raise ConfigError(f"normalization=per_pixel_mean with crop={pipeline.crop}: the per-pixel mean has the "
                          f"images' size {tuple(train_set.images.shape[-2:])}; use normalization=per_channel")
    return pipeline


def _schedule(cfg: TrainConfig, steps_per_epoch: int, processes: Processes) -> Schedule:
    """The run's :class:`Schedule`; with ``epochs`` > 0 the length and milestones count epochs."""
    scale = steps_per_epoch if cfg.epochs > 0 else 1
    total = cfg.epochs * steps_per_epoch if cfg.epochs > 0 else cfg.iterations
    return Schedule(cfg.lr, cfg.schedule, total, tuple(m * scale for m in cfg.milestones), cfg.gamma,
                    cfg.warmup_iterations, cfg.warmup_lr, cfg.warmup_until_train_error, cfg.plateau_patience,
                    warmup_lr_iterations=cfg.warmup_lr_iterations, all_sum=processes.all_sum,
                    broadcast=processes.broadcast)


def _validate(model: nn.Module, val: ImageSet | None, crop: int, mean: Any, std: Any, device: torch.device,
              processes: Processes, on_skip: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """``{"val_err", "val_top5_err", "val_n", "val_protocol"}`` of ``model`` on ``val``, each process
    evaluating its share: the single view of in-memory images of the training crop's size
    ("full", section 4.2), else the centre view. With ``on_skip``, unreadable images are left out
    and each passed to it."""
    if val is None or len(val) == 0:
        return None
    processes.share_buffers(model)
    in_memory = val.images is not None
    protocol = "full" if in_memory and tuple(val.images.shape[-2:]) == (crop, crop) else "center"
    share = val.subset(torch.arange(processes.rank, len(val), processes.world))
    correct = correct5 = seen = 0
    if len(share):
        result = evaluate(model, share, protocol=protocol, mean=mean, std=std, input_size=(3, crop, crop),
                          batch_size=256, device=device, progress=False, num_workers=0 if in_memory else None,
                          skip_bad_images=on_skip is not None)
        correct, seen = result["correct"], result["n"]
        correct5 = round(result["top5_acc"] * seen)
        for message in result.get("skipped", []):
            on_skip(message)
    correct, correct5, seen = (int(v) for v in processes.all_sum([correct, correct5, seen]))
    return {"val_err": (seen - correct) / seen, "val_top5_err": (seen - correct5) / seen, "val_n": seen,
            "val_protocol": protocol}


def _channels(train_set: ImageSet) -> int:
    """Channels of the training images (RGB unless an in-memory set says otherwise)."""
    return train_set.images.shape[1] if train_set.images is not None else 3


def _finish(model: nn.Module, cfg: TrainConfig, train_set: ImageSet, pipeline: Pipeline, mean: Any, std: Any,
            out: Path) -> Path:
    """``final.safetensors`` (with the input normalization and size used) and ``curves.png``."""
    weights = out / runfolder.FINAL
    channels = _channels(train_set)
    save_weights(model.to(memory_format=torch.contiguous_format), weights, mean=torch.as_tensor(mean).tolist(),
                 std=torch.as_tensor(std).tolist(), classes=train_set.classes,
                 source=f"resnetlab train ({train_set.name})", input_size=(channels, pipeline.crop, pipeline.crop))
    curve = Curve.from_metrics(runfolder.read_metrics(out), cfg.model)
    plot_curves({cfg.model: [curve]}, out / runfolder.CURVES, title=f"{cfg.model} on {train_set.name}")
    return weights


# ----------------------------------------------------------------------------- a run


def train(
    config: TrainConfig,
    *,
    data: str | None = None,
    out_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
) -> RunResult:
    """Train ``config`` on ``data`` (a ``--data`` value; default ``config.data``) into the run
    folder ``out_dir``; with ``resume``, continue the checkpoint there. ``provenance`` (JSON data,
    e.g. which experiment made the run and whether it is the paper's recipe) is written into
    ``config.json`` when the run is created.

    Writes ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` (every ``checkpoint_every``
    steps, atomically), ``final.safetensors`` and ``curves.png``. SIGINT/SIGTERM save a
    checkpoint and return with ``interrupted=True``; a NaN/inf loss raises
    :class:`TrainingError` naming the step and keeps the last good checkpoint.
    """
    device = resolve_device(config.device)
    if device.type == "cpu":
        keep_freed_memory()  # the same arithmetic, 1.1-1.2x less CPU time per step (BENCHMARKS.md)
    with process_group(device) as processes:
        return _Run(config, data, Path(out_dir), processes).run(resume, progress, provenance)


class _Run:
    """One run's data, state and hooks (the parts of :func:`train` that outlive a step)."""

    def __init__(self, cfg: TrainConfig, data: str | None, out: Path, processes: Processes) -> None:
        self.cfg, self.out, self.processes = cfg, out, processes
        self.data = data or cfg.data
        if not self.data:
            raise ConfigError("this recipe needs --data (e.g. cifar10=PATH); `digits` trains on the built-in digits")
        if cfg.batch_size % (processes.world * cfg.accumulate):
            raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by processes x accumulate "
                              f"({processes.world} x {cfg.accumulate})")
        self.device = processes.device
        self.started = time.perf_counter()
        self.elapsed_before = 0.0
        self.val_err: float | None = None
        self.last_good = 0
        self.skipped: list[str] = []  # unreadable images left out (skip_bad_images), one message each

    def run(self, resume: bool, progress: bool, provenance: dict[str, Any] | None) -> RunResult:
        cfg, out, procs = self.cfg, self.out, self.processes
        resolved = dict(cfg.to_dict(), data=self.data)  # what config.json records and resume compares
        # torchrun --max-restarts re-runs the same command after a rank died: continue the checkpoint
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        checkpoint = runfolder.prepare(out, resolved, resume or (restarted and (out / runfolder.CHECKPOINT).is_file()))
        procs.barrier()  # every process has checked the folder before process 0 writes into it
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        # everything that can be refused is checked before the run folder is written
        train_set, self.val_set = _open_data(cfg, self.data)
        self.pipeline = _pipeline(cfg, train_set)
        self.mean, self.std = input_normalization(cfg, train_set)
        workers = cfg.num_workers if cfg.num_workers >= 0 else (0 if train_set.images is not None and
                                                                self.pipeline.batched else min(8, os.cpu_count() or 1))
        batches = TrainBatches(train_set, self.pipeline, batch_size=cfg.batch_size, seed=cfg.seed, mean=self.mean,
                               std=self.std, device=self.device, channels_last=cfg.channels_last, rank=procs.rank,
                               world=procs.world, num_workers=workers, skip_bad_images=cfg.skip_bad_images,
                               on_skip=self._skip)
        self.steps_per_epoch = batches.steps_per_epoch
        schedule = _schedule(cfg, batches.steps_per_epoch, procs)
        torch.manual_seed(cfg.seed)
        self.state = build(cfg, len(train_set.classes), self.device, schedule, distributed=procs.world > 1)
        check_input_size(self.state.model, (_channels(train_set), self.pipeline.crop, self.pipeline.crop))
        self.meter = Meter()
        self.metrics = runfolder.MetricsLog(out, enabled=procs.main)
        threads = choose_threads(cfg.threads)  # before config.json, which records the machine
        if checkpoint is not None:
            self._restore(runfolder.load_checkpoint(checkpoint))
            batches.skipped = list(self.skipped)
        else:
            if procs.main:
                out.mkdir(parents=True, exist_ok=True)
                runfolder.write_config(out, resolved, self.device, procs.world, provenance)
            for message in train_set.skipped:  # left out when the data set was decoded
                self._skip(message)
        total = schedule.total
        if self.state.step >= total and (out / runfolder.FINAL).is_file():
            return self._already_finished(total)
        if procs.main:
            print(f"resnetlab: training {cfg.model} on {self.device}, {threads}", file=sys.stderr)
        # a resumed run hides the events it logged after its checkpoint, as metrics.jsonl was cut there
        self.board = TensorBoardLog(out, enabled=procs.main,
                                    purge_step=self.state.step + 1 if checkpoint is not None else None)

        hooks = [Hook(cfg.log_every, self._log), Hook(cfg.eval_every, self._evaluate),
                 Hook(cfg.checkpoint_every, self._checkpoint)]
        bar = tqdm(total=total, initial=self.state.step, unit="step", desc=f"train {cfg.model}", file=sys.stderr,
                   disable=not (progress and procs.main), dynamic_ncols=True)
        self.state.model.train()
        try:
            with StopRequest(procs, cfg.log_every) as stop:
                interrupted = run_steps(self.state, make_train_step(self.state, cfg), batches, self.meter, hooks,
                                        total, stop.requested, bar)
        except torch.OutOfMemoryError:
            raise TrainingError(
                f"out of memory on {self.device} at batch_size={cfg.batch_size} (step {self.state.step + 1}); "
                f"{self._kept()}. Try a smaller batch_size (with accumulate=K to keep the batch), amp=bf16, "
                'channels_last=true, or a memory-efficient model (DenseNet: model_kwargs={"memory_efficient":true})'
            ) from None
        except ImageError as exc:  # an unreadable image met during the run (skip_bad_images=false)
            raise ImageError(f"{exc} (step {self.state.step + 1}; {_SKIP_HINT}); {self._kept()}") from None
        finally:
            bar.close()
        if interrupted:
            self._checkpoint()
        weights = None
        if not interrupted and procs.main:
            weights = _finish(self.state.eval_model, cfg, train_set, self.pipeline, self.mean, self.std, out)
            self.board.image("curves", out / runfolder.CURVES, self.state.step)
        self.board.close()
        return RunResult(out, self.state.step, total, self.val_err, weights, interrupted,
                         time.perf_counter() - self.started, len(self.skipped), self.skipped)

    def _already_finished(self, total: int) -> RunResult:
        """``--resume`` of a run that had finished: nothing is trained or rewritten; the result is
        the run's own (its last validation error from ``metrics.jsonl``, its final weights, its
        training time)."""
        errors = [r["val_err"] for r in runfolder.read_metrics(self.out) if r.get("val_err") is not None]
        if self.processes.main:
            print(f"resnetlab: {self.out} already finished (step {self.state.step} of {total}); nothing to train",
                  file=sys.stderr)
        return RunResult(self.out, self.state.step, total, errors[-1] if errors else None,
                         self.out / runfolder.FINAL, False, self.elapsed_before, len(self.skipped), self.skipped)

    # --- hooks

    def _elapsed(self) -> float:
        return round(self.elapsed_before + time.perf_counter() - self.started, 2)

    def _guard(self) -> None:
        """The NaN guard: a non-finite loss since the last log line stops the run, naming the step."""
        bad = self.meter.first_bad_loss()
        if bad is not None:
            at = self.state.step - len(self.meter.pending) + bad[0] + 1
            raise TrainingError(f"loss became {bad[1]} at step {at}; stopped: {self._kept()}. Try a lower lr or "
                                "amp=off")

    def _skip(self, message: str) -> None:
        """An unreadable image left out (``skip_bad_images``): named on stderr (the first ten) and,
        each one once, in ``metrics.jsonl`` (``{"step", "skipped"}``)."""
        if message in self.skipped:
            return
        self.skipped.append(message)
        if self.processes.main and len(self.skipped) <= _SKIPS_SHOWN:
            print(f"resnetlab: skipped an unreadable image: {message}", file=sys.stderr)
        elif self.processes.main and len(self.skipped) == _SKIPS_SHOWN + 1:
            print(f"resnetlab: more unreadable images skipped: {self.out / runfolder.METRICS} names each",
                  file=sys.stderr)
        self.metrics.write({"step": self.state.step, "skipped": message})

    def _kept(self) -> str:
        """What a run that stops now leaves, and the command that goes on from there."""
        if self.last_good == 0 and not (self.out / runfolder.CHECKPOINT).is_file():
            return f"no checkpoint was written yet, so the same command starts {self.out} again"
        return f"the last good checkpoint (step {self.last_good}) is kept in {self.out}: continue with --resume"

    def _log(self) -> None:
        self._guard()
        step = self.state.step
        record = {"step": step, "epoch": round(step / self.steps_per_epoch, 3), "lr": self.state.lr,
                  **self.meter.take(self.processes), "time": self._elapsed()}
        self.metrics.write(record)
        self.board.scalars(step, {"train/loss": record["train_loss"], "train/err": record["train_err"],
                                  "train/lr": record["lr"], "train/img_s": record["img_s"]})

    def _evaluate(self) -> None:
        validation = _validate(self.state.eval_model, self.val_set, self.pipeline.crop, self.mean, self.std,
                               self.device, self.processes, self._skip if self.cfg.skip_bad_images else None)
        self.state.model.train()
        self.val_err = validation["val_err"] if validation is not None else None
        if validation is not None:
            self.metrics.write({"step": self.state.step, **validation, "time": self._elapsed()})
            self.board.scalars(self.state.step, {"val/err": self.val_err})
            self.state.schedule.observe(self.val_err)
        self.meter.since = time.perf_counter()  # images/s counts training time only

    def _checkpoint(self) -> None:
        self._guard()
        if self.processes.main:
            runfolder.save_checkpoint(self.out / runfolder.CHECKPOINT, {
                **self.state.state_dict(), "meter": self.meter.state_dict(), "meter_seconds": self.meter.seconds(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "metrics_offset": self.metrics.offset(), "elapsed": self._elapsed(), "skipped": self.skipped})
        self.last_good = self.state.step

    def _restore(self, saved: dict[str, Any]) -> None:
        self.state.load_state_dict(saved)
        self.meter.load_state_dict(saved.get("meter", []), self.device, float(saved.get("meter_seconds", 0.0)))
        torch.set_rng_state(saved["rng_cpu"])
        if self.device.type == "cuda" and saved.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(saved["rng_cuda"], self.device)
        self.elapsed_before = float(saved["elapsed"])
        self.skipped = list(saved.get("skipped", []))
        self.started = time.perf_counter()
        self.last_good = self.state.step
        self.metrics.truncate(int(saved["metrics_offset"]))


# ----------------------------------------------------------------------------- recipes by name


def train_recipe(
    recipe: str,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    data: str | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> RunResult:
    """``resnetlab train RECIPE key=value ... [--data] [--out] [--resume]``: the recipe with the
    ``key=value`` overrides applied (checked before any work), trained into ``out_dir`` (default
    ``runs/RECIPE``). With ``resume`` the run folder's ``config.json`` gives the config and the
    data, so ``--out DIR --resume`` alone continues a run; overrides may then change only keys
    that do not change the result (``device``, ``num_workers``, ...)."""
    out = Path(out_dir) if out_dir is not None else Path("runs") / recipe
    base = get_recipe(recipe)
    saved = runfolder.saved_config(out, recipe) if resume else None
    if saved is not None:
        saved_data = saved.pop("data", None)
        data = data or saved_data
        base = apply_overrides(base, saved)
    config = apply_overrides(base, parse_overrides(list(overrides)))
    return train(config, data=data, out_dir=out, resume=resume, progress=progress, provenance={"recipe": recipe})
