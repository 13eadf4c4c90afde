"""Run folders: ``config.json``, ``metrics.jsonl``, the resumable ``checkpoint.pt`` and, once a run
has finished, ``final.safetensors``.

A run folder is created empty or resumed, never overwritten: an existing non-empty folder
without ``--resume`` is refused, and ``--resume`` needs a checkpoint written under the same
config. A run that stopped before its first checkpoint (bad data at step 4, a NaN, a kill) has
nothing to resume: its folder, holding only what such a run writes (:data:`STARTED_FILES`), is
started again by the same command, with or without ``--resume``. Checkpoints are written
atomically (temp file + ``os.replace``) and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, WeightsError
from .files import atomic_save, atomic_write_text
from .machine import describe
from .recipes import result_changes

__all__ = ["CHECKPOINT", "CONFIG", "METRICS", "FINAL", "TENSORBOARD", "CURVES", "STARTED_FILES", "prepare", "write_config", "saved_config", "MetricsLog",
           "save_checkpoint", "load_checkpoint", "read_metrics", "last_validation"]

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
FINAL = "final.safetensors"
TENSORBOARD = "tensorboard"
CURVES = "curves.png"
#: what a run writes before its first checkpoint: a folder holding only these (config.json among
#: them) stopped before it had anything to resume
STARTED_FILES = (CONFIG, METRICS, TENSORBOARD, CURVES)


def _stopped_before_first_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a resnetlab run that stopped before its first checkpoint, and nothing else."""
    names = {entry.name for entry in out.iterdir()}
    if CONFIG not in names or not names <= set(STARTED_FILES):
        return False
    try:
        return "config" in json.loads((out / CONFIG).read_text())
    except (OSError, ValueError, TypeError):
        return False


def _start_again(out: Path) -> None:
    """Remove what a run that stopped before its first checkpoint wrote (every process may call
    this at once: what another removed first is not an error)."""
    print(f"resnetlab: {out} holds a run that stopped before its first checkpoint (nothing to resume): "
          "starting it again", file=sys.stderr)
    for name in STARTED_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def prepare(out_dir: str | os.PathLike, config: dict[str, Any], resume: bool) -> Path | None:
    """Check the run folder before any work; returns the checkpoint to resume from (or None).

    A folder that holds only a run stopped before its first checkpoint is emptied and started
    again, with or without ``resume``. Refused with :class:`ConfigError`, touching nothing: any
    other non-empty folder without ``resume``; ``resume`` without a checkpoint; ``resume`` with a
    config that differs in a key that changes the result (the differing keys are named).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if out.is_dir() and _stopped_before_first_checkpoint(out):
        _start_again(out)
        return None
    if not resume:
        if out.is_dir() and any(out.iterdir()):
            raise ConfigError(f"run folder {out} is not empty: continue it with --resume or choose another --out")
        return None
    checkpoint = out / CHECKPOINT
    if not checkpoint.is_file():
        raise ConfigError(f"nothing to resume in {out} (no {CHECKPOINT})")
    try:
        saved = json.loads((out / CONFIG).read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{out / CONFIG} is missing or unreadable: cannot check the config to resume") from None
    changed = result_changes(config, saved)
    if changed:
        diff = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ConfigError(f"cannot resume {out} with a different config ({diff}); use the original settings "
                          f"or a new --out")
    return checkpoint


def write_config(out_dir: Path, config: dict[str, Any], device: torch.device | str, world_size: int = 1,
                 provenance: dict[str, Any] | None = None) -> None:
    """``config.json``: the resolved config's fields at the top level (as recipes name them,
    ``device`` resolved), plus ``config`` (as given, for resume checks), ``environment`` (what
    the run runs on: :func:`resnetlab.machine.describe` of ``device`` and ``world_size``
    processes) and ``provenance`` (what made the run, written once when it is created)."""
    env = describe(device, world_size)
    body = dict(config, config=config, environment=env, device=env["device"], provenance=provenance or {})
    atomic_write_text(out_dir / CONFIG, json.dumps(body, indent=2) + "\n")


def saved_config(out_dir: Path, recipe: str, command: str = "resnetlab train") -> dict[str, Any] | None:
    """The config a run folder was created with (``config.json``'s ``config``; None when the
    folder has none), for ``--resume`` with only ``--out``. A folder made by another recipe
    (its ``provenance``) is refused, naming the ``command`` that resumes it."""
    try:
        body = json.loads((Path(out_dir) / CONFIG).read_text())
    except (OSError, ValueError):
        return None
    made_by = (body.get("provenance") or {}).get("recipe")
    if made_by is not None and made_by != recipe:
        raise ConfigError(f"{out_dir} is a run of recipe {made_by!r}, not {recipe!r}: resume it with "
                          f"`{command} {made_by} --out {out_dir} --resume`")
    return dict(body["config"])


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; :meth:`offset` is stored in
    checkpoints so that a resumed run first cuts the lines written after its checkpoint."""

    def __init__(self, out_dir: Path, enabled: bool = True) -> None:
        self.path = out_dir / METRICS
        self.enabled = enabled

    def offset(self) -> int:
        """Current size of the file in bytes."""
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, offset: int) -> None:
        """Drop everything after byte ``offset`` (records newer than the resumed checkpoint)."""
        if self.enabled and self.path.exists():
            with open(self.path, "r+b") as f:
                f.truncate(offset)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line (flushed: a killed run keeps what it logged)."""
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(out_dir: Path) -> list[dict[str, Any]]:
    """The records of ``out_dir/metrics.jsonl`` (an unfinished last line is ignored)."""
    path = Path(out_dir) / METRICS
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def last_validation(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's last validation as an evaluation result (the keys of ``resnetlab eval``'s JSON
    line: ``dataset split protocol n top1_err top5_err``, plus ``step`` and ``source``), for
    the model card of its weights; None when ``metrics.jsonl`` records none with its image count."""
    out = Path(out_dir)
    records = [r for r in read_metrics(out) if r.get("val_n")]
    try:
        config = json.loads((out / CONFIG).read_text())
    except (OSError, ValueError):
        return None
    if not records or not isinstance(config, dict):
        return None
    last = records[-1]
    return {"dataset": str(config.get("data", "")).partition("=")[0], "split": "test" if config.get("val") == "test"
            else "val", "protocol": last["val_protocol"], "n": last["val_n"], "top1_err": last["val_err"],
            "top5_err": last["val_top5_err"], "step": last["step"],
            "source": f"validation of the training run {out.name} at step {last['step']}"}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a crash mid-write keeps the previous checkpoint."""
    atomic_save(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code from the file can run)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle refused, ...
        raise WeightsError(f"{path}: cannot read checkpoint ({exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise WeightsError(f"{path}: not a resnetlab training checkpoint")
    return state
