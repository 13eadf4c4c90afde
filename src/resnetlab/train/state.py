"""What a training step changes, as one object (open_clip's ``TrainState``), and the step itself."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..errors import ConfigError
from ..recipes import TrainConfig
from ..registry import create_model
from .schedule import Schedule

__all__ = ["TrainState", "build", "make_train_step", "StepFn"]

#: ``step(x, y) -> (loss_sum, correct)``: one optimizer step on a normalized batch, both results
#: detached device tensors (no host sync)
StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainState:
    """Everything a training step changes: ``model`` is the plain module (what is saved), ``net``
    what the step calls (DDP- and/or compile-wrapped), then the optimizer, the fp16 loss scaler,
    the EMA copy, the schedule and the number of steps done."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    ema: AveragedModel | None
    schedule: Schedule
    step: int = 0
    lr: float = 0.0  # the learning rate of the latest step

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def set_lr(self) -> float:
        """Set the optimizer to the schedule's learning rate for the next step; returns it."""
        self.lr = self.schedule.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """The resumable state (tensors and plain data only: read back with ``weights_only=True``)."""
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "schedule": self.schedule.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.schedule.load_state_dict(state["schedule"])
        self.step = int(state["step"])


def build(cfg: TrainConfig, num_classes: int, device: torch.device, schedule: Schedule, *,
          distributed: bool = False) -> TrainState:
    """The :class:`TrainState` a run of ``cfg`` starts from: the model (seeded by the caller),
    channels_last if asked, SyncBatchNorm/DDP/compile wrappers, SGD (foreach on CPU, fused on
    CUDA), a GradScaler for fp16 and the EMA copy."""
    model = create_model(cfg.model, num_classes=num_classes, **cfg.model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and distributed:
        if device.type != "cuda":
            raise ConfigError("sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    # He et al. 2015 sections 3.4 / 4.2: SGD, momentum 0.9, weight decay on every weight.
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay, foreach=device.type != "cuda",
                                fused=device.type == "cuda" or None)
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) \
        if cfg.ema_decay else None
    return TrainState(model, net, optimizer, scaler, ema, schedule)


def make_train_step(state: TrainState, cfg: TrainConfig) -> StepFn:
    """One optimizer step of ``state`` on a normalized batch.

    The batch is split into ``cfg.accumulate`` micro-batches whose gradients add up to the
    gradient of the mean loss; under DDP only the last one all-reduces. Optional: AMP autocast,
    label smoothing, gradient clipping (after unscaling), the EMA update.
    """
    net, optimizer, scaler, ema = state.net, state.optimizer, state.scaler, state.ema
    device_type = next(state.model.parameters()).device.type
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    params = [p for p in state.model.parameters() if p.requires_grad]
    no_sync = getattr(net, "no_sync", None)

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), device=x.device, dtype=torch.int64)
        chunks = cfg.accumulate
        for i, (xb, yb) in enumerate(zip(x.chunk(chunks), y.chunk(chunks))):
            last = i == chunks - 1
            with (no_sync() if no_sync is not None and not last else contextlib.nullcontext()):
                with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = net(xb)
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
            ema.update_parameters(state.model)
        return loss_sum, correct

    return step
