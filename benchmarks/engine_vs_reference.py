"""The training engine against a plain PyTorch loop written here, on real CIFAR-10.

ResNet-20 with the paper's CIFAR recipe (section 4.2: batch 128, SGD momentum 0.9, weight decay
1e-4, lr 0.1, pad-4 random crop + flip, per-pixel mean subtraction) shortened to 4,000
iterations with the lr divided by 10 at 2,000 and 3,000, trained twice per seed on the 45k part of
the shared CIFAR-10 training copy and tested on the fixed 5k hold-out:

- ``engine``: ``resnetlab.train.train`` with ``paper_cifar`` and those overrides;
- ``plain``: the loop below, which shares nothing with the engine but the model builder and the
  45k/5k index split: its own JPEG decoding (Pillow), mean, shuffling, augmentation, optimizer
  step (``torch.optim.SGD`` + ``MultiStepLR``) and evaluation.

Both are seeded but draw different random numbers, so they agree only up to seed noise; run two
seeds when one pair is closer than that. Prints one JSON line per run and a summary line::

    python benchmarks/engine_vs_reference.py --data /tmp/cifar10 --out /tmp/evr --seeds 0 1 --jobs 2

``--data`` is a folder holding ``train/<class>/*.jpg`` (the shared copy, extracted). Each run uses
one CPU thread; ``--jobs`` runs that many at a time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from resnetlab.config import apply_overrides
from resnetlab.data import holdout_split
from resnetlab.recipes import get_recipe
from resnetlab.registry import create_model
from resnetlab.train import train

MODEL = "cifar_resnet20"
ITERATIONS = 4_000  # lr /10 at 1/2 and 3/4 of the run: 2,000 and 3,000
BATCH, LR, MOMENTUM, WEIGHT_DECAY, PAD = 128, 0.1, 0.9, 1e-4, 4


def decode_folder(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``train/<class>/*`` image as uint8 N x 3 x 32 x 32, classes in sorted folder order."""
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((root / "train" / name).iterdir()):
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(index)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels)


def milestones(iterations: int) -> tuple[int, int]:
    """The lr drops of a run of ``iterations``: at 1/2 and 3/4, as 32k and 48k of the paper's 64k."""
    return iterations // 2, 3 * iterations // 4


def plain_loop(root: Path, seed: int, iterations: int) -> dict[str, Any]:
    """The reference: a loop as a reader of the paper would write it."""
    start = time.perf_counter()
    images, labels = decode_folder(root)
    train_idx, val_idx = holdout_split(len(labels))
    x_train, y_train = images[train_idx], labels[train_idx]
    x_val, y_val = images[val_idx], labels[val_idx]
    mean = x_train.double().mean(0).float() / 255  # per-pixel mean (section 4.2), 3 x 32 x 32

    torch.manual_seed(seed)
    model = create_model(MODEL)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones(iterations)), gamma=0.1)
    gen = torch.Generator().manual_seed(1000 + seed)
    order: list[int] = []
    model.train()
    for step in range(iterations):
        if len(order) < BATCH:  # a new epoch: reshuffle, drop the last partial batch
            order = torch.randperm(len(y_train), generator=gen).tolist()
        batch, order = order[:BATCH], order[BATCH:]
        x = F.pad(x_train[batch].float() / 255 - mean, (PAD, PAD, PAD, PAD))
        crops = []
        for image in x:
            dy, dx = torch.randint(0, 2 * PAD + 1, (2,), generator=gen).tolist()
            crop = image[:, dy:dy + 32, dx:dx + 32]
            crops.append(crop.flip(-1) if torch.rand(1, generator=gen).item() < 0.5 else crop)
        loss = F.cross_entropy(model(torch.stack(crops)), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if (step + 1) % 500 == 0:
            print(f"plain seed {seed}: step {step + 1}/{iterations} loss {loss.item():.3f} "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    model.eval()
    with torch.no_grad():
        wrong = sum(int((model(x_val[i:i + 500].float() / 255 - mean).argmax(1) != y_val[i:i + 500]).sum())
                    for i in range(0, len(y_val), 500))
    return {"loop": "plain", "seed": seed, "val_err": wrong / len(y_val), "seconds": time.perf_counter() - start}


def engine(root: Path, seed: int, iterations: int, out: Path) -> dict[str, Any]:
    """The same recipe through resnetlab's engine."""
    start = time.perf_counter()
    config = apply_overrides(get_recipe("paper_cifar"), {
        "model": MODEL, "iterations": iterations, "milestones": list(milestones(iterations)), "seed": seed,
        "eval_every": iterations // 4, "checkpoint_every": iterations // 4, "log_every": 100})
    result = train(config, data=f"cifar10={root}", out_dir=out / f"engine-seed{seed}", progress=False)
    return {"loop": "engine", "seed": seed, "val_err": result.val_err, "seconds": time.perf_counter() - start,
            "run": str(result.out_dir)}


def _job(args: tuple[str, str, int, int, str]) -> dict[str, Any]:
    which, root, seed, iterations, out = args
    torch.set_num_threads(1)
    result = (plain_loop(Path(root), seed, iterations) if which == "plain"
              else engine(Path(root), seed, iterations, Path(out)))
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder holding train/<class>/*.jpg")
    parser.add_argument("--out", required=True, type=Path, help="where the engine's run folders go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=ITERATIONS, help="shorter only for a smoke run")
    args = parser.parse_args()
    jobs = [(which, str(args.data), seed, args.iterations, str(args.out)) for seed in args.seeds for which in ("engine", "plain")]
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        results = pool.map(_job, jobs)
    by = {(r["loop"], r["seed"]): r for r in results}
    gaps = [100 * (by[("engine", s)]["val_err"] - by[("plain", s)]["val_err"]) for s in args.seeds]
    summary = {
        "engine_val_err_pct": [round(100 * by[("engine", s)]["val_err"], 2) for s in args.seeds],
        "plain_val_err_pct": [round(100 * by[("plain", s)]["val_err"], 2) for s in args.seeds],
        "engine_minus_plain_pts": [round(g, 2) for g in gaps],
        "mean_gap_pts": round(sum(gaps) / len(gaps), 2),
        "engine_seconds": [round(by[("engine", s)]["seconds"]) for s in args.seeds],
        "plain_seconds": [round(by[("plain", s)]["seconds"]) for s in args.seeds],
        "iterations": args.iterations, "threads_per_run": 1, "cpu": os.uname().machine, "torch": torch.__version__,
    }
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
