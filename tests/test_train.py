"""The training engine: exact resume (in process and after SIGKILL), SIGTERM, NaN, run-folder
refusals, schedules, batched augmentation, DDP on 2 CPU processes, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imagefolders import write_image_folder
from resnetlab import registry
from resnetlab.cli import main
from resnetlab.data.transforms import crop_flip
from resnetlab.errors import ConfigError, DataError, TrainingError

from resnetlab.models.cifar_resnet import cifar_resnet
from resnetlab.recipes import TrainConfig, get_recipe
from resnetlab.train import Schedule, train
from resnetlab.train.distributed import Processes
from resnetlab.train.loop import Meter

TINY = "_test_cifar_resnet8"
REGISTER = f"""
from resnetlab.registry import register_model
from resnetlab.models.cifar_resnet import cifar_resnet
register_model({TINY!r}, family="test", paper="test", input_size=(3, 32, 32), num_classes=10, depth=8)(cifar_resnet)
"""


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    """A ResNet-8 (6n+2, n=1) registered for these tests only; one intra-op thread (tiny
    batches gain nothing from two, and on busy cores OpenMP threads spin-wait on each other)."""
    registry.register_model(TINY, family="test", paper="test", input_size=(3, 32, 32), num_classes=10, depth=8)(
        cifar_resnet)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TINY
    torch.set_num_threads(threads)
    registry._REGISTRY.pop(TINY)


def tiny_config(**changes) -> TrainConfig:
    base = dataclasses.replace(get_recipe("demo"), model=TINY, batch_size=16, iterations=8, milestones=(6,),
                               train_subset=64, log_every=2, eval_every=4, checkpoint_every=2)
    return dataclasses.replace(base, **changes)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final.safetensors")


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> Path:
    """An uninterrupted 8-step run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    result = train(tiny_config(), out_dir=out, progress=False)
    assert result.step == 8 and not result.interrupted and result.weights == out / "final.safetensors"
    return out


def test_run_folder_contents(reference: Path) -> None:
    config = json.loads((reference / "config.json").read_text())
    assert config["model"] == TINY and config["seed"] == 0 and config["device"] == "cpu"
    assert {"torch", "git_commit", "world_size"} <= set(config["environment"])
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_err" in r] == [2, 4, 6, 8]
    assert [r["step"] for r in records if "val_err" in r] == [4, 8]
    assert all(k in records[0] for k in ("train_loss", "train_err", "lr", "img_s", "time"))
    assert (reference / "curves.png").stat().st_size > 1000
    from resnetlab.weights import read_meta

    meta = read_meta(reference / "final.safetensors")
    assert meta.model == TINY and torch.tensor(meta.mean).shape == (3, 16, 16)  # per-pixel mean (section 4.2)


def test_sigterm_then_resume_is_bit_identical(reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    lr = Schedule.lr

    def lr_and_signal(self, step):
        calls.append(step)
        if step == 5 and len(calls) == 6:  # SIGTERM arrives during step 5 (0-based) of the first run
            os.kill(os.getpid(), signal.SIGTERM)
        return lr(self, step)

    monkeypatch.setattr(Schedule, "lr", lr_and_signal)
    out = tmp_path / "run"
    stopped = train(tiny_config(), out_dir=out, progress=False)
    assert stopped.interrupted and stopped.step == 6 and not (out / "final.safetensors").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 6
    resumed = train(tiny_config(), out_dir=out, resume=True, progress=False)
    assert resumed.step == 8 and not resumed.interrupted
    assert_identical(weights(out), weights(reference))
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (reference / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_is_bit_identical(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    script = REGISTER + textwrap.dedent(f"""
        import dataclasses, time, torch
        torch.set_num_threads({torch.get_num_threads()})  # same float reduction order as the reference
        from resnetlab import train as t
        from resnetlab.recipes import get_recipe
        slow = t.Schedule.lr
        def lr(*a):  # slow the run down so that the kill lands mid-run
            time.sleep(0.5)
            return slow(*a)
        t.Schedule.lr = lr
        cfg = dataclasses.replace(get_recipe("demo"), model={TINY!r}, batch_size=16, iterations=8, milestones=(6,),
                                  train_subset=64, log_every=2, eval_every=4, checkpoint_every=2)
        t.train(cfg, out_dir={str(out)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        ckpt = out / "checkpoint.pt"
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] >= 4:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert 4 <= killed_at < 8 and not (out / "final.safetensors").exists()
    train(tiny_config(), out_dir=out, resume=True, progress=False)
    assert_identical(weights(out), weights(reference))


def test_refusals_touch_nothing(reference: Path, tmp_path: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in reference.iterdir()}
    with pytest.raises(ConfigError, match="not empty.*--resume"):
        train(tiny_config(), out_dir=reference, progress=False)
    with pytest.raises(ConfigError, match=r"different config \(lr: 0.1 -> 0.2\)"):
        train(tiny_config(lr=0.2), out_dir=reference, resume=True, progress=False)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(tiny_config(), out_dir=tmp_path / "fresh", resume=True, progress=False)
    assert before == {p.name: p.stat().st_mtime_ns for p in reference.iterdir()}
    assert not (tmp_path / "fresh").exists()


def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"at step \d.*last good checkpoint \(step \d\)"):
        train(tiny_config(lr=1e30, checkpoint_every=1, log_every=1, eval_every=0), out_dir=out, progress=False)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] >= 1
    assert not (out / "final.safetensors").exists()


def test_schedules() -> None:
    paper = Schedule(0.1, "multistep", 64_000, (32_000, 48_000))
    lrs = [paper.lr(s) for s in (0, 31_999, 32_000, 48_000, 63_999)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.001])
    # ResNet-110 (section 4.2): 0.01 until the training error is below 80 %, then the schedule
    warm = Schedule(0.1, "multistep", 64_000, (32_000,), warmup_until_train_error=0.8)
    assert warm.lr(10) == 0.01
    for step in range(10):  # a window of 10 steps at 70 % training error ends the warm-up
        warm.record(step, torch.tensor(3), 10)
    assert warm.warm and warm.lr(10) == 0.1
    cosine = Schedule(0.1, "cosine", 100, warmup_iterations=10)  # linear warm-up from lr/10
    assert cosine.lr(0) == pytest.approx(0.01)
    assert cosine.lr(5) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 5 / 100)) * (0.1 + 0.9 * 5 / 10))
    assert cosine.lr(10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 10 / 100)))
    assert cosine.lr(50) == pytest.approx(0.05)
    plateau = Schedule(0.1, "plateau", 100, plateau_patience=2)
    for err in (0.5, 0.4, 0.45, 0.41):
        plateau.observe(err)
    assert plateau.plateau_factor == pytest.approx(0.1) and plateau.lr(99) == pytest.approx(0.01)


def test_warmup_window_survives_a_checkpoint() -> None:
    """A checkpoint inside a warm-up window keeps the window's counts: the decision at the end of
    the window is the uninterrupted one (steps 0-5 all wrong and 6-9 all right: 60 % error over
    the window, not the 0 % of its last four steps)."""
    def schedule() -> Schedule:
        return Schedule(0.1, "multistep", 100, warmup_until_train_error=0.5)

    def feed(s: Schedule, steps: range) -> None:
        for step in steps:
            s.record(step, torch.tensor(0 if step < 6 else 10), 10)

    whole = schedule()
    feed(whole, range(10))
    first = schedule()
    feed(first, range(6))
    resumed = schedule()
    resumed.load_state_dict(first.state_dict())
    feed(resumed, range(6, 10))
    assert not whole.warm and not resumed.warm and resumed.window == whole.window == [0.0, 0.0]


def test_pending_steps_keep_their_time_across_a_checkpoint() -> None:
    """The steps logged after a resume but trained before the stop count at the speed they were
    trained at: 10 steps of 128 images that took 4 s are 320 img/s, not 1,280 images over the
    few microseconds since the resume."""
    trained = Meter()
    for _ in range(10):
        trained.add(torch.tensor(1.0), torch.tensor(64), 128)
    trained.since -= 4.0
    resumed = Meter()
    resumed.load_state_dict(trained.state_dict(), torch.device("cpu"), trained.seconds())
    assert resumed.take(Processes())["img_s"] == pytest.approx(320, rel=0.01)


def test_batched_crop_flip_matches_per_image() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=gen)
    oy, ox = torch.tensor([0, 8, 4, 1, 2]), torch.tensor([8, 0, 4, 3, 7])
    flip = torch.tensor([True, False, True, False, True])
    out = crop_flip(x, 4, oy, ox, flip)
    for i in range(5):
        padded = torch.nn.functional.pad(x[i], (4, 4, 4, 4))
        ref = padded[:, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        if flip[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref), i


def test_ddp_two_cpu_processes_match_one(tmp_path: Path) -> None:
    """torchrun, 2 processes on gloo, batch 16 split 8+8 == one process accumulating 2 x 8."""
    script = tmp_path / "ddp.py"
    script.write_text(REGISTER + textwrap.dedent(f"""
        import dataclasses, os, sys, torch
        from resnetlab import train as t
        from resnetlab.recipes import get_recipe
        nets = []
        make = t.loop.make_train_step
        t.loop.make_train_step = lambda state, *a, **k: nets.append(state.net) or make(state, *a, **k)
        cfg = dataclasses.replace(get_recipe("demo"), model={TINY!r}, batch_size=16, iterations=4, milestones=(3,),
                                  train_subset=64, log_every=2, eval_every=0, checkpoint_every=2,
                                  accumulate=int(sys.argv[2]))
        t.train(cfg, out_dir=sys.argv[1], progress=False)
        assert not torch.distributed.is_initialized(), "train() left its process group behind"
        net = getattr(nets[0], "module", nets[0])
        torch.save(net.state_dict(), os.path.join(sys.argv[1], f"rank{{os.environ.get('RANK', '0')}}.pt"))
        """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path / "ddp"), "1"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "2"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    # BN running statistics are per rank (DDP re-broadcasts rank 0's before each forward, and
    # accumulation updates them once per micro-batch): every other tensor must agree.
    def learned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state.items() if "running" not in k and "num_batches" not in k}

    rank0, rank1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert_identical(learned(rank0), learned(rank1))
    a, b = learned(weights(tmp_path / "ddp")), learned(weights(tmp_path / "one"))
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_cli_train_smoke_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["train", "demo", f"model={TINY}", "iterations=2", "milestones=[1]", "batch_size=16", "train_subset=32",
            "log_every=1", "eval_every=0", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "run folder" in out and (tmp_path / "run" / "final.safetensors").is_file()
    assert main(argv) == 2  # not empty, no --resume
    assert "not empty" in capsys.readouterr().err
    assert main(["train", "demo", "lr=0", "--out", str(tmp_path / "x")]) == 2
    assert "lr must be > 0" in capsys.readouterr().err
    assert main(["train", "paper_cifar", "--data", f"cifar10={tmp_path / 'none'}", "--out", str(tmp_path / "y")]) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_image_folder_training_and_bad_images(tmp_path: Path) -> None:
    """The lazy path (ImageNet-style folders, per-image augmentation in the loader) and a
    corrupt file: named when it stops the run, counted when skip_bad_images=true."""
    for split, n in (("train", 12), ("val", 2)):
        write_image_folder(tmp_path / "data" / split, ["n01", "n02"], per_class=n, size=(40, 48), fmt="jpg")
    spec = f"imagenet={tmp_path / 'data'}"
    cfg = tiny_config(data=spec, augment="imagenet", crop=32, pad=0, normalization="per_channel", train_subset=None,
                      batch_size=8, iterations=3, milestones=(2,), num_workers=0, log_every=1, eval_every=0)
    result = train(cfg, out_dir=tmp_path / "run", progress=False)
    assert result.step == 3 and result.val_err is not None and result.skipped_images == 0
    bad = tmp_path / "data" / "train" / "n02" / "0003.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="0003.jpg"):
        train(cfg, out_dir=tmp_path / "run2", progress=False)
    skipped = train(dataclasses.replace(cfg, skip_bad_images=True, iterations=6), out_dir=tmp_path / "run3",
                    progress=False)
    assert skipped.skipped_images >= 1 and skipped.step == 6


def test_failed_checkpoint_write_keeps_the_previous_one(reference: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that dies halfway (disk full, kill) leaves the last complete checkpoint in place."""
    from resnetlab import runfolder

    target = tmp_path / "checkpoint.pt"
    target.write_bytes((reference / "checkpoint.pt").read_bytes())
    before = target.read_bytes()

    def half_write(state, path):
        Path(path).write_bytes(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OSError, match="No space"):
        runfolder.save_checkpoint(target, {"step": 99})
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert runfolder.load_checkpoint(target)["step"] == 8


def awkward_config(**changes) -> TrainConfig:
    """A run whose schedule changes state mid-run: the ResNet-110 warm-up ends at a window check,
    plateau waits and drops happen, and checkpoints/log lines fall on no common multiple."""
    return tiny_config(iterations=30, warmup_until_train_error=0.85, schedule="plateau", milestones=(),
                       plateau_patience=1, eval_every=3, log_every=4, checkpoint_every=7, **changes)


def metric_lines(run: Path) -> list[dict]:
    """metrics.jsonl without the timing fields (they are the only ones allowed to differ)."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("time", "img_s")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def awkward_reference(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> Path:
    out = tmp_path_factory.mktemp("awkward") / "run"
    train(awkward_config(), out_dir=out, progress=False)
    lrs = [r["lr"] for r in metric_lines(out) if "lr" in r]
    assert lrs[0] == 0.01 and 0.01 not in lrs[-2:]  # the warm-up ended during the run ...
    assert len({lr for lr in lrs if lr != 0.01}) >= 2  # ... and the plateau rule dropped the lr after it
    return out


@pytest.mark.parametrize("stop_at", [5, 13, 22])  # inside the warm-up window, mid-window after it, mid-plateau
def test_resume_at_awkward_steps_is_bit_identical(awkward_reference: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, stop_at: int) -> None:
    lr, fired = Schedule.lr, []

    def lr_and_signal(self, step):
        if step == stop_at and not fired:
            fired.append(step)
            os.kill(os.getpid(), signal.SIGTERM)  # arrives during the step: the run stops after it
        return lr(self, step)

    monkeypatch.setattr(Schedule, "lr", lr_and_signal)
    out = tmp_path / "run"
    stopped = train(awkward_config(), out_dir=out, progress=False)
    assert stopped.interrupted and stopped.step == stop_at + 1
    resumed = train(awkward_config(), out_dir=out, resume=True, progress=False)
    assert resumed.step == 30 and not resumed.interrupted
    assert_identical(weights(out), weights(awkward_reference))
    assert metric_lines(out) == metric_lines(awkward_reference)


def test_ddp_ranks_share_validation_and_schedule_decisions(tmp_path: Path) -> None:
    """2 processes on gloo: each evaluates its half of the validation set, the reduced error is
    the whole set's, and the plateau rule's decisions are rank 0's on every rank, even when
    rank 1 is fed other validation errors (it would never drop the lr on its own)."""
    script = tmp_path / "ddp_plateau.py"
    script.write_text(REGISTER + textwrap.dedent(f"""
        import dataclasses, json, os, sys, torch
        from resnetlab import train as t
        from resnetlab.recipes import get_recipe
        rank, out = int(os.environ["RANK"]), sys.argv[1]
        seen, lrs = [], []
        evaluate = t.loop.evaluate
        t.loop.evaluate = lambda model, data, **k: seen.append(len(data)) or evaluate(model, data, **k)
        observe, fed = t.Schedule.observe, []
        def skewed(self, err):  # rank 0 sees no improvement (drops), rank 1 always improves (never would)
            fed.append(err)
            return observe(self, 0.5 if rank == 0 else 1.0 / (len(fed) + 1))
        t.Schedule.observe = skewed
        set_lr = t.TrainState.set_lr
        t.TrainState.set_lr = lambda self: lrs.append(set_lr(self)) or lrs[-1]
        cfg = dataclasses.replace(get_recipe("demo"), model={TINY!r}, batch_size=16, iterations=8, milestones=(),
                                  schedule="plateau", plateau_patience=1, train_subset=64, log_every=2, eval_every=2,
                                  checkpoint_every=0)
        result = t.train(cfg, out_dir=out, progress=False)
        with open(os.path.join(out, f"rank{{rank}}.json"), "w") as f:
            json.dump({{"lrs": lrs, "seen": seen, "fed": fed, "val_err": result.val_err}}, f)
        """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rank0, rank1 = (json.loads((tmp_path / "run" / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["lrs"] == rank1["lrs"] and len(rank0["lrs"]) == 8
    assert rank0["lrs"][0] == 0.1 and rank0["lrs"][-1] < 0.1 * 0.1 + 1e-12  # dropped twice or more
    from resnetlab.data import open_train_val
    from resnetlab.weights import load_weights

    val = open_train_val("digits")[1]
    assert sorted([rank0["seen"][0], rank1["seen"][0]]) == [len(val) // 2, len(val) - len(val) // 2]
    assert rank0["fed"] == rank1["fed"]  # both ranks computed the same reduced error ...
    from resnetlab.evaluate import evaluate

    model, meta = load_weights(tmp_path / "run" / "final.safetensors")
    whole = evaluate(model, val, protocol="full", mean=meta.mean, std=meta.std, progress=False)
    assert rank0["val_err"] == pytest.approx(whole["top1_err"], abs=1e-12)  # ... the whole set's, rank 0's weights


def test_tensorboard_events_beside_metrics(reference: Path) -> None:
    """Every run writes TensorBoard events (the tensorboard extra is in dev): the same numbers as
    metrics.jsonl, read back with TensorBoard's own event reader, and the curves image."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(reference / "tensorboard"))
    events.Reload()
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "train_loss" in r]
    assert [e.step for e in events.Scalars("train/loss")] == [r["step"] for r in logged]
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([r["lr"] for r in logged])
    assert [e.value for e in events.Scalars("val/err")] == pytest.approx([r["val_err"] for r in records if "val_err" in r])
    assert {"train/err", "train/img_s"} <= set(events.Tags()["scalars"]) and events.Tags()["images"] == ["curves"]


def test_resume_after_a_crash_hides_the_events_logged_after_the_checkpoint(reference: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash (no checkpoint on the way out) after the step-6 log line, with the checkpoint at
    step 4: the resumed run logs step 6 again, and TensorBoard shows each step once, as
    metrics.jsonl does."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    lr = Schedule.lr

    def crash_at_step_7(self, step):
        if step == 7:
            raise RuntimeError("power cut")
        return lr(self, step)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(Schedule, "lr", crash_at_step_7)
        with pytest.raises(RuntimeError, match="power cut"):
            train(tiny_config(checkpoint_every=4), out_dir=out, progress=False)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 4
    train(tiny_config(checkpoint_every=4), out_dir=out, resume=True, progress=False)
    events = accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8]
    assert [e.step for e in events.Scalars("val/err")] == [4, 8]
    assert [r["step"] for r in metric_lines(out)] == [r["step"] for r in metric_lines(reference)]


def test_resume_of_a_finished_run_trains_and_rewrites_nothing(reference: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = train(tiny_config(), out_dir=out, resume=True, progress=False)
    assert "already finished (step 8 of 8)" in capsys.readouterr().err
    assert result.step == 8 and not result.interrupted and result.weights == out / "final.safetensors"
    assert result.val_err == [r["val_err"] for r in metric_lines(reference) if "val_err" in r][-1]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
