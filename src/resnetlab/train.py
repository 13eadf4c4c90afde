"""The training engine: one loop for every recipe (airbench-style: short, data on the device).

``train(config, data=..., out_dir=...)`` runs a :class:`~resnetlab.recipes.TrainConfig`:
SGD with momentum (Nesterov optional) and weight decay, multistep / plateau / cosine
schedules, linear warm-up or the paper's ResNet-110 rule (``warmup_until_train_error``,
section 4.2), optional label smoothing, EMA and gradient clipping, AMP (bf16/fp16),
channels_last and ``torch.compile``, and DistributedDataParallel under ``torchrun``.

Determinism and resume: the data order of epoch ``e`` is ``randperm(seed, e)`` and the
augmentation of step ``s`` is drawn from a generator seeded with ``(seed, s)``, so the data
of any step is a pure function of the step; a checkpoint (model, optimizer, schedule state,
AMP scaler, EMA, RNG states, step) therefore resumes bit-identically on CPU.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .data.datasets import ImageSet, open_dataset, open_train_val, stratified_sample
from .data.transforms import crop_flip, draw_crop_flip, image_transform, normalize, pca_lighting
from .device import resolve_device
from .errors import ConfigError, DataError, TrainingError
from .config import apply_overrides, parse_overrides
from .recipes import TrainConfig, get_recipe
from .registry import create_model
from . import runfolder

__all__ = ["RunResult", "train", "train_recipe", "build", "make_train_step", "learning_rate",
           "input_normalization"]


@dataclass
class RunResult:
    """What a run ended with."""

    out_dir: Path
    step: int
    iterations: int
    val_err: float | None
    weights: Path | None  # final.safetensors (None when interrupted)
    interrupted: bool
    seconds: float
    skipped_images: int = 0


# ----------------------------------------------------------------------------- schedule


def learning_rate(cfg: TrainConfig, step: int, total: int, milestones: list[int], state: dict[str, Any]) -> float:
    """Learning rate of (0-based) ``step`` of ``total``: a pure function of the step and the
    schedule ``state`` (plateau factor, ResNet-110 warm-up flag), both kept in checkpoints."""
    if cfg.warmup_until_train_error is not None and not state["warm"]:
        return cfg.warmup_lr  # "0.01 until the training error is below 80 %" (section 4.2)
    lr = cfg.lr * state["plateau_factor"]
    if cfg.schedule == "multistep":
        lr *= cfg.gamma ** bisect.bisect_right(milestones, step)
    elif cfg.schedule == "cosine":
        lr *= 0.5 * (1 + math.cos(math.pi * step / total))
    if step < cfg.warmup_iterations:
        lr *= (step + 1) / cfg.warmup_iterations
    return lr


# ----------------------------------------------------------------------------- the step


def build(
    cfg: TrainConfig, num_classes: int, device: torch.device, *, distributed: bool = False
) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.amp.GradScaler | None,
           torch.optim.swa_utils.AveragedModel | None]:
    """``(model, net, optimizer, scaler, ema)`` as a run trains them: ``model`` is the plain
    module (what is saved), ``net`` what the step calls (DDP- and/or compile-wrapped,
    channels_last), SGD foreach on CPU / fused on CUDA, a GradScaler for fp16, the EMA copy."""
    model = create_model(cfg.model, num_classes=num_classes, **cfg.model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if cfg.sync_bn and distributed:
        if device.type != "cuda":
            raise ConfigError("sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    # He et al. 2015 sections 3.4 / 4.2: SGD, momentum 0.9, weight decay on every weight.
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay, foreach=device.type != "cuda",
                                fused=device.type == "cuda" or None)
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
    ema = None
    if cfg.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    return model, net, optimizer, scaler, ema


def make_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    *,
    scaler: torch.amp.GradScaler | None = None,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """One optimizer step on a normalized batch: ``step(x, y) -> (loss_sum, correct)``, both
    detached device tensors (no host sync: read them only at log intervals).

    The batch is split into ``cfg.accumulate`` micro-batches whose gradients add up to the
    gradient of the mean loss; under DDP only the last one all-reduces.
    """
    device_type = next(model.parameters()).device.type
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    params = [p for p in model.parameters() if p.requires_grad]
    no_sync = getattr(model, "no_sync", None)

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), device=x.device, dtype=torch.int64)
        chunks = cfg.accumulate
        for i, (xb, yb) in enumerate(zip(x.chunk(chunks), y.chunk(chunks))):
            last = i == chunks - 1
            with (no_sync() if no_sync is not None and not last else contextlib.nullcontext()):
                with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
                scaled = loss / chunks
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            loss_sum += loss.detach().float() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
        if cfg.grad_clip:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        return loss_sum, correct

    return step


# ----------------------------------------------------------------------------- data


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and machines)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


class _Batches:
    """The training batches as a pure function of the step: epoch order ``randperm(seed,
    epoch)`` (last partial batch dropped), this rank's slice of each global batch, and the
    step's augmentation from a generator seeded with ``(seed, step)``."""

    def __init__(self, train: ImageSet, cfg: TrainConfig, device: torch.device, mean: Any, std: Any,
                 rank: int, world: int) -> None:
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        self.n = len(train)
        self.steps_per_epoch = self.n // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(f"batch_size {cfg.batch_size} is larger than the {self.n} training images")
        self.local = cfg.batch_size // world
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device)
        self.targets = train.targets.to(device)
        self.train = train
        self.images = train.images.to(device) if train.images is not None else None
        self._perm: tuple[int, torch.Tensor] | None = None
        self.skipped = 0

    def _indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(_seed(self.cfg.seed, epoch))
            self._perm = (epoch, torch.randperm(self.n, generator=gen))
        batch = self._perm[1][i * self.cfg.batch_size:(i + 1) * self.cfg.batch_size]
        return batch[self.rank * self.local:(self.rank + 1) * self.local]

    def _generator(self, step: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(_seed(self.cfg.seed, step, 1))

    def _finish(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """uint8 batch on the device -> normalized float (PCA lighting for ImageNet recipes)."""
        if self.cfg.augment in ("imagenet", "alexnet"):
            x = pca_lighting(x.float().div_(255), self._generator(step))
        x = normalize(x, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def in_memory(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches from ``start`` on, gathered and augmented as whole tensors on the device."""
        step = start
        while True:
            idx = self._indices(step).to(self.device)
            x = self.images[idx]
            if self.cfg.augment == "cifar":
                # draw for the whole global batch and keep this rank's slice: ranks see what one process would
                oy, ox, flip = draw_crop_flip(self.cfg.batch_size, self.cfg.pad, self._generator(step))
                part = slice(self.rank * self.local, (self.rank + 1) * self.local)
                x = crop_flip(x, self.cfg.pad, oy[part], ox[part], flip[part] & self.cfg.flip)
            yield self._finish(x, step), self.targets[idx]
            step += 1

    def from_folder(self, start: int, total: int, num_workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches from ``start`` on, decoded and augmented per image in DataLoader workers."""
        transform = image_transform(self.cfg.augment, self.cfg.crop, train=True) \
            if self.cfg.augment not in ("cifar", "none") else None
        items = _SeededItems(self.train, transform, self.cfg.skip_bad_images)
        sampler = _StepSampler(self, start, total)
        loader = torch.utils.data.DataLoader(
            items, batch_sampler=sampler, num_workers=num_workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            prefetch_factor=4 if num_workers > 0 else None)
        for step, (x, y, errors) in enumerate(loader, start):
            if errors and not self.cfg.skip_bad_images:
                raise DataError(errors[0])
            self.skipped += len(errors)
            if len(y) == 0:
                continue
            x = x.to(self.device, non_blocking=True)
            yield self._finish(x, step), y.to(self.device, non_blocking=True)


class _StepSampler:
    """Batch sampler of steps ``start..total-1``: this rank's ``(index, seed)`` items of each step."""

    def __init__(self, batches: _Batches, start: int, total: int) -> None:
        self.batches, self.start, self.total = batches, start, total

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        seed = self.batches.cfg.seed
        for s in range(self.start, self.total):
            yield [(i, _seed(seed, s, i)) for i in self.batches._indices(s).tolist()]


class _SeededItems(torch.utils.data.Dataset):
    """Items ``(index, seed)``: the image's random transform is drawn from ``seed`` (so it does
    not depend on the worker), and an unreadable image becomes its error message."""

    def __init__(self, data: ImageSet, transform: Callable | None, skip: bool) -> None:
        self.data, self.transform, self.skip = data, transform, skip

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor | None, int, str | None]:
        index, seed = item
        try:
            image, target = self.data[index]
        except DataError as exc:
            return None, -1, str(exc)
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                image = self.transform(image)
        return image, target, None


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    good = [(im, t) for im, t, err in items if err is None]
    errors = [err for _, _, err in items if err is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), errors
    return torch.stack([im for im, _ in good]), torch.tensor([t for _, t in good]), errors


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


# ----------------------------------------------------------------------------- distributed


@contextlib.contextmanager
def _process_group() -> Iterator[tuple[int, int, int]]:
    """``(rank, world_size, local_rank)`` under torchrun, else (0, 1, 0). A process group this
    creates is destroyed on exit; one the caller created is left to the caller."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield 0, 1, 0
        return
    owned = not dist.is_initialized()
    if owned:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is not None and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun's agent keeps ONE store for all restarts (--max-restarts): the dead attempt's
            # gloo/nccl addresses are still in it and a restarted rank would connect to them
            # ("connectFullMesh ... Connection refused", pytorch/pytorch#135712). Each attempt
            # rendezvouses under its own prefix of the agent's store instead.
            agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False)
            dist.init_process_group(backend, store=dist.PrefixStore(f"resnetlab/attempt{restart}", agent),
                                    rank=int(os.environ["RANK"]), world_size=world)
        else:
            dist.init_process_group(backend)
    try:
        yield dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))
    finally:
        if owned:
            dist.destroy_process_group()


def _all_sum(values: list[float], device: torch.device, world: int) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------- the loop


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and returns at the next step."""

    def __init__(self) -> None:
        self.raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if hasattr(signal, "SIGTERM") and _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.raised = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _validate(model: nn.Module, val: ImageSet | None, cfg: TrainConfig, mean: Any, std: Any,
              device: torch.device) -> float | None:
    if val is None or len(val) == 0:
        return None
    from .evaluate import evaluate

    lazy = val.images is None
    data = val.with_transform(image_transform(cfg.augment, cfg.crop, train=False)) if lazy else val
    result = evaluate(model, data, protocol="center" if lazy else "full", mean=mean, std=std,
                      input_size=(3, cfg.crop, cfg.crop) if lazy else None, batch_size=256, device=device,
                      progress=False, num_workers=0 if not lazy else None)
    model.train()
    return result["top1_err"]


def _run_length(cfg: TrainConfig, steps_per_epoch: int) -> tuple[int, list[int]]:
    """Total steps and milestones in steps (``epochs`` > 0: both were given in epochs)."""
    if cfg.epochs > 0:
        return cfg.epochs * steps_per_epoch, [m * steps_per_epoch for m in cfg.milestones]
    return cfg.iterations, list(cfg.milestones)


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
    with _process_group() as (rank, world, local_rank):
        return _train(config, data, Path(out_dir), resume, progress, provenance, rank, world, local_rank)


def _train(config: TrainConfig, data: str | None, out: Path, resume: bool, progress: bool,
           provenance: dict[str, Any] | None, rank: int, world: int, local_rank: int) -> RunResult:
    started = time.perf_counter()
    data = data or config.data
    if not data:
        raise ConfigError("this recipe needs --data (e.g. cifar10=PATH); `digits` trains on the built-in digits")
    if config.batch_size % (world * config.accumulate):
        raise ConfigError(f"batch_size {config.batch_size} must be divisible by processes x accumulate "
                          f"({world} x {config.accumulate})")
    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    resolved = dict(config.to_dict(), data=data)  # the data actually used, for config.json and resume checks
    # torchrun --max-restarts re-runs the same command after a rank died: continue the checkpoint
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    checkpoint_path = runfolder.prepare(out, resolved, resume or (restarted and (out / runfolder.CHECKPOINT).is_file()))
    if world > 1:
        dist.barrier()  # every rank has checked the folder before rank 0 writes into it
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # data (all ranks hold the same in-memory set; each takes its slice of every global batch)
    if config.val == "holdout":
        train_set, val_set = open_train_val(data)
    else:
        train_set = open_dataset(data, "train")
        val_set = open_dataset(data, "test") if config.val == "test" else None
    if config.train_subset is not None:
        train_set = train_set.subset(stratified_sample(train_set.targets, config.train_subset))
    mean, std = input_normalization(config, train_set)
    batches = _Batches(train_set, config, device, mean, std, rank, world)
    total, milestones = _run_length(config, batches.steps_per_epoch)

    torch.manual_seed(config.seed)
    model, net, optimizer, scaler, ema = build(config, len(train_set.classes), device, distributed=world > 1)
    step_fn = make_train_step(net, optimizer, config, scaler=scaler, ema=ema)
    schedule: dict[str, Any] = {"warm": False, "plateau_factor": 1.0, "best_val": None, "bad_evals": 0}

    main = rank == 0
    metrics = runfolder.MetricsLog(out, enabled=main)
    start, elapsed_before = 0, 0.0
    if checkpoint_path is not None:
        state = runfolder.load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule = state["schedule"]
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        start, elapsed_before = int(state["step"]), float(state["elapsed"])
        metrics.truncate(int(state["metrics_offset"]))
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        runfolder.write_config(out, resolved, runfolder.environment(device, world), provenance)

    def save(step: int) -> None:
        if not main:
            return
        runfolder.save_checkpoint(out / runfolder.CHECKPOINT, {
            "step": step, "epoch": step // batches.steps_per_epoch, "position": step % batches.steps_per_epoch,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "metrics_offset": metrics.offset(), "elapsed": elapsed_before + time.perf_counter() - started,
        })

    num_workers = config.num_workers if config.num_workers >= 0 else min(8, os.cpu_count() or 1)
    stream = batches.in_memory(start) if batches.images is not None else batches.from_folder(start, total, num_workers)
    eval_model = ema.module if ema is not None else model
    pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (loss_sum, correct, n) since the last log
    warm_window: list[torch.Tensor] = []
    val_err: float | None = None
    last_good = start
    interrupted = False
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, unit="step", desc=f"train {config.model}", file=sys.stderr,
               disable=not (progress and main), dynamic_ncols=True)
    window_start = time.perf_counter()
    model.train()

    def check_finite(step: int) -> None:
        losses = torch.stack([p[0] for p in pending]) if pending else torch.zeros(0)
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            at = step - len(pending) + int(bad[0]) + 1
            raise TrainingError(f"loss became {losses[int(bad[0])].item()} at step {at}; stopped. The last good "
                                f"checkpoint (step {last_good}) is kept in {out}; try a lower lr or amp=off")

    try:
        with _StopFlag() as stop:
            for step in range(start, total):
                if world == 1 and stop.raised:
                    interrupted = True
                    break
                x, y = next(stream)
                lr = learning_rate(config, step, total, milestones, schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum, correct = step_fn(x, y)
                pending.append((loss_sum, correct, len(y)))
                done = step + 1
                bar.update(1)
                if config.warmup_until_train_error is not None and not schedule["warm"]:
                    warm_window.append(correct)
                    if len(warm_window) == 10:  # a sync every 10 steps, during the warm-up only
                        seen = 10 * len(y)
                        err = 1 - _all_sum([float(torch.stack(warm_window).sum())], device, world)[0] / (seen * world)
                        warm_window.clear()
                        if err < config.warmup_until_train_error:
                            schedule["warm"] = True
                if done % config.log_every == 0 or done == total:
                    check_finite(step)
                    loss_total, hits, n = _all_sum([float(sum(p[0] for p in pending)),
                                                    float(sum(p[1] for p in pending)),
                                                    float(sum(p[2] for p in pending))], device, world)
                    seconds = time.perf_counter() - window_start
                    record = {"step": done, "epoch": round(done / batches.steps_per_epoch, 3), "lr": lr,
                              "train_loss": loss_total / n, "train_err": 1 - hits / n, "img_s": round(n / seconds, 1),
                              "time": round(elapsed_before + time.perf_counter() - started, 2)}
                    metrics.write(record)
                    bar.set_postfix(loss=f"{record['train_loss']:.3f}", err=f"{record['train_err']:.3f}")
                    pending.clear()
                    window_start = time.perf_counter()
                    if world > 1:
                        flag = _all_sum([float(stop.raised)], device, world)[0]
                        if flag:
                            interrupted = True
                            last_good = done
                            save(done)
                            break
                if (config.eval_every and done % config.eval_every == 0) or done == total:
                    val_err = _validate(eval_model, val_set, config, mean, std, device)
                    if val_err is not None:
                        metrics.write({"step": done, "val_err": val_err,
                                       "time": round(elapsed_before + time.perf_counter() - started, 2)})
                        _plateau(config, schedule, val_err)
                    window_start = time.perf_counter()
                if config.checkpoint_every and done % config.checkpoint_every == 0:
                    check_finite(step)
                    save(done)
                    last_good = done
            else:
                step = total
    except torch.OutOfMemoryError:
        raise TrainingError(
            f"out of memory on {device} at batch_size={config.batch_size} (step {step + 1}); the last checkpoint "
            f"(step {last_good}) is kept. Try a smaller batch_size (with accumulate=K to keep the batch), "
            "amp=bf16, channels_last=true, or a memory-efficient model "
            '(DenseNet: model_kwargs={"memory_efficient":true})') from None
    finally:
        bar.close()
    if interrupted:
        if world == 1:
            check_finite(step - 1)
            done = step
            save(done)
        return RunResult(out, done, total, val_err, None, True, time.perf_counter() - started, batches.skipped)

    weights = out / "final.safetensors"
    if main:
        save(total)
        _finish(eval_model, config, train_set, mean, std, out, weights)
    return RunResult(out, total, total, val_err, weights if main else None, False,
                     time.perf_counter() - started, batches.skipped)


def _plateau(cfg: TrainConfig, schedule: dict[str, Any], val_err: float) -> None:
    """``plateau``: divide the lr by 1/gamma after ``plateau_patience`` evaluations without a new
    best validation error (section 3.4: "divided by 10 when the error plateaus")."""
    if cfg.schedule != "plateau":
        return
    if schedule["best_val"] is None or val_err < schedule["best_val"]:
        schedule["best_val"], schedule["bad_evals"] = val_err, 0
        return
    schedule["bad_evals"] += 1
    if schedule["bad_evals"] >= cfg.plateau_patience:
        schedule["plateau_factor"] *= cfg.gamma
        schedule["bad_evals"] = 0


def _finish(model: nn.Module, cfg: TrainConfig, train_set: ImageSet, mean: Any, std: Any, out: Path,
            weights: Path) -> None:
    """``final.safetensors`` (with the input normalization used) and ``curves.png``."""
    from .analysis.plots import Curve, plot_curves
    from .weights import save_weights

    size = tuple(train_set.images.shape[1:]) if train_set.images is not None else (3, cfg.crop, cfg.crop)
    model = model.to(memory_format=torch.contiguous_format)
    save_weights(model, weights, mean=torch.as_tensor(mean).tolist(), std=torch.as_tensor(std).tolist(),
                 classes=train_set.classes, source=f"resnetlab train ({train_set.name})", input_size=size)
    curve = Curve.from_metrics(runfolder.read_metrics(out), cfg.model)
    plot_curves({cfg.model: [curve]}, out / "curves.png", title=f"{cfg.model} on {train_set.name}")


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
    ``key=value`` overrides applied (checked before any work), trained into ``out_dir``
    (default ``runs/RECIPE``)."""
    config = apply_overrides(get_recipe(recipe), parse_overrides(list(overrides)))
    return train(config, data=data, out_dir=out_dir or Path("runs") / recipe, resume=resume, progress=progress)
