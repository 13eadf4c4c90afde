"""INT8 accuracy check: top-1 of a CIFAR ResNet in fp32 and after ``optimize(quantize="int8")``.

Calibrates on images of the 45k training part and measures the accuracy change on the
fixed 5k hold-out (section 4.2's split), so calibration and evaluation images are disjoint.
Default model: the public akamaster ResNet-20 imported from ../shared/weights.

    .venv/bin/python benchmarks/int8_accuracy.py --data cifar10=DIR [--checkpoint FILE]

Prints one JSON object (fp32 and int8 top-1, their difference in points, top-1 agreement).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from resnetlab.bench import cpu_threads, environment
from resnetlab.data import holdout_split, normalize, open_dataset
from resnetlab.importers import import_akamaster
from resnetlab.inference import optimize

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO.parent / "shared" / "weights" / "cifar10-akamaster" / "resnet20-12fca82f.th"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="cifar10=PATH (python batches or train/<class>/ folders)")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="akamaster .th file")
    p.add_argument("--calibration", type=int, default=512, help="calibration images (from the 45k part)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    with cpu_threads(args.threads):
        t0 = time.perf_counter()
        imported = import_akamaster(args.checkpoint)
        data = open_dataset(args.data, "train")
        train_idx, val_idx = holdout_split(len(data))
        calib_idx = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(0))]
        calib_idx = calib_idx[: args.calibration]

        def inputs(idx: torch.Tensor) -> torch.Tensor:
            return normalize(data.images[idx], imported.mean, imported.std)

        calibration = [inputs(idx) for idx in calib_idx.split(args.batch_size)]
        validation = [(inputs(idx), data.targets[idx]) for idx in val_idx.split(args.batch_size)]
        print(f"data ready ({time.perf_counter() - t0:.0f} s); quantizing", file=sys.stderr)
        fast = optimize(imported.model, calibration[0][:8], quantize="int8",
                        calibration=calibration, validation=validation)
        acc = fast.report["accuracy"]
        result = {
            "model": imported.model.resnetlab_name,
            "checkpoint": args.checkpoint.name,
            "dataset": data.name,
            "split": "val (5k hold-out of train, section 4.2)",
            "calibration_images": len(calib_idx),
            "n": acc["n_labelled"],
            "top1_acc_fp32": round(acc["top1_acc_fp32"], 5),
            "top1_acc_int8": round(acc["top1_acc"], 5),
            "top1_delta_points": round(100 * acc["top1_delta"], 3),
            "top1_agreement": round(acc["top1_agreement"], 5),
            "steps": fast.report["steps"],
            **environment(torch.device("cpu")),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
