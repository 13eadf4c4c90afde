"""One runner per experiment: get its training runs (:mod:`.runs`), measure, and write what it
shows (:mod:`.tables`) into the experiment's folder.

A runner takes a :class:`Context` and returns the results that ``experiment.json`` keeps;
every table and plot it writes carries ``context.note`` (the shortening, or None) and names
the data set.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import paper, runfolder
from ..analysis.complexity import complexity
from ..analysis.gradients import gradient_norms
from ..analysis.plots import Curve
from ..analysis.responses import layer_responses
from ..data import ImageSet, open_dataset, open_train_val
from ..errors import ConfigError, DataError
from ..files import atomic_write_text
from ..registry import create_model, list_models, model_info
from ..train import input_normalization
from ..weights import load_weights
from . import runs, tables

if TYPE_CHECKING:  # the settings types only; experiments.py imports this module
    from .experiments import CifarSettings, Table1Settings

__all__ = ["Context", "mean_std", "run_table1", "run_cifar_table6", "run_fig6", "run_fig7", "run_gradients"]


@dataclass(frozen=True)
class Context:
    """What a runner is given: the experiment's name and settings, the training overrides,
    the ``--data`` value, its folder (``root/<experiment>``) and its shortening note."""

    experiment: str
    settings: Any
    train_overrides: dict[str, Any]
    data: str | None
    folder: Path
    note: str | None

    @property
    def root(self) -> Path:
        """The reproduce root: experiments' folders and ``runs/`` live under it."""
        return self.folder.parent

    @property
    def dataset(self) -> str:
        """The name of the data set (``cifar10``, ``digits``); a missing ``--data`` is refused."""
        if self.data is None:
            raise ConfigError(f"{self.experiment} measures on data: give --data cifar10=PATH (or digits)")
        return runs.dataset_name(self.data)

    def ensure_runs(self) -> dict[tuple[str, int], Path]:
        """The finished training run of every (net, seed) of the settings."""
        return runs.ensure_runs(self.experiment, self.settings, self.train_overrides, self.data, self.root)

    def write_table(self, text: str) -> None:
        """``folder/table.md``: what REPORT.md shows for this experiment."""
        atomic_write_text(self.folder / "table.md", text)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value), as the paper's "6.61 ± 0.16"."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _curve(run_dir: Path, name: str) -> Curve:
    """Training and validation error along a run, from its ``metrics.jsonl``."""
    return Curve.from_metrics(runfolder.read_metrics(run_dir), name)


def _final_val_err(run_dir: Path) -> float:
    errs = _curve(run_dir, "").val_err
    if not errs:
        raise DataError(f"{run_dir}: no validation error was logged")
    return errs[-1]


def _val_split(data: str) -> ImageSet:
    ds = open_dataset(data, "val")
    if ds.images is None:
        raise DataError(f"{data}: the validation split must fit in memory for this experiment (CIFAR, digits)")
    return ds


def run_table1(ctx: Context) -> dict:
    """Table 1: params and multiply-adds at 224x224 of every registered ImageNet model,
    beside the paper's figures (:data:`resnetlab.paper.TABLE1_GMACS`; paper rows without a
    registered model are listed as such)."""
    settings: Table1Settings = ctx.settings
    names = [n for n in list_models(settings.models) if model_info(n).input_size == (3, 224, 224)]
    if not names:
        raise ConfigError(f"models={settings.models!r} matches no ImageNet (224x224) model")
    rows = []
    for name in names:
        # Counting needs shapes only: build and run on the meta device (no memory, no arithmetic).
        with torch.device("meta"):
            c = complexity(create_model(name), (3, 224, 224))
        theirs = paper.TABLE1_GMACS.get(name)
        rows.append({"model": name, "params": c["params"], "macs": c["macs"], "paper_gmacs": theirs,
                     "rel_diff": None if theirs is None else c["macs"] / 1e9 / theirs - 1})
    missing = sorted(set(paper.TABLE1_GMACS) - set(names)) if settings.models == "*" else []
    ctx.write_table(tables.table1(rows, missing, paper.TABLE1_GMACS, ctx.note))
    return {"rows": rows, "missing": missing}


def run_cifar_table6(ctx: Context) -> dict:
    """Table 6: validation error of ResNet-20/32/44/56/110 (45k/5k split), mean ± std over seeds,
    beside the paper's test error.  Our errors are on the 5k hold-out (the paper's model
    selection split), not on the test set."""
    settings: CifarSettings = ctx.settings
    found = ctx.ensure_runs()
    rows = []
    for model in settings.nets():
        depth = model_info(model).defaults["depth"]
        errs = [_final_val_err(found[(model, s)]) for s in settings.seeds]
        mean, std = mean_std(errs)
        paper_params, paper_err = paper.CIFAR10_TABLE6.get(depth, (None, None))
        rows.append({"model": model, "family": "ResNet", "depth": depth, "dataset": ctx.dataset,
                     "params": complexity(create_model(model), (3, 32, 32))["params"], "val_err": errs,
                     "mean": mean, "std": std, "best": min(errs), "paper_test_err_pct": paper_err,
                     "paper_params_m": paper_params,
                     "paper_mean_std": paper.CIFAR10_RESNET110_MEAN_STD if depth == 110 else None,
                     "runs": [str(found[(model, s)]) for s in settings.seeds]})
    table, claims = tables.table6(rows, ctx.note, ctx.dataset)
    ctx.write_table(table)
    return {"rows": rows, "claims": claims}


def run_fig6(ctx: Context) -> dict:
    """Fig. 6: training curves of plain and residual nets (first seed)."""
    settings: CifarSettings = ctx.settings
    found = ctx.ensure_runs()
    seed = settings.seeds[0]
    curves: dict[str, list[Curve]] = {"plain": [], "ResNet": []}
    rows = []
    for model in settings.nets():
        name = tables.label(model)
        family = name.split("-")[0]
        curve = _curve(found[(model, seed)], name)
        curves[family].append(curve)
        rows.append({"model": model, "depth": model_info(model).defaults["depth"], "family": family,
                     "final_train_err": curve.train_err[-1] if curve.train_err else None,
                     "final_val_err": curve.val_err[-1] if curve.val_err else None,
                     "run": str(found[(model, seed)])})
    table, claims = tables.fig6(rows, curves, ctx.note, ctx.dataset, ctx.folder)
    ctx.write_table(table)
    return {"rows": rows, "claims": claims, "seed": seed}


def run_fig7(ctx: Context) -> dict:
    """Fig. 7: std of each 3x3 layer's response on the validation split, for the trained
    plain-20/56 and ResNet-20/56/110 (first seed), in layer order and sorted."""
    settings: CifarSettings = ctx.settings
    found = ctx.ensure_runs()
    seed = settings.seeds[0]
    val = _val_split(ctx.data)
    rows = []
    for model in settings.nets():
        net, meta = load_weights(found[(model, seed)] / runfolder.FINAL)
        resp = layer_responses(net, val.images, mean=meta.mean, std=meta.std)
        name = tables.label(model)
        rows.append({"model": model, "label": name, "family": name.split("-")[0],
                     "depth": model_info(model).defaults["depth"], "layers": [dataclasses.asdict(r) for r in resp],
                     "mean_std": statistics.fmean(r.std for r in resp), "run": str(found[(model, seed)])})
    table, claims = tables.fig7(rows, ctx.note, ctx.dataset, len(val), ctx.folder)
    ctx.write_table(table)
    return {"rows": rows, "claims": claims, "seed": seed, "n_images": len(val)}


def run_gradients(ctx: Context) -> dict:
    """Per-layer gradient norms of plain and residual nets of equal depth, at initialisation
    and after ``grad_at`` iterations of the paper's recipe, on one fixed batch (the recipe's
    128) of images of the training part (section 4.1: plain nets' gradients keep "healthy
    norms" with BN, so their degradation is an optimisation difficulty, not vanishing
    gradients)."""
    settings: CifarSettings = ctx.settings
    dataset = ctx.dataset
    train_set = open_train_val(ctx.data)[0]
    batch_size = runs.train_config(settings, settings.nets()[0], 0, ctx.train_overrides).batch_size
    pick = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))[:batch_size]
    images = torch.stack([train_set[i][0] for i in pick.tolist()])
    targets = train_set.targets[pick]
    seed = settings.seeds[0]
    rows = []
    for at in sorted(set(settings.grad_at)):
        for model in settings.nets():
            if at == 0:  # the run's own initialisation (train() seeds, then builds) and input normalization
                config = runs.train_config(settings, model, seed, ctx.train_overrides)
                torch.manual_seed(seed)
                net = create_model(model, num_classes=len(train_set.classes), **config.model_kwargs)
                mean, std = input_normalization(config, train_set)
                run = None
            else:
                weights = runs.snapshot(ctx.experiment, settings, model, seed, at, ctx.train_overrides, ctx.data,
                                        ctx.root)
                net, meta = load_weights(weights)
                mean, std, run = meta.mean, meta.std, str(weights.parent)
            norms = gradient_norms(net, images, targets, mean=mean, std=std)
            rows.append({"model": model, "label": tables.label(model), "at": at, "run": run,
                         "layers": [dataclasses.asdict(g) for g in norms]})
    ctx.write_table(tables.gradients(rows, ctx.note, dataset, len(pick), ctx.folder))
    return {"rows": rows, "seed": seed}
