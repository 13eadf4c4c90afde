"""Evaluation on a CPU with freed memory kept for reuse, against glibc's default allocator.

``resnetlab.evaluate`` (``resnetlab eval``) asks malloc to keep freed memory on a CPU
(``resnetlab.device.keep_freed_memory``), as training does: with the defaults every activation
of a batch above the mmap threshold is a fresh ``mmap`` that the kernel zeroes page by page.
This times ``evaluate()`` itself (the ``full`` protocol, batch 256, one thread) on random
CIFAR-size images, in fresh processes of alternating rounds: ``default`` (the call that would
keep memory replaced by a no-op) and ``kept``. Reports images/s and CPU seconds per image,
median and spread over the rounds, and the ratio kept / default of each pair of rounds.

    python benchmarks/eval_memory.py --model cifar_resnet20 --rounds 5 --images 2560 [--pause-campaign]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from campaign_step import campaign_paused, spread

WORKER = """
import json, resource, sys, time
import torch
import resnetlab.evaluate as ev
from resnetlab import create_model
torch.set_num_threads(1)
variant, model, images = sys.argv[1], sys.argv[2], int(sys.argv[3])
if variant == "default":
    ev.keep_freed_memory = lambda: False
torch.manual_seed(0)
net = create_model(model).eval()
data = [(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), i % 10) for i in range(images)]
kw = dict(protocol="full", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), batch_size=256, progress=False,
          num_workers=0)
ev.evaluate(net, data[:512], **kw)  # warm-up: the heap grows to a batch's peak once
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
ev.evaluate(net, data, **kw)
dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps({"img_s": images / dt, "cpu_s_per_img": cpu / images,
                  "faults_per_img": (r1.ru_minflt - r0.ru_minflt) / images}))
"""


def one_round(variant: str, model: str, images: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", WORKER, variant, model, str(images)], capture_output=True, text=True,
                         env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cifar_resnet20")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=2560)
    parser.add_argument("--pause-campaign", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    rounds: dict[str, list[dict]] = {"default": [], "kept": []}
    with campaign_paused(args.pause_campaign) as paused:
        for _ in range(args.rounds):
            for variant in rounds:
                rounds[variant].append(one_round(variant, args.model, args.images))
    ratio = [k["img_s"] / d["img_s"] for k, d in zip(rounds["kept"], rounds["default"])]
    cpu_ratio = [d["cpu_s_per_img"] / k["cpu_s_per_img"] for k, d in zip(rounds["kept"], rounds["default"])]
    load = os.getloadavg()[0]
    print(f"{args.model}, evaluate(protocol='full', batch_size=256), {args.images} images, 1 thread, "
          f"{args.rounds} rounds, load average {load:.1f} at the end, campaign paused: {bool(paused)}")
    for v, rs in rounds.items():
        faults = statistics.median(r["faults_per_img"] for r in rs)
        print(f"  {v:<8} img/s {spread([r['img_s'] for r in rs])}   "
              f"CPU ms/img {spread([1000 * r['cpu_s_per_img'] for r in rs])}   faults/img {faults:.0f}")
    print(f"  kept / default: images/s {spread(ratio)}x   CPU time per image {spread(cpu_ratio)}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "images": args.images, "rounds": rounds, "ratio_img_s": ratio,
                       "ratio_cpu": cpu_ratio, "load_avg": load, "campaign_paused": bool(paused)}, f, indent=1)


if __name__ == "__main__":
    main()
