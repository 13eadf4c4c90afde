"""The campaign's own setting: two training runs side by side, one thread each, on a 2-core CPU.

Times the training step of resnetlab's engine (``resnetlab.train``: channels_last, foreach SGD,
freed memory kept for reuse), and the same step with the default allocator (the engine before it
kept freed memory), against the eager loop people write (NCHW, fp32, for-loop SGD, the default
allocator), each in two processes at once, in alternating rounds: every process settles its
allocator once, so each round starts fresh processes. Both train on a fixed random batch of 128 (the data pipeline is about 1 % of a real
step). Reports images/s of the machine (both processes together) and CPU seconds per step, median
and spread over the rounds, and the ratio ours / baseline of each pair of rounds.

    python benchmarks/campaign_step.py --model cifar_resnet20 --rounds 5 --seconds 20 [--pause-campaign]

``--pause-campaign`` stops the campaign's runs (SIGSTOP) while it measures and resumes them
(SIGCONT) after, so that the two processes measured are the only ones of the campaign running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Iterator

WORKER = """
import json, resource, sys, time
import torch
import torch.nn.functional as F
torch.set_num_threads(1)
variant, model, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
torch.manual_seed(0)
x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
if variant in ("ours", "ours_default_allocator"):
    from resnetlab.device import keep_freed_memory
    from resnetlab.recipes import get_recipe
    from resnetlab.config import apply_overrides
    from resnetlab.train.schedule import Schedule
    from resnetlab.train.state import build, make_train_step
    if variant == "ours":
        keep_freed_memory()  # as resnetlab.train does on a CPU
    cfg = apply_overrides(get_recipe("paper_cifar_50k"), {"model": model})
    state = build(cfg, 10, torch.device("cpu"), Schedule(cfg.lr, "constant", total=1))
    state.model.train()
    train_step = make_train_step(state, cfg)
    x = x.contiguous(memory_format=torch.channels_last)
    def step():
        train_step(x, y)
else:
    from resnetlab.registry import create_model
    net = create_model(model).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=False)
    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
for _ in range(3):
    step()
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()  # both processes start timing together
r0, t0, n = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
while time.perf_counter() - t0 < seconds:
    step()
    n += 1
dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps({"img_s": 128 * n / dt, "cpu_s_per_step": cpu / n, "sys_s_per_step": (r1.ru_stime - r0.ru_stime) / n,
                  "faults_per_step": (r1.ru_minflt - r0.ru_minflt) / n, "steps": n}))
"""


def campaign_pids() -> list[int]:
    """Processes of the campaign's runs (their command line names resnetlab's campaign trainer)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "resnetlab.reproduce.campaign train" in cmd:
                pids.append(int(entry))
    return pids


def one_round(variant: str, model: str, seconds: float) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, variant, model, str(seconds)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    return [json.loads(p.communicate()[0]) for p in procs]


@contextlib.contextmanager
def campaign_paused(pause: bool) -> Iterator[bool]:
    """With ``pause``, the campaign's runs stopped (SIGSTOP) for the block and resumed (SIGCONT) after;
    yields whether any were paused."""
    paused = campaign_pids() if pause else []
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield bool(paused)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}..{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cifar_resnet20")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pause-campaign", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    rounds: dict[str, list[list[dict]]] = {"baseline": [], "ours_default_allocator": [], "ours": []}
    with campaign_paused(args.pause_campaign) as paused:
        for _ in range(args.rounds):
            for variant in rounds:
                rounds[variant].append(one_round(variant, args.model, args.seconds))
    machine = {v: [sum(p["img_s"] for p in r) for r in rs] for v, rs in rounds.items()}
    cpu = {v: [statistics.fmean(p["cpu_s_per_step"] for p in r) for r in rs] for v, rs in rounds.items()}
    ratio = {v: [o / b for o, b in zip(machine[v], machine["baseline"])] for v in rounds if v != "baseline"}
    cpu_ratio = {v: [b / o for o, b in zip(cpu[v], cpu["baseline"])] for v in rounds if v != "baseline"}
    load = os.getloadavg()[0]
    print(f"{args.model}, batch 128, two processes side by side at 1 thread each, {args.rounds} rounds of "
          f"{args.seconds:.0f} s, load average {load:.1f} at the end, campaign paused: {bool(paused)}")
    for v in rounds:
        faults = statistics.median(p["faults_per_step"] for r in rounds[v] for p in r)
        print(f"  {v:<22} machine img/s {spread(machine[v])}   CPU s/step {spread(cpu[v])}   faults/step {faults:.0f}")
    for v in ratio:
        print(f"  {v} / baseline: images/s {spread(ratio[v])}x   CPU time per step {spread(cpu_ratio[v])}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "rounds": rounds, "machine_img_s": machine, "cpu_s_per_step": cpu,
                       "ratio_img_s": ratio, "ratio_cpu": cpu_ratio, "load_avg": load,
                       "campaign_paused": bool(paused), "cpu": _cpu()}, f, indent=1)


def _cpu() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")


if __name__ == "__main__":
    main()
