"""The learning-rate schedule of a run and the two decisions that depend on how training goes.

``Schedule.lr(step)`` is a pure function of the step and of the schedule's state; the state
changes only at two decisions, each taken once (on process 0) and broadcast, so that processes
can never disagree on the learning rate:

- the ResNet-110 warm-up of section 4.2, "0.01 to warm up the training until the training error
  is below 80%": the training error is counted over windows of :data:`WARMUP_WINDOW` steps (the
  counts of the current window are part of the state, so a resume at any step decides at the
  same step as an uninterrupted run);
- the plateau rule of section 3.4, "divided by 10 when the error plateaus": ``observe(val_err)``
  after each evaluation; ``plateau_patience`` evaluations without a new best divide the lr by
  ``1 / gamma``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["WARMUP_WINDOW", "Schedule"]

#: steps over which the training error of the ResNet-110 warm-up is measured (one host sync each)
WARMUP_WINDOW = 10


def _no_sync(values: list[float]) -> list[float]:
    return values


@dataclass
class Schedule:
    """A run's learning rate: ``multistep`` (``milestones`` in steps), ``cosine``, ``plateau`` or
    ``constant``, times ``gamma`` per milestone or plateau, with an optional linear warm-up from
    a tenth of that over ``warmup_iterations`` and the paper's warm-up at ``warmup_lr`` until the
    training error is below ``warmup_until_train_error`` (or, He et al. 2016, for the first
    ``warmup_lr_iterations`` steps).

    ``all_sum`` and ``broadcast`` connect the processes of a distributed run (identity in one
    process): the warm-up window is summed over processes, and each decision is process 0's.
    """

    base_lr: float
    kind: str
    total: int
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_iterations: int = 0
    warmup_lr: float = 0.01
    warmup_until_train_error: float | None = None
    plateau_patience: int = 3
    warmup_lr_iterations: int = 0
    all_sum: Callable[[list[float]], list[float]] = field(default=_no_sync, repr=False)
    broadcast: Callable[[list[float]], list[float]] = field(default=_no_sync, repr=False)
    # --- state (checkpointed)
    warm: bool = False
    plateau_factor: float = 1.0
    best_val: float | None = None
    bad_evals: int = 0
    window: list[float] = field(default_factory=lambda: [0.0, 0.0])  # errors, images of the current window
    _pending: list[tuple[torch.Tensor, int]] = field(default_factory=list, repr=False)  # device counts, unsynced

    def __post_init__(self) -> None:
        self.warm = self.warm or self.warmup_until_train_error is None

    def lr(self, step: int) -> float:
        """The learning rate of (0-based) ``step``."""
        if not self.warm or step < self.warmup_lr_iterations:
            # section 4.2: 0.01 until the training error is below 80 %; He et al. 2016 (appendix): "a smaller
            # learning rate of 0.01 at the beginning 400 iterations" of every CIFAR net
            return self.warmup_lr
        lr = self.base_lr * self.plateau_factor
        if self.kind == "multistep":
            lr *= self.gamma ** bisect.bisect_right(self.milestones, step)
        elif self.kind == "cosine":
            lr *= 0.5 * (1 + math.cos(math.pi * step / self.total))
        if step < self.warmup_iterations:  # linear, from lr/10 at step 0 (not in the paper)
            lr *= 0.1 + 0.9 * step / self.warmup_iterations
        return lr

    def record(self, step: int, correct: torch.Tensor, seen: int) -> None:
        """Count the training predictions of ``step`` (a device tensor: no sync) while warming up;
        at the end of every window of :data:`WARMUP_WINDOW` steps, decide whether warm-up is over."""
        if self.warm:
            return
        self._pending.append((correct, seen))
        if (step + 1) % WARMUP_WINDOW == 0:
            self._flush()
            errors, images = self.all_sum(self.window)
            self.window = [0.0, 0.0]
            decided = images > 0 and errors / images < self.warmup_until_train_error
            self.warm = bool(self.broadcast([float(decided)])[0])

    def _flush(self) -> None:
        """Move the device counts of the current window into ``window`` (one host sync)."""
        if self._pending:
            correct = float(torch.stack([c for c, _ in self._pending]).sum())
            seen = sum(n for _, n in self._pending)
            self.window = [self.window[0] + seen - correct, self.window[1] + seen]
            self._pending.clear()

    def observe(self, val_err: float) -> None:
        """A validation error, for the ``plateau`` rule (section 3.4: "divided by 10 when the error plateaus")."""
        if self.kind != "plateau":
            return
        if self.best_val is None or val_err < self.best_val:
            self.best_val, self.bad_evals = val_err, 0
        else:
            self.bad_evals += 1
            if self.bad_evals >= self.plateau_patience:
                self.plateau_factor *= self.gamma
                self.bad_evals = 0
        best = -1.0 if self.best_val is None else self.best_val
        factor, bad, best = self.broadcast([self.plateau_factor, float(self.bad_evals), best])
        self.plateau_factor, self.bad_evals, self.best_val = factor, int(bad), None if best < 0 else best

    def state_dict(self) -> dict[str, Any]:
        """The decisions taken so far and the counts of the open warm-up window."""
        self._flush()
        return {"warm": self.warm, "plateau_factor": self.plateau_factor, "best_val": self.best_val,
                "bad_evals": self.bad_evals, "window": list(self.window)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.warm, self.plateau_factor = bool(state["warm"]), float(state["plateau_factor"])
        self.best_val, self.bad_evals = state["best_val"], int(state["bad_evals"])
        self.window = [float(v) for v in state["window"]]
        self._pending.clear()
