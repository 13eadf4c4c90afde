"""The reproduction campaign: Table 6 and Figure 6 at the paper's full length, run in stages in the
background on whatever machine is at hand, and resumed from committed progress on the next one.

``python -m resnetlab.reproduce.campaign start`` (``make campaign``) starts or resumes every
unfinished run of the current stage, one process per run, the CPU cores split between them;
``status`` (``make campaign-status``) prints where each run stands. Run folders live in
``results/campaign/<model>/`` (config.json, metrics.jsonl, checkpoint.pt while unfinished,
``segments.jsonl``: which machine trained which steps). A finished run's weights go to
``results/cifar10/<model>.safetensors`` and its checkpoint leaves the tree; when the last run of a
stage ends, the next stage starts by itself.

Every run is :data:`RECIPE` (section 4.2 on all 50,000 training images, the test error watched
every 1,000 iterations) with seed 0, trained on the lossless CIFAR-10 reached through
:data:`DATA_DIR` (a link to, or a copy of, ``../shared/data/cifar10/cifar-10-batches-py``, checked
by hash), so that the data spec in each run's identity is the same on every machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl  # POSIX: the run lock (resnetlab trains on Linux)
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .. import runfolder
from ..errors import DataError, ResnetlabError
from ..machine import describe
from ..recipes import TrainConfig
from .runs import ensure_run, paper_config, provenance

__all__ = ["RECIPE", "STAGES", "ROOT", "DATA_DIR", "DATA_SPEC", "SHA256", "campaign_config", "current_stage",
           "ensure_data", "run_status", "start", "train_run", "harvest"]

#: section 4.2's recipe for the reported models (resnetlab.recipes)
RECIPE = "paper_cifar_50k"
SEED = 0
#: the stages, in order: the 20-layer pair, the degradation pair (56), then 32/44 of both and ResNet-110
STAGES: tuple[tuple[str, ...], ...] = (
    ("cifar_resnet20", "cifar_plain20"),
    ("cifar_resnet56", "cifar_plain56"),
    ("cifar_resnet32", "cifar_plain32", "cifar_resnet44", "cifar_plain44", "cifar_resnet110"),
)
ROOT = Path("results/campaign")
WEIGHTS_DIR = Path("results/cifar10")
#: the data as every run names it (relative to the repository root, where the campaign runs)
DATA_DIR = Path("_data/cifar-10-batches-py")
DATA_SPEC = f"cifar10={DATA_DIR}"
SHARED_DATA = Path("../shared/data/cifar10/cifar-10-batches-py")
#: the lossless CIFAR-10's files (../shared/data/cifar10/README.md)
SHA256 = {
    "batches.meta": "ad9b69c3960ed9fc8543d53923d8cc202b80a269fbfbda59699bd3ebd7c91e82",
    "data_batch_1": "f9e645adbfaa31413fdcb6fdeb681bec31369ffd4b620a4e1f81284ed4b1108b",
    "data_batch_2": "1013566dba718fd58eb4823d100cb7b25bca56b62f496a314264a3e9783f51ce",
    "data_batch_3": "b1a96d2ef5f32b8ee22be00a30e84ff2311be7edc172384dd25e390d5cca2dcd",
    "data_batch_4": "1fe13b4855929bb382959d491b36c47834f5912e04b153628712c5b566e12ccd",
    "data_batch_5": "e3ab7bc86bf5e9d66cae3ddcabae293308d4393d37443542671c516fb49d4e9c",
    "test_batch": "a2d3f4f8259ff6b250ae79aaf686f7ccbf849886f2c8d6ea8b6d5e1b20bea64e",
}
SEGMENTS = "segments.jsonl"


def campaign_config(model: str, **neutral: Any) -> TrainConfig:
    """The :class:`~resnetlab.recipes.TrainConfig` of ``model``'s run: :data:`RECIPE` with the
    paper's ResNet-110 warm-up where it applies, plus result-neutral keys (``device``, ...)."""
    config = paper_config(RECIPE, model, SEED)
    return dataclasses.replace(config, **neutral)


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_data(source: Path | None = None) -> Path:
    """:data:`DATA_DIR`, made a link to ``source`` (default :data:`SHARED_DATA`) when absent, with
    every file's sha256 checked against :data:`SHA256`: the campaign never trains on other data
    (the JPEG copy, a truncated transfer) under this name."""
    if not DATA_DIR.exists():
        source = Path(source or SHARED_DATA)
        if not source.is_dir():
            raise DataError(f"the lossless CIFAR-10 is neither at {DATA_DIR} nor at {source}: put "
                            "cifar-10-batches-py there (../shared/data/cifar10)")
        DATA_DIR.parent.mkdir(parents=True, exist_ok=True)
        DATA_DIR.symlink_to(source.resolve(), target_is_directory=True)
    for name, want in SHA256.items():
        path = DATA_DIR / name
        if not path.is_file() or _hash(path) != want:
            raise DataError(f"{path} is missing or is not the lossless CIFAR-10 (sha256 differs from "
                            "../shared/data/cifar10/README.md)")
    return DATA_DIR


def _finished(model: str, root: Path) -> bool:
    return (root / model / runfolder.FINAL).is_file()


def current_stage(root: Path = ROOT) -> int | None:
    """Index of the first stage with an unfinished run (None when every stage is done)."""
    return next((i for i, models in enumerate(STAGES) if not all(_finished(m, root) for m in models)), None)


def _running(model: str, root: Path) -> bool:
    """Whether a process holds the run's lock (:func:`resnetlab.reproduce.runs.ensure_run`)."""
    lock = root / f"{model}.lock"
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def run_status(model: str, root: Path = ROOT) -> dict[str, Any]:
    """Where ``model``'s run stands: step of total, images/s and seconds per step (training and
    evaluation, over the last 1,000 logged steps), ETA, the last test error, running or not, and
    the machines (CPU vector capability and model) that trained it."""
    run = root / model
    total = campaign_config(model).iterations
    records = runfolder.read_metrics(run)
    logs = [r for r in records if "train_loss" in r]
    tests = [r for r in records if r.get("val_err") is not None]
    step = logs[-1]["step"] if logs else 0
    per_step = None
    if len(logs) >= 2:
        first = next((r for r in logs if r["step"] >= step - 1000), logs[-2])
        if first["step"] < step:
            per_step = (logs[-1]["time"] - first["time"]) / (logs[-1]["step"] - first["step"])
    segments = _segments(run)
    finished = _finished(model, root)
    return {
        "run": model, "step": total if finished else step, "iterations": total, "finished": finished,
        "running": _running(model, root),
        "img_s": logs[-1]["img_s"] if logs else None,
        "eta_s": None if finished or per_step is None else round(per_step * (total - step)),
        "test_err": tests[-1]["val_err"] if tests else None, "test_err_step": tests[-1]["step"] if tests else None,
        "machines": sorted({s["machine"]["cpu_capability"] + " " + s["machine"]["cpu"] for s in segments}),
    }


def _segments(run: Path) -> list[dict[str, Any]]:
    """Which machine trained which steps: the run's creation (``config.json``'s environment, step
    0), then one record per resume (``segments.jsonl``)."""
    try:
        first = [{"from_step": 0, "machine": json.loads((run / runfolder.CONFIG).read_text())["environment"]}]
    except (OSError, ValueError, KeyError):
        return []
    path = run / SEGMENTS
    resumed = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return first + resumed


def _fmt_eta(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_status(root: Path = ROOT) -> str:
    """The table ``status`` prints: one line per run of every stage."""
    stage = current_stage(root)
    lines = [f"campaign: {RECIPE}, seed {SEED}, {DATA_SPEC}; current stage: "
             f"{'all done' if stage is None else stage + 1} of {len(STAGES)}",
             f"{'stage':<6}{'run':<17}{'state':<10}{'step':>14}{'img/s':>8}{'ETA':>9}  test error"]
    for i, models in enumerate(STAGES):
        for model in models:
            s = run_status(model, root)
            state = "finished" if s["finished"] else "running" if s["running"] else \
                "stopped" if s["step"] else "waiting"
            test = "-" if s["test_err"] is None else f"{100 * s['test_err']:.2f} % at {s['test_err_step']}"
            mixed = "  (steps trained on CPUs of different capability)" if len(s["machines"]) > 1 else ""
            lines.append(f"{i + 1:<6}{model:<17}{state:<10}{s['step']:>7}/{s['iterations']:<6}"
                         f"{s['img_s'] or '-':>8}{_fmt_eta(s['eta_s']):>9}  {test}{mixed}")
    return "\n".join(lines)


def _device_plan(n_runs: int, device: str) -> tuple[str, int]:
    """``(device, threads per run)``: on a CPU the cores are split between the runs; on a GPU
    every run shares the device and takes one core for its host work."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = max(1, (os.cpu_count() or 1) // n_runs) if device == "cpu" else 1
    return device, threads


def start(root: Path = ROOT, device: str = "auto", python: str = sys.executable) -> list[str]:
    """Start every unfinished run of the current stage that no process is training, each in its own
    background process (``train`` below), logging to ``root/<model>.log``; returns their names."""
    ensure_data()
    stage = current_stage(root)
    if stage is None:
        return []
    todo = [m for m in STAGES[stage] if not _finished(m, root) and not _running(m, root)]
    device, threads = _device_plan(len([m for m in STAGES[stage] if not _finished(m, root)]), device)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    for model in todo:
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f"{model}.log", "a") as log:
            # the command line names results/campaign: the stop hook finds these processes by it
            subprocess.Popen([python, "-m", "resnetlab.reproduce.campaign", "train", model, "--root", str(root),
                              "--device", device], stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    return todo


def harvest(model: str, root: Path = ROOT, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """A finished run's weights to ``weights_dir/<model>.safetensors``; its checkpoint leaves the tree."""
    run = root / model
    target = weights_dir / f"{model}.safetensors"
    weights_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / runfolder.FINAL, target)
    (run / runfolder.CHECKPOINT).unlink(missing_ok=True)
    return target


def train_run(model: str, root: Path = ROOT, device: str = "auto") -> bool:
    """Train (or resume) ``model``'s run to its end in this process; True when it finished (then
    harvested, and the next stage started if this run ended the current one). Each start appends
    the machine to ``segments.jsonl``: a resumed run is bit-identical to an uninterrupted one only
    on CPUs of the same vector capability, so which machine trained which steps is recorded."""
    ensure_data()
    run = root / model
    config = campaign_config(model, device=device)
    step = 0
    if (run / runfolder.CHECKPOINT).is_file():
        step = int(runfolder.load_checkpoint(run / runfolder.CHECKPOINT)["step"])
    if step and not _finished(model, root):  # a new run's first machine is config.json's environment
        with open(run / SEGMENTS, "a") as f:
            f.write(json.dumps({"from_step": step, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "machine": describe(device if device != "auto" else "cpu")}) + "\n")
    print(f"campaign: threads {torch.get_num_threads()}, {model} from step {step}", flush=True)
    try:
        ensure_run(config, DATA_SPEC, run, provenance("campaign", RECIPE, config, DATA_SPEC))
    except KeyboardInterrupt:
        print(f"campaign: {model} stopped at its checkpoint; `make campaign` resumes it", flush=True)
        return False
    harvest(model, root)
    print(f"campaign: {model} finished; weights in {WEIGHTS_DIR / (model + '.safetensors')}", flush=True)
    start(root, device)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnetlab.reproduce.campaign", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("start", "start or resume every unfinished run of the current stage in the background"),
                       ("status", "where each run stands"), ("train", "train one run in this process")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--root", type=Path, default=ROOT)
        if name != "status":
            p.add_argument("--device", default="auto")
        if name == "train":
            p.add_argument("model", choices=[m for models in STAGES for m in models])
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            print(format_status(args.root))
        elif args.command == "start":
            started = start(args.root, args.device)
            print(f"campaign: started {', '.join(started)} (logs in {args.root}/<run>.log)" if started else
                  "campaign: nothing to start (every run of the current stage is running or finished)")
            print(format_status(args.root))
        else:
            train_run(args.model, args.root, args.device)
    except ResnetlabError as exc:
        print(f"campaign: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
