"""Distributed faults: a rank that dies under ``torchrun --max-restarts`` restarts the job from
the last checkpoint, and the job ends with the weights of an uninterrupted run (2 CPU
processes on gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is needed for torchrun on CPU")

STEPS, CHECKPOINT_EVERY, DIES_AT = 8, 2, 5  # rank 1 dies before step index 5: the checkpoint holds step 4

# argv: out_dir, die (1: rank 1 exits before step DIES_AT in the first attempt)
WORKER = textwrap.dedent(f"""
    import dataclasses, os, sys, torch
    from resnetlab.registry import register_model
    from resnetlab.models.cifar_resnet import cifar_resnet
    from resnetlab import runfolder, train as t
    from resnetlab.recipes import get_recipe
    register_model("_test_cifar_resnet8", family="test", paper="test", input_size=(3, 32, 32), num_classes=10,
                   depth=8)(cifar_resnet)
    out, rank, attempt = sys.argv[1], os.environ["RANK"], os.environ["TORCHELASTIC_RESTART_COUNT"]
    if sys.argv[2] == "1" and attempt == "0" and rank == "1":
        lr = t.Schedule.lr
        def dying(self, step):
            if step == {DIES_AT}:
                os._exit(1)  # the rank dies: no checkpoint, no clean-up
            return lr(self, step)
        t.Schedule.lr = dying
    load = runfolder.load_checkpoint
    def resumed(path):
        state = load(path)
        with open(os.path.join(out, f"resumed{{rank}}.txt"), "w") as f:
            f.write(f"{{attempt}} {{state['step']}}")
        return state
    runfolder.load_checkpoint = resumed
    nets = []
    make = t.loop.make_train_step
    t.loop.make_train_step = lambda state, *a, **k: nets.append(state.net) or make(state, *a, **k)
    cfg = dataclasses.replace(get_recipe("demo"), model="_test_cifar_resnet8", batch_size=16, iterations={STEPS},
                              milestones=(6,), train_subset=64, log_every=2, eval_every=0,
                              checkpoint_every={CHECKPOINT_EVERY})
    t.train(cfg, out_dir=out, progress=False)
    torch.save(nets[0].module.state_dict(), os.path.join(out, f"rank{{rank}}.pt"))
    """)


def torchrun(script: Path, out: Path, die: bool) -> Path:
    """``torchrun --standalone --nproc-per-node 2 --max-restarts 1`` of the worker script."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "--max-restarts", "1", str(script), str(out), str(int(die))],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_rank_killed_under_torchrun_restarts_from_checkpoint_bit_identically(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    killed = torchrun(script, tmp_path / "killed", die=True)
    clean = torchrun(script, tmp_path / "clean", die=False)

    # both ranks of the second attempt continued the step-4 checkpoint; the clean run never restarted
    for rank in (0, 1):
        assert (killed / f"resumed{rank}.txt").read_text() == f"1 {DIES_AT - DIES_AT % CHECKPOINT_EVERY}"
    assert not list(clean.glob("resumed*.txt"))
    def logged(run: Path) -> list[tuple[int, str]]:
        return [(r["step"], "val_err" in r) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    assert logged(killed) == logged(clean)  # one line per logged step: nothing doubled by the restart

    # bit-identical to the uninterrupted run, rank by rank (BN running statistics included)
    for rank in (0, 1):
        a = torch.load(killed / f"rank{rank}.pt", weights_only=True)
        b = torch.load(clean / f"rank{rank}.pt", weights_only=True)
        assert a.keys() == b.keys() and len(a) > 10
        for key in a:
            assert torch.equal(a[key], b[key]), (rank, key)
    # the ranks agree on every learned tensor (BN running statistics are per rank)
    rank0, rank1 = (torch.load(killed / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in rank0:
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(rank0[key], rank1[key]), key
    final, reference = load_file(killed / "final.safetensors"), load_file(clean / "final.safetensors")
    assert final.keys() == reference.keys()
    for key in final:
        assert torch.equal(final[key], reference[key]), key
