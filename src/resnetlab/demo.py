"""``python -m resnetlab.demo`` (what ``make demo`` runs): the paper's CIFAR experiment in miniature.

Trains the ``demo`` recipe -- a CIFAR ResNet-20 (section 4.2: 3x3 convs, 16/32/64 filters,
option A shortcuts) with the paper's recipe scaled to scikit-learn's built-in handwritten
digits (no download) -- on 2 CPU cores in a few minutes, then evaluates the final weights
file on the held-out test digits. The last line of stdout is the eval JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from . import paper
from .config import apply_overrides, parse_overrides
from .errors import ResnetlabError
from .evaluate import run_eval
from .recipes import get_recipe
from .train import train

INTRO = """\
resnetlab demo: He et al. 2015 ("Deep Residual Learning"), section 4.2, in miniature.
  net:    {model} (6n+2 = 20 layers, 3x3 convs with 16/32/64 filters, option A shortcuts, BN, He init)
  recipe: SGD momentum {momentum}, weight decay {weight_decay}, batch {batch_size}, lr {lr} divided by 10 at
          steps {milestones}, {iterations} steps; pad-{pad} random crop (no flips: digits are not
          mirror-symmetric); per-pixel mean subtraction;
          validation on a fixed 10 % hold-out of the training images (the paper's 45k/5k split)
  data:   scikit-learn's 1,797 handwritten digits upsampled to 16x16 (1,293 train / 144 val / 360 test)
  run:    {out}
"""


def main(argv: list[str] | None = None) -> int:
    """Train the demo, print what it is, and end with the eval JSON line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m resnetlab.demo", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="demo recipe fields (threads=N: CPU threads; default: chosen from the cores and their load)")
    parser.add_argument("--out", default=None, help="run folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    try:
        config = apply_overrides(get_recipe("demo"), parse_overrides(args.overrides))
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="resnetlab-demo-"))
        print(INTRO.format(out=out, **config.to_dict()), flush=True)
        result = train(config, out_dir=out)
        if result.interrupted:
            print("resnetlab demo: interrupted", file=sys.stderr)
            return 130
        print(f"trained {result.step} steps in {result.seconds:.0f} s; validation error "
              f"{100 * (result.val_err or 0):.2f} %; weights: {result.weights}", flush=True)
        evaluation = run_eval(str(result.weights), config.data, split="test", progress=False)
    except ResnetlabError as exc:
        print(f"resnetlab demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"test top-1 accuracy {100 * evaluation['top1_acc']:.2f} % on {evaluation['n']} held-out digits "
          f"(the paper's CIFAR-10 ResNet-20: {100 - paper.CIFAR10_TABLE6[20][1]:.2f} %)", flush=True)
    print(json.dumps(evaluation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
