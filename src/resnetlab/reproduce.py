"""The paper's experiments, one command each: experiments are data, runners are functions.

``resnetlab reproduce EXPERIMENT [key=value ...] [--data NAME=PATH] [--out ROOT]`` runs one
entry of :data:`EXPERIMENTS`.  The defaults of every entry are the paper's settings; a
``key=value`` override (``iterations=2000``, ``depths=[20,56]``, ``seeds=[0,1,2]``,
``train_subset=5000``) shortens a run, and every table and plot then says ``shortened: ...``.
Keys of the training recipe that do not change the experiment (``device``, ``amp``, ...)
are passed through to :func:`resnetlab.train.train`.

Layout of ``ROOT`` (default ``runs/reproduce``)::

    ROOT/runs/<model>-seed<S>[-<shortening>]/   training run folders, shared between
                                                 experiments (ResNet-56 is trained once for
                                                 Table 6, Fig. 6 and Fig. 7); an unfinished
                                                 one is resumed, a finished one reused
    ROOT/<experiment>/experiment.json            settings, note, command, hardware, wall time, results
    ROOT/<experiment>/table.md, *.png            what REPORT.md shows (``resnetlab report``)
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import paper, runfolder
from .analysis.complexity import complexity
from .analysis.plots import Curve, plot_curves, plot_gradient_norms, plot_responses
from .config import apply_overrides, parse_overrides
from .errors import ConfigError, DataError
from .files import atomic_write_text
from .models.cifar_resnet import CIFAR_DEPTHS
from .registry import create_model, list_models, model_info

__all__ = [
    "Table1Settings",
    "CifarSettings",
    "Experiment",
    "EXPERIMENTS",
    "DEFAULT_ROOT",
    "settings_note",
    "run_experiment",
    "hardware",
    "mean_std",
    "run_summary",
]

DEFAULT_ROOT = Path("runs/reproduce")
#: recipe keys that change the speed or the logging of a run, not its weights
NEUTRAL_TRAIN_KEYS = ("device", "channels_last", "compile", "num_workers", "deterministic", "log_every",
                      "eval_every", "checkpoint_every")
#: config.json keys that say what a run was given, not how it trained: ``data`` is the spec used
#: (the paper recipe's is ""), so a paper run on ``cifar10=PATH`` still counts as the full recipe
RUN_INPUT_KEYS = ("data",)
#: section 4.2: "For the 110-layer network, we use 0.01 to warm up the training until the training
#: error is below 80% (about 400 iterations)"; the 1202-layer net is "trained as described above"
WARMUP_FROM_DEPTH = 110
WARMUP_UNTIL_TRAIN_ERROR = 0.8


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


#: ``runner(settings, train_overrides, data, folder, note) -> results``; ``note`` is the
#: shortening note (or None) that every table and plot it writes must carry
Runner = Callable[[Any, "dict[str, Any]", "str | None", Path, "str | None"], dict]


@dataclass(frozen=True)
class Experiment:
    """One reproducible experiment: the paper's claim, its settings, and the function running it."""

    name: str
    paper_ref: str
    claim: str
    settings: Any
    runner: Runner


# ----------------------------------------------------------------------------- shared helpers


def hardware() -> dict[str, Any]:
    """What ran the experiment: CPU model and threads, GPU name, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        # the CPU may be shared: the load average says how much of it this run had
        "load_avg_1min": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def settings_note(settings: Any, paper_settings: Any, train_overrides: dict[str, Any] | None = None) -> str | None:
    """``"shortened: iterations=2000 (full: the recipe's); ..."`` or None when the paper's settings hold.

    A field differs from the paper unless it only adds depths or seeds to the paper's.  A
    training override outside :data:`NEUTRAL_TRAIN_KEYS` (``lr``, ``amp``, ...) is listed
    after ``changed:``.
    """
    parts = []
    for f in dataclasses.fields(settings):
        ours, theirs = getattr(settings, f.name), getattr(paper_settings, f.name)
        if isinstance(ours, tuple) and f.name in ("depths", "seeds") and set(theirs) <= set(ours):
            continue
        if ours != theirs:
            shown = "the recipe's" if theirs is None else _fmt(theirs)
            parts.append(f"{f.name}={_fmt(ours)} (full: {shown})")
    changed = [f"{k}={_fmt(v)}" for k, v in sorted((train_overrides or {}).items()) if k not in NEUTRAL_TRAIN_KEYS]
    note = []
    if parts:
        note.append("shortened: " + "; ".join(parts))
    if changed:
        note.append("changed from the paper's recipe: " + ", ".join(changed))
    return " | ".join(note) or None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value), as the paper's "6.61 ± 0.16"."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _pct(err: float | None) -> str:
    return "-" if err is None else f"{100 * err:.2f}"


def _pct_sign(err: float) -> str:
    return f"{100 * err:.2f} %"


def _claims_text(claims: list[str]) -> str:
    return "\n" + "".join(f"- {line}\n" for line in claims) if claims else ""


# ----------------------------------------------------------------------------- Table 1


def run_table1(settings: Table1Settings, train_overrides: dict, data: str | None, folder: Path,
               note: str | None) -> dict:
    """Table 1: params and multiply-adds at 224x224 of every registered ImageNet model,
    beside the paper's figures (:data:`resnetlab.paper.TABLE1_GMACS`, VGG-19's 19.6 G included
    once ``vgg19`` is registered; paper rows without a registered model are listed as such)."""
    names = [n for n in list_models(settings.models) if model_info(n).input_size == (3, 224, 224)]
    if not names:
        raise ConfigError(f"models={settings.models!r} matches no ImageNet (224x224) model")
    rows, md_rows = [], []
    for name in names:
        # Counting needs shapes only: build and run on the meta device (no memory, no arithmetic).
        with torch.device("meta"):
            c = complexity(create_model(name), (3, 224, 224))
        gmacs = c["macs"] / 1e9
        theirs = paper.TABLE1_GMACS.get(name)
        rel = None if theirs is None else gmacs / theirs - 1
        rows.append({"model": name, "params": c["params"], "macs": c["macs"], "paper_gmacs": theirs,
                     "rel_diff": rel})
        md_rows.append([name, f"{c['params'] / 1e6:.2f}", f"{gmacs:.2f}", "-" if theirs is None else f"{theirs}",
                        "-" if rel is None else f"{100 * rel:+.1f} %"])
    missing = sorted(set(paper.TABLE1_GMACS) - set(names)) if settings.models == "*" else []
    for name in missing:
        md_rows.append([name, "not registered", "-", f"{paper.TABLE1_GMACS[name]}", "-"])
    table = _shortened_label(note) + _markdown_table(
        ["model", "params (M)", "ours GMACs", "paper GMACs", "ours vs paper"], md_rows)
    atomic_write_text(folder / "table.md", table)
    return {"rows": rows, "missing": missing}


# ----------------------------------------------------------------------------- CIFAR experiments


def _paper_recipe(settings: CifarSettings) -> Any:
    from .recipes import get_recipe

    return get_recipe(settings.recipe)


def _train_config(settings: CifarSettings, model: str, seed: int, train_overrides: dict[str, Any]) -> Any:
    """The recipe for one run: the paper's, with the model, the seed and the shortening applied.

    ResNet-110 and deeper warm up at lr 0.01 until the training error is below 80 % (section
    4.2).  Shortened runs keep the shape of the schedule: the lr milestones (32k and 48k of
    64k) and the logging, evaluation and checkpoint intervals are scaled by ``iterations / 64k``.
    """
    recipe = _paper_recipe(settings)
    changes: dict[str, Any] = {"model": model, "seed": seed}
    if model_info(model).defaults["depth"] >= WARMUP_FROM_DEPTH:
        changes["warmup_until_train_error"] = WARMUP_UNTIL_TRAIN_ERROR
    if settings.iterations is not None and settings.iterations != recipe.iterations:
        scale = settings.iterations / recipe.iterations
        changes["iterations"] = settings.iterations
        changes["milestones"] = tuple(max(1, round(m * scale)) for m in recipe.milestones)
        for key in ("log_every", "eval_every", "checkpoint_every"):
            changes[key] = max(1, round(getattr(recipe, key) * scale))
    if settings.train_subset is not None:
        changes["train_subset"] = settings.train_subset
    changes.update(train_overrides)
    return apply_overrides(recipe, changes)


def _run_name(model: str, seed: int, settings: CifarSettings, train_overrides: dict[str, Any]) -> str:
    parts = [model, f"seed{seed}"]
    if settings.iterations is not None:
        parts.append(f"it{settings.iterations}")
    if settings.train_subset is not None:
        parts.append(f"sub{settings.train_subset}")
    parts += [f"{k}{_fmt(v)}" for k, v in sorted(train_overrides.items()) if k not in NEUTRAL_TRAIN_KEYS]
    return "-".join("".join(c if c.isalnum() or c in "_.,=[]" else "" for c in p) for p in parts)


def _ensure_run(config: Any, run_dir: Path, data: str) -> Path:
    """Train ``config`` into ``run_dir`` unless it holds ``final.safetensors`` already; a folder
    with a checkpoint but no final weights is resumed (DESIGN: a killed run resumes to the
    same result)."""
    from .train import train

    if (run_dir / "final.safetensors").is_file():
        print(f"reproduce: {run_dir} is finished; reusing it", file=sys.stderr)
    else:
        resume = (run_dir / runfolder.CHECKPOINT).is_file()
        if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir} holds an unfinished run without a checkpoint: delete it to start over")
        print(f"reproduce: training {config.model} seed {config.seed} for {config.iterations} iterations "
              f"-> {run_dir}", file=sys.stderr)
        if train(config, data=data, out_dir=run_dir, resume=resume).interrupted:
            raise KeyboardInterrupt  # the run saved a checkpoint; the same command resumes it
    return run_dir


def _ensure_runs(
    settings: CifarSettings, train_overrides: dict[str, Any], data: str | None, root: Path
) -> dict[tuple[str, int], Path]:
    """The run folder of every (net, seed) of ``settings``, trained where not finished yet.

    Run folders live in ``root/runs`` so that experiments share them.
    """
    if data is None:
        raise ConfigError("this experiment trains networks: give --data cifar10=PATH (or digits for a smoke run)")
    return {
        (model, seed): _ensure_run(_train_config(settings, model, seed, train_overrides),
                                   root / "runs" / _run_name(model, seed, settings, train_overrides), data)
        for seed in settings.seeds
        for model in settings.nets()
    }


def _curve(run_dir: Path, label: str) -> Curve:
    """Training and validation error along a run, from its ``metrics.jsonl``."""
    return Curve.from_metrics(runfolder.read_metrics(run_dir), label)


def _final_val_err(run_dir: Path) -> float:
    errs = _curve(run_dir, "").val_err
    if not errs:
        raise DataError(f"{run_dir}: no validation error was logged")
    return errs[-1]


def run_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What REPORT.md says about one training run folder: model, seed, length, device,
    wall time, final validation error, and whether it used the full paper recipe."""
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise DataError(f"{run_dir} is not a training run folder (no readable config.json)") from None
    records = runfolder.read_metrics(run_dir)
    val = [r["val_err"] for r in records if r.get("val_err") is not None]
    times = [r["time"] for r in records if "time" in r]
    expected = _train_config(CifarSettings(), config["model"], config["seed"], {}).to_dict()
    full = all(config.get(k) == v for k, v in expected.items() if k not in NEUTRAL_TRAIN_KEYS + RUN_INPUT_KEYS)
    env = config.get("environment", {})
    device = env.get("gpu") or env.get("device") or config.get("device")
    if device == "cpu" and env.get("threads"):
        device = f"cpu, {env['threads']} thread{'s' if env['threads'] > 1 else ''}"
    return {
        "run": run_dir.name,
        "path": str(run_dir),
        "model": config["model"],
        "seed": config["seed"],
        "iterations": config["iterations"],
        "iterations_done": max((r["step"] for r in records if "step" in r), default=0),
        "finished": (run_dir / "final.safetensors").is_file(),
        "device": device,
        "wall_time_s": max(times, default=None),
        "val_err": val[-1] if val else None,
        "full": full,
    }


def _val_split(data: str) -> Any:
    from .data import open_dataset

    ds = open_dataset(data, "val")
    if ds.images is None:
        raise DataError(f"{data}: the validation split must fit in memory for this experiment (CIFAR, digits)")
    return ds


def _data_name(data: str) -> str:
    from .data.datasets import parse_data_spec

    return parse_data_spec(data)[0]


def _label(model: str) -> str:
    """``cifar_plain56`` -> ``plain-56``, ``cifar_resnet110`` -> ``ResNet-110`` (the paper's names)."""
    return f"{'plain' if model_info(model).family.endswith('plain') else 'ResNet'}-{model_info(model).defaults['depth']}"


def _shortened_label(note: str | None) -> str:
    return f"**{note}**\n\n" if note else ""


def run_cifar_table6(settings: CifarSettings, train_overrides: dict, data: str | None, folder: Path,
                     note: str | None) -> dict:
    """Table 6: validation error of ResNet-20/32/44/56/110 (45k/5k split), mean ± std over seeds,
    beside the paper's test error.  Our errors are on the 5k hold-out (the paper's model
    selection split), not on the test set."""
    runs = _ensure_runs(settings, train_overrides, data, folder.parent)
    rows, md_rows = [], []
    for model in settings.nets():
        depth = model_info(model).defaults["depth"]
        errs = [_final_val_err(runs[(model, s)]) for s in settings.seeds]
        mean, std = mean_std(errs)
        params = complexity(create_model(model), (3, 32, 32))["params"]
        paper_params, paper_err = paper.CIFAR10_TABLE6.get(depth, (None, None))
        paper_cell = "-" if paper_err is None else f"{paper_err}"
        if depth == 110:
            paper_cell += " (%.2f ± %.2f)" % paper.CIFAR10_RESNET110_MEAN_STD
        rows.append({"model": model, "family": "ResNet", "depth": depth, "params": params, "val_err": errs,
                     "mean": mean, "std": std,
                     "best": min(errs), "paper_test_err_pct": paper_err, "paper_params_m": paper_params,
                     "runs": [str(runs[(model, s)]) for s in settings.seeds]})
        ours = f"{100 * min(errs):.2f}" + (f" ({100 * mean:.2f} ± {100 * std:.2f}, {len(errs)} runs)" if len(errs) > 1 else "")
        md_rows.append([model, f"{params / 1e6:.2f}M", "-" if paper_params is None else f"{paper_params}M",
                        ours, paper_cell])
    # Table 6: the error falls with depth up to 110 layers.
    claims = _depth_trend([r for r in rows if r["depth"] <= 110], "ResNet", "mean", "mean validation error",
                          "smaller", _pct_sign)
    table = _shortened_label(note) + _markdown_table(
        ["net", "params", "paper params", "ours: 5k-val error % (best; mean ± std)", "paper: test error %"], md_rows)
    table += _claims_text(claims)
    atomic_write_text(folder / "table.md", table)
    return {"rows": rows, "claims": claims}


def run_fig6(settings: CifarSettings, train_overrides: dict, data: str | None, folder: Path,
             note: str | None) -> dict:
    """Fig. 6: training curves of plain and residual nets; degradation = deeper plain nets
    end with higher training and validation error, deeper ResNets with lower."""
    runs = _ensure_runs(settings, train_overrides, data, folder.parent)
    seed = settings.seeds[0]
    panels: dict[str, list] = {"plain": [], "ResNet": []}
    rows, md_rows = [], []
    for model in settings.nets():
        depth = model_info(model).defaults["depth"]
        family = _label(model).split("-")[0]
        curve = _curve(runs[(model, seed)], _label(model))
        panels[family].append(curve)
        final_train = curve.train_err[-1] if curve.train_err else None
        final_val = curve.val_err[-1] if curve.val_err else None
        rows.append({"model": model, "depth": depth, "family": family, "final_train_err": final_train,
                     "final_val_err": final_val, "run": str(runs[(model, seed)])})
        md_rows.append([f"{family}-{depth}", _pct(final_train), _pct(final_val)])
    plot_curves({k: v for k, v in panels.items() if v}, folder / "fig6.png", note=note,
                title=f"Training on {_data_name(data)} (He et al. 2015, Fig. 6)")
    # Fig. 6: deeper plain nets have higher training and validation error; deeper ResNets lower.
    claims = (_depth_trend(rows, "plain", "final_val_err", "validation error", "larger", _pct_sign)
              + _depth_trend(rows, "ResNet", "final_val_err", "validation error", "smaller", _pct_sign)
              + _depth_trend(rows, "plain", "final_train_err", "training error", "larger", _pct_sign))
    table = _shortened_label(note) + _markdown_table(
        ["net", "final training error % (last logged)", "final validation error %"], md_rows)
    table += _claims_text(claims) + "\n![Fig. 6](fig6.png)\n"
    atomic_write_text(folder / "table.md", table)
    return {"rows": rows, "claims": claims, "seed": seed}


def _verdict(ours: str, paper_says: str) -> str:
    return f"(paper: {paper_says}) - {'as in the paper' if ours == paper_says else 'NOT as in the paper'}"


def _depth_trend(rows: list[dict], family: str, key: str, what: str, paper_says: str, fmt: Callable) -> list[str]:
    """One line comparing the deepest and shallowest ``family`` net on ``rows[i][key]``:
    is the deeper one ``"larger"`` or ``"smaller"``, and is that what the paper reports?"""
    fam = sorted((r for r in rows if r["family"] == family and r[key] is not None), key=lambda r: r["depth"])
    if len(fam) < 2:
        return []
    shallow, deep = fam[0], fam[-1]
    ours = "larger" if deep[key] > shallow[key] else "smaller"
    return [f"{what}: {family}-{deep['depth']} {fmt(deep[key])} vs {family}-{shallow['depth']} "
            f"{fmt(shallow[key])}: the deeper net's is {ours} {_verdict(ours, paper_says)}"]


def _family_gap(rows: list[dict], key: str, what: str, paper_says: str, fmt: Callable) -> list[str]:
    """Lines comparing ResNet and plain nets of equal depth on ``key``."""
    lines = []
    for depth in sorted({r["depth"] for r in rows}):
        pair = {r["family"]: r for r in rows if r["depth"] == depth}
        if {"plain", "ResNet"} <= set(pair):
            ours = "smaller" if pair["ResNet"][key] < pair["plain"][key] else "larger"
            lines.append(f"{what}: ResNet-{depth} {fmt(pair['ResNet'][key])} vs plain-{depth} "
                         f"{fmt(pair['plain'][key])}: the ResNet's is {ours} {_verdict(ours, paper_says)}")
    return lines


def run_fig7(settings: CifarSettings, train_overrides: dict, data: str | None, folder: Path,
             note: str | None) -> dict:
    """Fig. 7: std of each 3x3 layer's response on the 5k validation split, for the trained
    plain-20/56 and ResNet-20/56/110 (first seed), in layer order and sorted."""
    from .analysis.responses import layer_responses
    from .weights import load_weights

    runs = _ensure_runs(settings, train_overrides, data, folder.parent)
    seed = settings.seeds[0]
    val = _val_split(data)
    curves, rows, md_rows = {}, [], []
    for model in settings.nets():
        net, meta = load_weights(runs[(model, seed)] / "final.safetensors")
        resp = layer_responses(net, val.images, mean=meta.mean, std=meta.std)
        label = _label(model)
        stds = [r.std for r in resp]
        curves[label] = stds
        rows.append({"model": model, "label": label, "family": label.split("-")[0],
                     "depth": model_info(model).defaults["depth"], "layers": [dataclasses.asdict(r) for r in resp],
                     "mean_std": statistics.fmean(stds), "run": str(runs[(model, seed)])})
        md_rows.append([label, len(stds), f"{statistics.fmean(stds):.3f}", f"{max(stds):.3f}", f"{min(stds):.3f}"])
    plot_responses(curves, folder / "fig7.png", note=note,
                   title=f"Std of layer responses on {_data_name(data)} validation (He et al. 2015, Fig. 7)")
    # Fig. 7: ResNets respond less than their plain counterparts, deeper ResNets less again.
    claims = (_family_gap(rows, "mean_std", "mean response std", "smaller", "{:.3f}".format)
              + _depth_trend(rows, "ResNet", "mean_std", "mean response std", "smaller", "{:.3f}".format))
    table = _shortened_label(note) + _markdown_table(
        ["net", "3x3 layers", "mean response std", "max", "min"], md_rows)
    table += f"\nMeasured on the {len(val)} validation images, eval mode.\n" + _claims_text(claims)
    table += "\n![Fig. 7](fig7.png)\n"
    atomic_write_text(folder / "table.md", table)
    return {"rows": rows, "claims": claims, "seed": seed, "n_images": len(val)}


def _snapshot(settings: CifarSettings, model: str, seed: int, at: int, train_overrides: dict, data: str,
              root: Path) -> Path:
    """Weights of ``model`` after ``at`` iterations of its (possibly shortened) run.

    The schedule is a function of the iteration only (step milestones, section 4.2) and a
    seeded run is deterministic, so a run stopped at ``at`` with the same milestones is the
    prefix of the whole run: its final weights are the whole run's weights at ``at``.
    """
    full = _train_config(settings, model, seed, train_overrides)
    name = _run_name(model, seed, settings, train_overrides)
    if at == full.iterations:
        return _ensure_run(full, root / "runs" / name, data) / "final.safetensors"
    config = dataclasses.replace(full, iterations=at)
    return _ensure_run(config, root / "runs" / f"{name}-at{at}", data) / "final.safetensors"


def run_gradients(settings: CifarSettings, train_overrides: dict, data: str | None, folder: Path,
                  note: str | None) -> dict:
    """Per-layer gradient norms of plain and residual nets of equal depth, at initialisation
    and after ``grad_at`` iterations of the paper's recipe, on one fixed batch (the recipe's
    128) of images of the 45k training part (section 4.1: plain nets' gradients keep "healthy norms" with BN, so
    their degradation is an optimisation difficulty, not vanishing gradients)."""
    from .analysis.gradients import gradient_norms
    from .data.datasets import open_train_val
    from .weights import load_weights

    if data is None:
        raise ConfigError("gradients measures on data: give --data cifar10=PATH (or digits)")
    from .train import input_normalization

    train_set = open_train_val(data)[0]
    batch_size = _train_config(settings, settings.nets()[0], 0, train_overrides).batch_size
    pick = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))[:batch_size]
    images = torch.stack([train_set[i][0] for i in pick.tolist()])
    targets = train_set.targets[pick]
    seed = settings.seeds[0]
    panels: dict[str, dict[str, list[float]]] = {}
    rows, md_rows = [], []
    for at in sorted(set(settings.grad_at)):
        moment = "initialisation" if at == 0 else f"iteration {at}"
        panels[moment] = {}
        for model in settings.nets():
            if at == 0:  # the run's own initialisation (train() seeds, then builds) and input normalization
                config = _train_config(settings, model, seed, train_overrides)
                torch.manual_seed(seed)
                net = create_model(model, num_classes=len(train_set.classes), **config.model_kwargs)
                mean, std = input_normalization(config, train_set)
                run = None
            else:
                weights = _snapshot(settings, model, seed, at, train_overrides, data, folder.parent)
                net, meta = load_weights(weights)
                mean, std, run = meta.mean, meta.std, str(weights.parent)
            norms = gradient_norms(net, images, targets, mean=mean, std=std)
            label = _label(model)
            values = [g.norm for g in norms]
            panels[moment][label] = values
            rows.append({"model": model, "label": label, "at": at, "run": run,
                         "layers": [dataclasses.asdict(g) for g in norms]})
            md_rows.append([moment, label, f"{values[0]:.3g}", f"{statistics.median(values):.3g}",
                            f"{values[-1]:.3g}", f"{max(values) / max(min(values), 1e-30):.3g}"])
    plot_gradient_norms(panels, folder / "gradients.png", note=note,
                        title=f"Per-layer gradient norm ||dL/dW|| on {_data_name(data)}, plain vs residual")
    table = _shortened_label(note) + _markdown_table(
        ["moment", "net", "first layer", "median layer", "fc", "max/min over layers"], md_rows)
    table += f"\n||dL/dW|| of each conv/fc weight for one fixed batch of {len(pick)} training images.\n"
    table += "\n![gradient norms](gradients.png)\n"
    atomic_write_text(folder / "table.md", table)
    return {"rows": rows, "seed": seed}


# ----------------------------------------------------------------------------- the experiments

#: The paper's experiments; each ``settings`` is the paper's (section 4.2, Tables 1 and 6, Figs. 6 and 7).
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("table1", "Table 1", "multiply-adds of ResNet-18/34/50/101/152 (and VGG-19's 19.6e9)",
                   Table1Settings(), run_table1),
        Experiment("cifar_table6", "Table 6", "ResNets improve with depth up to 110 layers (6.43 %)",
                   CifarSettings(depths=(20, 32, 44, 56, 110)), run_cifar_table6),
        Experiment("fig6", "Fig. 6", "deeper plain nets train worse (degradation); deeper ResNets better",
                   CifarSettings(depths=(20, 32, 44, 56), plain_depths=(20, 32, 44, 56, 110)), run_fig6),
        Experiment("fig7", "Fig. 7", "ResNets' layer responses are smaller than plain nets', deeper ones smaller",
                   CifarSettings(depths=(20, 56, 110), plain_depths=(20, 56)), run_fig7),
        Experiment("gradients", "section 4.1", "plain nets' gradients keep healthy norms (not vanishing)",
                   CifarSettings(depths=(20, 56), plain_depths=(20, 56), grad_at=(0, 1000, 8000, 32000)),
                   run_gradients),
        # the same diagnostic at initialisation only: no training, minutes on a CPU
        Experiment("gradients_init", "section 4.1", "gradient norms at initialisation, plain vs residual, 20-110 layers",
                   CifarSettings(depths=(20, 56, 110), plain_depths=(20, 56, 110), grad_at=(0,)), run_gradients),
    )
}


def _split_overrides(experiment: Experiment, overrides: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Experiment settings with their overrides applied, and the rest (recipe keys) checked
    against the training recipe."""
    fields = {f.name for f in dataclasses.fields(experiment.settings)}
    own = {k: v for k, v in overrides.items() if k in fields}
    rest = {k: v for k, v in overrides.items() if k not in fields}
    settings = apply_overrides(experiment.settings, own)
    if rest:
        if not isinstance(settings, CifarSettings):
            raise ConfigError(f"unknown key(s) {', '.join(sorted(rest))}; valid keys: {', '.join(sorted(fields))}")
        reserved = {"model", "seed", "milestones"} & set(rest)
        if reserved:
            raise ConfigError(f"{', '.join(sorted(reserved))} is set by the experiment, not by an override")
        apply_overrides(_paper_recipe(settings), rest)  # unknown recipe keys and bad values fail here
    return settings, rest


def _command_line(name: str, overrides: Sequence[str] | dict[str, Any], data: str | None, out: Any) -> str:
    pairs = overrides if not isinstance(overrides, dict) else [f"{k}={_fmt(v)}" for k, v in overrides.items()]
    words = ["resnetlab", "reproduce", name, *pairs]
    words += ["--data", data] if data else []
    words += ["--out", str(out)] if Path(out) != DEFAULT_ROOT else []
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

    Writes ``experiment.json`` (settings, shortening note, command, hardware, wall time,
    results) and the experiment's ``table.md`` and PNGs; training runs go to ``out/runs``
    (``out`` defaults to :data:`DEFAULT_ROOT`).
    """
    out = DEFAULT_ROOT if out is None else Path(out)
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; one of {', '.join(EXPERIMENTS)}")
    experiment = EXPERIMENTS[name]
    parsed = parse_overrides(list(overrides)) if not isinstance(overrides, dict) else dict(overrides)
    settings, train_overrides = _split_overrides(experiment, parsed)
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    note = settings_note(settings, experiment.settings, train_overrides)
    start = time.time()
    results = experiment.runner(settings, train_overrides, data, folder, note)
    record = {
        "experiment": name,
        "paper_ref": experiment.paper_ref,
        "claim": experiment.claim,
        "settings": dataclasses.asdict(settings),
        "train_overrides": train_overrides,
        "note": note,
        "data": data,
        "command": command or _command_line(name, overrides, data, out),
        "hardware": hardware(),
        "wall_time_s": round(time.time() - start, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "results": results,
    }
    atomic_write_text(folder / "experiment.json", json.dumps(record, indent=1, default=str) + "\n")
    return folder
