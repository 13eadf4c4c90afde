"""The paper's experiments as data: their settings and the :data:`EXPERIMENTS` table.

An experiment is one entry of :data:`EXPERIMENTS`: the paper's claim, its settings (the
paper's values are the defaults of the entry) and the runner that measures it
(:mod:`resnetlab.reproduce.runners`).  Adding an experiment is one entry here and one runner.
:func:`run_experiment` runs one entry into ``ROOT/<experiment>/`` (``experiment.json``,
``table.md``, PNGs); its training runs go to ``ROOT/runs/`` (:mod:`resnetlab.reproduce.runs`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import apply_overrides, parse_overrides
from ..detection.experiments import DETECTION_EXPERIMENTS, run_table7, run_table8
from ..errors import ConfigError
from ..files import atomic_write_text
from ..models.cifar_resnet import CIFAR_DEPTHS
from ..recipes import RESULT_NEUTRAL_KEYS, get_recipe
from . import runners
from .runs import dataset_name, hardware
from .tables import fmt_value

__all__ = ["Table1Settings", "CifarSettings", "Experiment", "EXPERIMENTS", "DEFAULT_ROOT", "Runner", "settings_note",
           "run_experiment"]

DEFAULT_ROOT = Path("runs/reproduce")


@dataclass(frozen=True)
class Table1Settings:
    """Table 1: which registered ImageNet models to measure (glob over ``resnetlab list``)."""

    models: str = "*"


@dataclass(frozen=True)
class CifarSettings:
    """Settings of a CIFAR-10 experiment; each entry's defaults are the paper's (section 4.2).

    ResNets are trained at every depth of ``depths``, plain twins at the depths that are in
    both ``depths`` and ``plain_depths``.  ``iterations`` (None: the recipe's 64k, milestones
    scaled with it), ``train_subset`` (None: all 45k training images) and fewer ``depths``
    or ``seeds`` shorten a run.  ``grad_at`` lists the iterations at which the gradient
    diagnostic measures (0 = initialisation).
    """

    depths: tuple[int, ...] = (20, 32, 44, 56, 110)
    plain_depths: tuple[int, ...] = ()
    seeds: tuple[int, ...] = (0,)
    iterations: int | None = None
    train_subset: int | None = None
    recipe: str = "paper_cifar"
    grad_at: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for d in self.depths + self.plain_depths:
            if d not in CIFAR_DEPTHS:
                raise ConfigError(f"depths: {d} is not one of the paper's CIFAR depths 6n+2 "
                                  f"({', '.join(map(str, CIFAR_DEPTHS))})")
        if not self.depths or not self.seeds:
            raise ConfigError("depths and seeds must not be empty")
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.iterations}")
        if self.train_subset is not None and self.train_subset < 2:
            raise ConfigError(f"train_subset must be >= 2 images, got {self.train_subset}")
        if any(t < 0 for t in self.grad_at):
            raise ConfigError(f"grad_at must be iterations >= 0, got {self.grad_at}")

    def nets(self) -> list[str]:
        """Registered names of the nets to train: plain twins first, then ResNets, by depth."""
        plain = [f"cifar_plain{d}" for d in self.depths if d in self.plain_depths]
        return plain + [f"cifar_resnet{d}" for d in self.depths]


#: ``runner(context) -> results``: measures one experiment into ``context.folder`` (its
#: ``table.md`` and PNGs, each carrying ``context.note``) and returns what experiment.json keeps
Runner = Callable[["runners.Context"], dict]


@dataclass(frozen=True)
class Experiment:
    """One reproducible experiment: the paper's claim, its settings, and the function running it."""

    name: str
    paper_ref: str
    claim: str
    settings: Any
    runner: Runner


def settings_note(settings: Any, paper_settings: Any, train_overrides: dict[str, Any] | None = None) -> str | None:
    """``"shortened: iterations=2000 (full: the recipe's); ..."`` or None when the paper's settings hold.

    A field differs from the paper unless it only adds depths or seeds to the paper's.  A
    training override that changes the result (any key outside
    :data:`resnetlab.recipes.RESULT_NEUTRAL_KEYS`: ``lr``, ``amp``, ``eval_every``, ...) is
    listed after ``changed:``.
    """
    parts = []
    for f in dataclasses.fields(settings):
        ours, theirs = getattr(settings, f.name), getattr(paper_settings, f.name)
        if isinstance(ours, tuple) and f.name in ("depths", "seeds") and set(theirs) <= set(ours):
            continue
        if ours != theirs:
            shown = "the recipe's" if theirs is None else fmt_value(theirs)
            parts.append(f"{f.name}={fmt_value(ours)} (full: {shown})")
    changed = [f"{k}={fmt_value(v)}" for k, v in sorted((train_overrides or {}).items())
               if k not in RESULT_NEUTRAL_KEYS]
    note = []
    if parts:
        note.append("shortened: " + "; ".join(parts))
    if changed:
        note.append("changed from the paper's recipe: " + ", ".join(changed))
    return " | ".join(note) or None


#: The paper's experiments; each ``settings`` is the paper's (section 4.2, Tables 1 and 6, Figs. 6 and 7).
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("table1", "Table 1", "multiply-adds of ResNet-18/34/50/101/152 (and VGG-19's 19.6e9)",
                   Table1Settings(), runners.run_table1),
        Experiment("cifar_table6", "Table 6", "ResNets improve with depth up to 110 layers (6.43 %)",
                   CifarSettings(depths=(20, 32, 44, 56, 110)), runners.run_cifar_table6),
        Experiment("fig6", "Fig. 6", "deeper plain nets train worse (degradation); deeper ResNets better",
                   CifarSettings(depths=(20, 32, 44, 56), plain_depths=(20, 32, 44, 56, 110)), runners.run_fig6),
        Experiment("fig7", "Fig. 7", "ResNets' layer responses are smaller than plain nets', deeper ones smaller",
                   CifarSettings(depths=(20, 56, 110), plain_depths=(20, 56)), runners.run_fig7),
        Experiment("gradients", "section 4.1", "plain nets' gradients keep healthy norms (not vanishing)",
                   CifarSettings(depths=(20, 56), plain_depths=(20, 56), grad_at=(0, 1000, 8000, 32000)),
                   runners.run_gradients),
        # the same diagnostic at initialisation only: no training, minutes on a CPU
        Experiment("gradients_init", "section 4.1", "gradient norms at initialisation, plain vs residual, 20-110 layers",
                   CifarSettings(depths=(20, 56, 110), plain_depths=(20, 56, 110), grad_at=(0,)),
                   runners.run_gradients),
        # appendix A: Faster R-CNN (resnetlab.detection.experiments: settings, runners, full-run commands)
        Experiment("table7", "Table 7 (appendix A)", "Faster R-CNN, VOC 07 test mAP: ResNet-101 76.4 vs VGG-16 73.2",
                   DETECTION_EXPERIMENTS["table7"], run_table7),
        Experiment("table8", "Table 8 (appendix A)",
                   "Faster R-CNN, COCO val mAP@.5 / mAP@[.5,.95]: ResNet-101 48.4 / 27.2 vs VGG-16 41.5 / 21.2",
                   DETECTION_EXPERIMENTS["table8"], run_table8),
    )
}


def _split_overrides(experiment: Experiment, overrides: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Experiment settings with their overrides applied, and the rest (recipe keys) checked
    against the training recipe of settings that have one (a ``recipe`` field)."""
    fields = {f.name for f in dataclasses.fields(experiment.settings)}
    own = {k: v for k, v in overrides.items() if k in fields}
    rest = {k: v for k, v in overrides.items() if k not in fields}
    settings = apply_overrides(experiment.settings, own)
    if rest:
        if "recipe" not in fields:
            raise ConfigError(f"unknown key(s) {', '.join(sorted(rest))}; valid keys: {', '.join(sorted(fields))}")
        reserved = {"model", "seed", "milestones"} & set(rest)
        if reserved:
            raise ConfigError(f"{', '.join(sorted(reserved))} is set by the experiment, not by an override")
        apply_overrides(get_recipe(settings.recipe), rest)  # unknown recipe keys and bad values fail here
    return settings, rest


def _command_line(name: str, overrides: Sequence[str] | dict[str, Any], data: str | None, out: Path) -> str:
    pairs = overrides if not isinstance(overrides, dict) else [f"{k}={fmt_value(v)}" for k, v in overrides.items()]
    words = ["resnetlab", "reproduce", name, *pairs]
    words += ["--data", data] if data else []
    words += ["--out", str(out)] if out != DEFAULT_ROOT else []
    return " ".join(shlex.quote(w) for w in words)


def run_experiment(
    name: str,
    overrides: Sequence[str] | dict[str, Any] = (),
    *,
    data: str | None = None,
    out: str | os.PathLike | None = None,
    command: str | None = None,
) -> Path:
    """Run experiment ``name`` into ``out/name`` and return that folder.

    Writes ``experiment.json`` (settings, shortening note, data set, command, hardware, wall
    time, results) and the experiment's ``table.md`` and PNGs; training runs go to
    ``out/runs`` (``out`` defaults to :data:`DEFAULT_ROOT`).
    """
    out = DEFAULT_ROOT if out is None else Path(out)
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; one of {', '.join(EXPERIMENTS)}")
    experiment = EXPERIMENTS[name]
    parsed = parse_overrides(list(overrides)) if not isinstance(overrides, dict) else dict(overrides)
    settings, train_overrides = _split_overrides(experiment, parsed)
    dataset = dataset_name(data) if data else None  # an unknown data set name fails before any work
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    note = settings_note(settings, experiment.settings, train_overrides)
    start = time.time()
    results = experiment.runner(runners.Context(name, settings, train_overrides, data, folder, note))
    record = {
        "experiment": name,
        "paper_ref": experiment.paper_ref,
        "claim": experiment.claim,
        "settings": dataclasses.asdict(settings),
        "train_overrides": train_overrides,
        "note": note,
        "data": data,
        "dataset": dataset,
        "command": command or _command_line(name, overrides, data, out),
        "hardware": hardware(),
        "wall_time_s": round(time.time() - start, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "results": results,
    }
    atomic_write_text(folder / "experiment.json", json.dumps(record, indent=1, default=str) + "\n")
    return folder
