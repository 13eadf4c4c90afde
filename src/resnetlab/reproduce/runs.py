"""The training runs of the experiments: their identity, and creating, reusing or resuming them.

A run's identity is its resolved config, ``dict(TrainConfig.to_dict(), data=DATA)``, the
``config`` entry of its ``config.json``.  Folder names under ``ROOT/runs``
(``cifar_resnet20-seed0-cifar10-it300``) are for reading, not the identity: before a folder is
reused (it holds ``final.safetensors``) or resumed (it holds a checkpoint), its saved config is
compared with the one wanted by :func:`resnetlab.recipes.result_changes`, which ignores only
:data:`resnetlab.recipes.RESULT_NEUTRAL_KEYS`.  A difference is refused with a
:class:`~resnetlab.errors.ConfigError` naming every differing key: a run trained on other data
or with other settings is never read as this one, and never silently trained a second time
beside it (which would cost hours and hide why).  While a command reads or trains a run it
holds ``<run>.lock`` beside the folder (removed when it is done), so two commands on one root never
train one run at once.

Whether a run used the paper's recipe is decided once, when the run is created, and written
into its ``config.json`` as ``provenance`` (:func:`provenance`); :func:`run_summary` and the
report read it back instead of judging old runs by today's code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl  # POSIX: the run lock (resnetlab trains on Linux)
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .. import runfolder
from ..config import apply_overrides
from ..data import parse_data_spec
from ..detection.data import DETECTION_DATA, parse_detection_data
from ..device import resolve_device
from ..errors import ConfigError, DataError
from ..machine import describe
from ..recipes import RESULT_NEUTRAL_KEYS, TrainConfig, get_recipe, result_changes
from ..registry import model_info
from ..train import train
from .tables import fmt_value

if TYPE_CHECKING:  # the settings type only; experiments.py imports this module
    from .experiments import CifarSettings

__all__ = ["WARMUP_FROM_DEPTH", "WARMUP_UNTIL_TRAIN_ERROR", "paper_config", "train_config", "shortened", "resolved_config",
           "dataset_name", "provenance", "run_name", "ensure_run", "ensure_runs", "snapshot", "run_summary",
           "hardware"]

#: section 4.2: "For the 110-layer network, we use 0.01 to warm up the training until the training
#: error is below 80% (about 400 iterations)"; the 1202-layer net is "trained as described above"
WARMUP_FROM_DEPTH = 110
WARMUP_UNTIL_TRAIN_ERROR = 0.8


def paper_config(recipe: str, model: str, seed: int) -> TrainConfig:
    """The paper's recipe for ``model`` and ``seed``: ResNet-110 and deeper warm up at lr 0.01
    until the training error is below 80 % (section 4.2)."""
    changes: dict[str, Any] = {"model": model, "seed": seed}
    if model_info(model).defaults["depth"] >= WARMUP_FROM_DEPTH:
        changes["warmup_until_train_error"] = WARMUP_UNTIL_TRAIN_ERROR
    return apply_overrides(get_recipe(recipe), changes)


def train_config(settings: CifarSettings, model: str, seed: int, train_overrides: dict[str, Any]) -> TrainConfig:
    """The config of one run: the paper's (:func:`paper_config`) with the shortening and the
    overrides applied.  Shortened runs keep the shape of the schedule: the lr milestones (32k
    and 48k of 64k) and the logging, evaluation and checkpoint intervals are scaled by
    ``iterations / 64k``."""
    paper = shortened(paper_config(settings.recipe, model, seed), settings.iterations)
    changes: dict[str, Any] = {}
    if settings.train_subset is not None:
        changes["train_subset"] = settings.train_subset
    changes.update(train_overrides)
    return apply_overrides(paper, changes)


def shortened(config: TrainConfig, iterations: int | None) -> TrainConfig:
    """``config`` cut to ``iterations`` (None: unchanged) with the shape of its schedule kept:
    the lr milestones (32k and 48k of 64k) and the logging, evaluation and checkpoint
    intervals scaled by ``iterations / config.iterations``."""
    if iterations is None or iterations == config.iterations:
        return config
    scale = iterations / config.iterations
    changes: dict[str, Any] = {"iterations": iterations,
                               "milestones": tuple(max(1, round(m * scale)) for m in config.milestones)}
    for key in ("log_every", "eval_every", "checkpoint_every"):
        changes[key] = max(1, round(getattr(config, key) * scale))
    return apply_overrides(config, changes)


def resolved_config(config: TrainConfig, data: str) -> dict[str, Any]:
    """A run's identity, as :func:`resnetlab.train.train` writes it into ``config.json``."""
    return dict(config.to_dict(), data=data)


def dataset_name(data: str) -> str:
    """``"cifar10=/data/c10"`` -> ``"cifar10"``, ``"digits"`` -> ``"digits"``; detection data too
    (``voc=PATH`` -> ``"voc"``, ``coco=PATH``, ``shapes``)."""
    if data.partition("=")[0].strip().lower() in DETECTION_DATA:
        return parse_detection_data(data)[0]
    return parse_data_spec(data)[0]


def provenance(experiment: str, recipe: str, config: TrainConfig, data: str) -> dict[str, Any]:
    """What made a run, written into its ``config.json`` when it is created: the experiment,
    the recipe, whether the run is the paper's recipe unchanged (``paper_recipe``: no key that
    changes the result differs from :func:`paper_config`; the data path is not a recipe
    key), the changes (``{key: {"paper": ..., "ours": ...}}``) and the data set's name."""
    reference = resolved_config(paper_config(recipe, config.model, config.seed), data)
    changes = result_changes(resolved_config(config, data), reference)
    return {"experiment": experiment, "recipe": recipe, "paper_recipe": not changes,
            "changes": {k: {"paper": paper, "ours": ours} for k, (paper, ours) in changes.items()},
            "dataset": dataset_name(data)}


def _name_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_.,=[]" else "" for c in text)


def run_name(settings: CifarSettings, model: str, seed: int, train_overrides: dict[str, Any], data: str) -> str:
    """A readable folder name: model, seed, data set, then the shortening and the overrides
    that change the result (``cifar_resnet20-seed0-cifar10-it300``).  Not the identity: see
    the module docstring."""
    parts = [model, f"seed{seed}", dataset_name(data)]
    if settings.iterations is not None:
        parts.append(f"it{settings.iterations}")
    if settings.train_subset is not None:
        parts.append(f"sub{settings.train_subset}")
    parts += [f"{k}{fmt_value(v)}" for k, v in sorted(train_overrides.items()) if k not in RESULT_NEUTRAL_KEYS]
    return "-".join(_name_part(p) for p in parts)


def _saved_config(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / runfolder.CONFIG).read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{run_dir} is not empty but holds no readable {runfolder.CONFIG}: it is not a run "
                          "this experiment can reuse; delete it or use another --out") from None


@contextlib.contextmanager
def _only_process(run_dir: Path) -> Iterator[None]:
    """Hold ``<run_dir>.lock`` (an advisory ``flock``, released when the process ends, even if it is
    killed): two reproduce commands on one root never train, resume or read one run at once. The
    holder removes the file when it is done, so no lock files stay beside the runs (a killed holder
    leaves its file, which the next command takes over)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = run_dir.with_name(run_dir.name + ".lock")
    while True:
        lock = open(path, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ConfigError(f"{run_dir} is being trained by another process; run this command again when "
                              "that one has finished") from None
        try:
            if os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                break  # the file at the path is the one locked (not one its last holder removed meanwhile)
        except FileNotFoundError:
            pass
        lock.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        lock.close()


def ensure_run(config: TrainConfig, data: str, run_dir: Path, made_by: dict[str, Any]) -> Path:
    """``run_dir`` holding a finished run of ``config`` on ``data``: reused when it is finished,
    resumed when it holds a checkpoint, trained when it is new (with ``made_by`` as its
    provenance).  A folder whose saved config differs from ``config`` in a key that changes
    the result is refused, the differences named, before anything is trained; so is a run
    that another process is training."""
    with _only_process(run_dir):
        if run_dir.is_dir() and any(run_dir.iterdir()):
            changed = result_changes(resolved_config(config, data), _saved_config(run_dir))
            if changed:
                diff = "; ".join(f"{k}: {saved!r} there, {wanted!r} wanted" for k, (saved, wanted) in changed.items())
                raise ConfigError(f"{run_dir} holds a run of another config ({diff}): it is neither reused nor "
                                  "resumed; delete it or use another --out")
            if (run_dir / runfolder.FINAL).is_file():
                print(f"reproduce: {run_dir} is finished with the same config; reusing it", file=sys.stderr)
                return run_dir
            if not (run_dir / runfolder.CHECKPOINT).is_file():
                raise ConfigError(f"{run_dir} holds an unfinished run without a checkpoint: delete it to start over")
            resume = True
        else:
            resume = False
        print(f"reproduce: {'resuming' if resume else 'training'} {config.model} seed {config.seed} for "
              f"{config.iterations} iterations -> {run_dir}", file=sys.stderr)
        if train(config, data=data, out_dir=run_dir, resume=resume, provenance=made_by).interrupted:
            raise KeyboardInterrupt  # the run saved a checkpoint; the same command resumes it
        return run_dir


def ensure_runs(experiment: str, settings: CifarSettings, train_overrides: dict[str, Any], data: str | None,
                root: Path) -> dict[tuple[str, int], Path]:
    """The finished run folder of every (net, seed) of ``settings`` under ``root/runs``
    (shared between experiments: ResNet-56 is trained once for Table 6, Fig. 6 and Fig. 7)."""
    if data is None:
        raise ConfigError("this experiment trains networks: give --data cifar10=PATH (or digits for a smoke run)")
    runs = {}
    for seed in settings.seeds:
        for model in settings.nets():
            config = train_config(settings, model, seed, train_overrides)
            run_dir = root / "runs" / run_name(settings, model, seed, train_overrides, data)
            runs[(model, seed)] = ensure_run(config, data, run_dir,
                                             provenance(experiment, settings.recipe, config, data))
    return runs


def snapshot(experiment: str, settings: CifarSettings, model: str, seed: int, at: int,
             train_overrides: dict[str, Any], data: str, root: Path) -> Path:
    """Weights of ``model`` after ``at`` iterations of its (possibly shortened) run.

    The schedule is a function of the iteration only (step milestones, section 4.2) and a
    seeded run is deterministic, so a run stopped at ``at`` with the same milestones is the
    prefix of the whole run: its final weights are the whole run's weights at ``at``.
    """
    full = train_config(settings, model, seed, train_overrides)
    name = run_name(settings, model, seed, train_overrides, data)
    config, run_dir = full, root / "runs" / name
    if at != full.iterations:
        config, run_dir = dataclasses.replace(full, iterations=at), root / "runs" / f"{name}-at{at}"
    return ensure_run(config, data, run_dir, provenance(experiment, settings.recipe, config, data)) / runfolder.FINAL


def run_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What REPORT.md says about one training run folder: model, seed, data set, length,
    device, wall time, final validation error, and (from the provenance written when it was
    created) whether it used the paper's recipe unchanged (``full``; False for a run without
    provenance) and what it changed."""
    run_dir = Path(run_dir)
    try:
        body = json.loads((run_dir / runfolder.CONFIG).read_text())
        config = body["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{run_dir} is not a training run folder (no readable config.json)") from None
    made_by = body.get("provenance") or {}
    records = runfolder.read_metrics(run_dir)
    val = [r["val_err"] for r in records if r.get("val_err") is not None]
    times = [r["time"] for r in records if "time" in r]
    env = body.get("environment", {})
    device = env.get("gpu") or env.get("device") or config.get("device")
    if device == "cpu" and env.get("threads"):
        device = f"cpu, {env['threads']} thread{'s' if env['threads'] > 1 else ''}"
    return {
        "run": run_dir.name,
        "path": str(run_dir),
        "model": config["model"],
        "seed": config["seed"],
        "dataset": made_by.get("dataset") or dataset_name(config["data"]),
        "experiment": made_by.get("experiment"),
        "iterations": config["iterations"],
        "iterations_done": max((r["step"] for r in records if "step" in r), default=0),
        "finished": (run_dir / runfolder.FINAL).is_file(),
        "device": device,
        "wall_time_s": max(times, default=None),
        "val_err": val[-1] if val else None,
        "full": made_by.get("paper_recipe") is True,
        "provenance": bool(made_by),
        "changes": made_by.get("changes", {}),
    }


def hardware() -> dict[str, Any]:
    """What ran an experiment (:func:`resnetlab.machine.describe` on the device ``auto`` picks:
    versions, CPU model, threads, GPU, load average, git commit)."""
    return describe(resolve_device("auto"))
