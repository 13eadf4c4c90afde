"""The training engine: one loop for every recipe (airbench-style: short, data on the device).

- :mod:`.loop`: ``train(config, data=..., out_dir=...)``, ``train_recipe(name, overrides, ...)``,
  the per-step loop and its hooks (NaN guard and log, validation, checkpoint);
- :mod:`.state`: :class:`TrainState` (model, wrapped model, optimizer, scaler, EMA, schedule,
  step) and the optimizer step;
- :mod:`.schedule`: :class:`Schedule` (the lr of a step, the ResNet-110 warm-up and plateau decisions);
- :mod:`.distributed`: the ``torchrun`` process group, the engine's few collectives and the
  one interrupt path (:class:`StopRequest`).

The data side (which augmentation runs where, the batches of a step) is
:mod:`resnetlab.data.pipeline`. A checkpoint holds the whole state (including the open warm-up
window and the counts since the last log line), the RNG states and the metrics offset, so a run
killed at any step resumes bit-identically on CPU.
"""

from .distributed import Processes, StopRequest, process_group
from .loop import Hook, Meter, RunResult, input_normalization, run_steps, train, train_recipe
from .schedule import WARMUP_WINDOW, Schedule
from .state import StepFn, TrainState, build, make_train_step

__all__ = [
    "train",
    "train_recipe",
    "RunResult",
    "TrainState",
    "Schedule",
    "WARMUP_WINDOW",
    "build",
    "make_train_step",
    "StepFn",
    "input_normalization",
    "run_steps",
    "Hook",
    "Meter",
    "Processes",
    "process_group",
    "StopRequest",
]
