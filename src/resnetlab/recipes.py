"""The papers' training recipes as data: one frozen :class:`TrainConfig` per recipe.

nanoGPT-style: every field has a default, a recipe is a set of changes to it, and a run
changes fields with ``key=value`` (:func:`resnetlab.config.apply_overrides`, type-checked);
range checks live in ``__post_init__`` and name the key. Numbers come from PAPER.md; a
comment names the section.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError
from .constants import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN

__all__ = ["TrainConfig", "RECIPES", "RESULT_NEUTRAL_KEYS", "get_recipe", "list_recipes", "result_changes"]

#: The config keys that change how fast a run goes or what it logs, never what it computes (up to
#: float rounding order): a resumed run may change them, a reproduce run ignores them when it
#: decides whether a finished run can be reused, and a run that changes only these still used
#: the recipe unchanged. ``eval_every`` is NOT here: it sets when the plateau schedule looks at
#: the validation error. ``threads`` is a run's CPU thread count. The one list:
#: everything else in resnetlab (classification and detection runs) imports it.
RESULT_NEUTRAL_KEYS = frozenset({"device", "num_workers", "compile", "channels_last", "deterministic", "log_every",
                                 "checkpoint_every", "threads"})


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run. Lengths, milestones and intervals count iterations
    (optimizer steps) unless ``epochs`` > 0, which then gives the run length and makes
    ``milestones`` epochs."""

    # --- network and data
    model: str = "cifar_resnet20"
    model_kwargs: dict = dataclasses.field(default_factory=dict)  # e.g. {"shortcut": "B"}
    data: str = ""  # default --data of the recipe ("" = must be given)
    val: Literal["holdout", "test", "none"] = "holdout"  # holdout: the fixed 45k/5k split (section 4.2)
    train_subset: int | None = None  # train on a fixed class-balanced sample of N images (shortened runs)
    augment: Literal["cifar", "imagenet", "alexnet", "random_resized_crop", "none"] = "cifar"
    pad: int = 4  # cifar: pixels padded on each side before the random crop (section 4.2); 0 for the others
    flip: bool = True  # random horizontal flip, every augmentation (sections 3.4, 4.2)
    crop: int | None = None  # training crop side; None: in-memory images' own size, 224 for folders
    normalization: Literal["per_pixel_mean", "per_channel"] = "per_pixel_mean"
    mean: tuple[float, ...] = CIFAR10_MEAN  # per_channel: subtracted; per_pixel_mean: from the data (mean= refused)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)  # divisor after the mean subtraction
    # --- optimisation
    batch_size: int = 128
    accumulate: int = 1  # micro-batches per step (same gradient as one batch; BN sees micro-batches)
    iterations: int = 64_000
    epochs: int = 0
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: Literal["multistep", "plateau", "cosine", "constant"] = "multistep"
    milestones: tuple[int, ...] = (32_000, 48_000)
    gamma: float = 0.1
    plateau_patience: int = 3  # evaluations without a new best validation error before lr *= gamma
    warmup_iterations: int = 0  # linear warm-up from lr/10 (not in the paper)
    warmup_lr: float = 0.01
    warmup_until_train_error: float | None = None  # lr = warmup_lr until training error < this (ResNet-110)
    warmup_lr_iterations: int = 0  # lr = warmup_lr for the first N iterations (He et al. 2016: 400)
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0: off; else the EMA weights are evaluated and saved
    grad_clip: float = 0.0  # 0: off; else max global grad norm
    # --- speed
    device: str = "auto"  # auto: cuda if available, else cpu
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool = True
    compile: bool = False
    num_workers: int = -1  # -1: auto (0 for in-memory data)
    threads: int = 0  # CPU threads; 0: the command's choice (resnetlab.machine.choose_threads), N: exactly N
    deterministic: bool = False
    sync_bn: bool = False  # under torchrun on GPUs: BN statistics over the global batch
    # --- run folder
    seed: int = 0
    log_every: int = 100
    eval_every: int = 2_000  # 0: only at the end
    checkpoint_every: int = 1_000
    skip_bad_images: bool = False  # lazy image folders: skip unreadable files and count them

    def __post_init__(self) -> None:
        positive = ("batch_size", "accumulate", "log_every")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        non_negative = ("iterations", "epochs", "threads", "pad", "momentum", "weight_decay", "warmup_iterations",
                        "warmup_lr_iterations", "label_smoothing", "grad_clip", "eval_every", "checkpoint_every",
                        "plateau_patience")
        for key in non_negative:
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.iterations < 1 and self.epochs < 1:
            raise ConfigError("iterations (or epochs) must be >= 1")
        for key in ("lr", "warmup_lr"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.batch_size % self.accumulate:
            raise ConfigError(f"batch_size {self.batch_size} is not divisible by accumulate {self.accumulate}")
        if list(self.milestones) != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise ConfigError(f"milestones must be increasing positive steps, got {list(self.milestones)}")
        if self.momentum >= 1 or (self.nesterov and self.momentum == 0):
            raise ConfigError(f"momentum must be in [0, 1) (> 0 with nesterov), got {self.momentum}")
        if self.label_smoothing >= 1 or not 0 <= self.ema_decay < 1:
            bad = "label_smoothing" if self.label_smoothing >= 1 else "ema_decay"
            raise ConfigError(f"{bad} must be in [0, 1), got {getattr(self, bad)}")
        if self.warmup_until_train_error is not None and not 0 < self.warmup_until_train_error < 1:
            raise ConfigError(f"warmup_until_train_error must be in (0, 1), got {self.warmup_until_train_error}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ConfigError("mean and std must be 3 numbers (RGB, [0, 1] scale), std > 0")
        if self.crop is not None and self.crop < 8:
            raise ConfigError(f"crop must be >= 8, got {self.crop}")
        if self.schedule == "plateau" and (self.val == "none" or self.eval_every == 0):
            why = "val=none" if self.val == "none" else "eval_every=0"
            raise ConfigError(f"schedule=plateau needs validation errors to watch, but {why}; "
                              "use val=holdout with eval_every > 0, or another schedule")
        if self.train_subset is not None and self.train_subset < 1:
            raise ConfigError(f"train_subset must be >= 1, got {self.train_subset}")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            raise ConfigError(f"device must be auto, cpu, cuda[:N] or mps, got {self.device!r}")
        self._refuse_unused()

    def _refuse_unused(self) -> None:
        """A setting the run would parse and then not use is refused, naming what would use it:
        ``milestones`` outside the multistep schedule, ``gamma`` with the cosine and constant ones,
        ``warmup_lr`` without ``warmup_until_train_error``, ``mean`` under the per-pixel mean. Such
        a field must stay at its default (``milestones`` empty)."""
        default = {f.name: f.default for f in dataclasses.fields(self)}
        if self.milestones and self.schedule != "multistep":
            raise ConfigError(f"milestones={list(self.milestones)} with schedule={self.schedule}: only the multistep "
                              "schedule has milestones; set milestones=[]")
        if self.gamma != default["gamma"] and self.schedule in ("cosine", "constant"):
            raise ConfigError(f"gamma={self.gamma} with schedule={self.schedule}: only the multistep and plateau "
                              "schedules multiply the lr by gamma")
        if self.warmup_lr != default["warmup_lr"] and self.warmup_until_train_error is None \
                and not self.warmup_lr_iterations:
            raise ConfigError(f"warmup_lr={self.warmup_lr} without warmup_until_train_error or warmup_lr_iterations: "
                              "it is the lr of the paper's warm-up until the training error is below that (section "
                              "4.2), or for that many iterations (He et al. 2016); set both")
        if self.warmup_until_train_error is not None and self.warmup_lr_iterations:
            raise ConfigError("warmup_until_train_error and warmup_lr_iterations are two warm-ups at warmup_lr "
                              "(until an error, for a number of iterations); set one")
        if tuple(self.mean) != default["mean"] and self.normalization == "per_pixel_mean":
            raise ConfigError(f"mean={list(self.mean)} with normalization=per_pixel_mean: the per-pixel mean is "
                              "computed from the training images; set normalization=per_channel to subtract mean")

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready data (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def __hash__(self) -> int:  # model_kwargs is a dict: hash the JSON form
        import json

        return hash(json.dumps(self.to_dict(), sort_keys=True))


_BASE = TrainConfig()

#: The recipes. Each is the paper's text as data; the comment cites it.
RECIPES: dict[str, TrainConfig] = {
    # He et al. 2015, section 4.2: batch 128, lr 0.1 /10 at 32k and 48k, stop at 64k, wd 1e-4,
    # momentum 0.9, 45k/5k split, pad-4 crop + flip, per-pixel mean subtraction. For
    # ResNet-110 add warmup_until_train_error=0.8 (lr 0.01 until training error < 80 %).
    "paper_cifar": _BASE,
    # The same recipe for the models the paper reports (Table 6, Figure 6): section 4.2 chose the
    # 64k length "on a 45k/5k train/val split"; the reported nets, like the common reproductions,
    # then train on all 50,000 training images. The test error is recorded every 1,000
    # iterations, as Figure 6 draws it: watched, never used to choose anything.
    "paper_cifar_50k": dataclasses.replace(_BASE, val="test", eval_every=1_000),
    # He et al. 2015, section 3.4: batch 256, lr 0.1 /10 on plateau, up to 60e4 iterations,
    # wd 1e-4, momentum 0.9; scale augmentation [256, 480], 224 crop, flip, PCA lighting,
    # mean subtraction (a per-pixel mean over random crops is flat: a per-channel mean).
    "paper_imagenet": dataclasses.replace(
        _BASE, model="resnet34", batch_size=256, iterations=600_000, schedule="plateau", milestones=(),
        augment="imagenet", crop=224, pad=0, normalization="per_channel", mean=IMAGENET_MEAN, eval_every=5_000,
        checkpoint_every=2_000, log_every=200),
    # Krizhevsky et al. 2012: batch 128, momentum 0.9, wd 5e-4, lr 0.01 /10 on plateau,
    # about 90 epochs, 224 crops of 256x256 images + flips, PCA colour augmentation.
    "alexnet_imagenet": dataclasses.replace(
        _BASE, model="alexnet", batch_size=128, epochs=90, iterations=0, lr=0.01, weight_decay=5e-4,
        schedule="plateau", milestones=(), augment="alexnet", crop=224, pad=0, normalization="per_channel",
        mean=IMAGENET_MEAN, eval_every=5_000, checkpoint_every=2_000, log_every=200),
    # Huang et al. 2017 (C10+): batch 64, 300 epochs, lr 0.1 /10 at 50 % and 75 %, wd 1e-4,
    # Nesterov momentum 0.9, pad-4 crop + flip, per-channel normalisation.
    "densenet_cifar": dataclasses.replace(
        _BASE, model="densenet_bc_100_k12", batch_size=64, epochs=300, iterations=0, milestones=(150, 225),
        nesterov=True, normalization="per_channel", mean=CIFAR10_MEAN, std=CIFAR10_STD),
    # He et al. 2016 (appendix): section 4.2's CIFAR recipe above, and for every CIFAR net "a smaller
    # learning rate of 0.01 at the beginning 400 iterations", then back to 0.1 (the 1001-layer net's
    # warm-up). Its ResNet-164 by default; model=preact_resnet1001 for the 1001-layer net.
    "paper_cifar_preact": dataclasses.replace(_BASE, model="preact_resnet164", warmup_lr_iterations=400),
    # Zagoruyko & Komodakis 2016, section 3: batch 128, 200 epochs, lr 0.1 x 0.2 at epochs 60, 120 and
    # 160, weight decay 5e-4, Nesterov momentum 0.9, random crops of the 4-pixel padded images and flips,
    # per-channel mean/std, all 50,000 training images. The paper pads by reflection, we pad with zeros.
    "wrn_cifar": dataclasses.replace(
        _BASE, model="wrn_28_10", val="test", epochs=200, iterations=0, milestones=(60, 120, 160), gamma=0.2,
        weight_decay=5e-4, nesterov=True, normalization="per_channel", mean=CIFAR10_MEAN, std=CIFAR10_STD),
    # The CIFAR recipe scaled to the built-in digits (1,293 training images of 16x16): the same
    # net, optimiser and schedule shape (/10 at 50 % and 75 % of the run), pad 2 on 16 pixels,
    # no flips (digits are not mirror-symmetric).
    "demo": dataclasses.replace(
        _BASE, data="digits", batch_size=64, iterations=400, milestones=(200, 300), pad=2, flip=False,
        log_every=20, eval_every=100, checkpoint_every=100),
}


def result_changes(config: dict[str, Any], reference: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (reference value, config value)}`` for every key outside :data:`RESULT_NEUTRAL_KEYS`
    whose value differs between two resolved configs (``TrainConfig.to_dict()`` plus ``data``).
    A key one side lacks (a run folder written before the key existed) counts as the field's
    default, which is what that run did: adding a knob never strands the runs made before it."""
    defaults = _BASE.to_dict()
    pairs = {k: (reference.get(k, defaults.get(k)), config.get(k, defaults.get(k)))
             for k in sorted(set(config) | set(reference)) if k not in RESULT_NEUTRAL_KEYS}
    return {k: (old, new) for k, (old, new) in pairs.items() if old != new}


def list_recipes() -> list[str]:
    """Names of the recipes."""
    return list(RECIPES)


def get_recipe(name: str) -> TrainConfig:
    """The recipe ``name``; an unknown name is a :class:`ConfigError` listing the recipes."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}") from None
