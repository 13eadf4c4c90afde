"""The reproduction campaign: its runs are section 4.2's recipe on all 50k images, its data is the
lossless CIFAR-10 checked by hash (and carried in pieces), finished runs become weights and a
report row, and shortened rehearsals never mix with the real runs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from resnetlab import runfolder
from resnetlab.errors import ConfigError, DataError
from resnetlab.reproduce import campaign
from resnetlab.reproduce.campaign import Campaign
from resnetlab.report import write_report

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar-10-batches-py"


#: stage 1's checks: ResNet-20 on 45k images (seed 0), and on 50k with seed 1
CHECKS = {"cifar_resnet20_45k": (45_000, 0), "cifar_resnet20_seed1": (None, 1)}


def test_every_run_is_section_4_2_on_all_50k_images():
    # He et al. 2015, section 4.2, written here independently of resnetlab.recipes
    for name in Campaign().names:
        cfg = Campaign().config(name)
        assert (cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (128, 0.1, 0.9, 1e-4)
        assert (cfg.iterations, tuple(cfg.milestones), cfg.gamma) == (64_000, (32_000, 48_000), 0.1)
        assert (cfg.augment, cfg.pad, cfg.flip, cfg.normalization) == ("cifar", 4, True, "per_pixel_mean")
        assert cfg.val == "test" and cfg.label_smoothing == 0 and cfg.ema_decay == 0  # the test error is watched
        # all 50,000 images with seed 0, but for the two checks of stage 1
        assert (cfg.train_subset, cfg.seed) == CHECKS.get(name, (None, 0))
        assert cfg.model == ("cifar_resnet20" if name in CHECKS else name)
        assert campaign.RUNS[name].is_check == (name in CHECKS)
        # "0.01 to warm up the training until the training error is below 80%" for ResNet-110 only
        assert cfg.warmup_until_train_error == (0.8 if name == "cifar_resnet110" else None)
    assert [list(s) for s in campaign.STAGES] == [
        ["cifar_resnet20", "cifar_plain20"], [*CHECKS, "cifar_resnet56", "cifar_plain56"],
        ["cifar_resnet32", "cifar_plain32", "cifar_resnet44", "cifar_plain44", "cifar_resnet110"]]


def test_a_cpu_trains_one_run_per_core_in_the_stage_order(tmp_path, monkeypatch):
    """Two cores, stage 2 (four runs): the two checks start first at one thread each; when one
    ends (it calls start again), the next run of the stage takes its core. A GPU starts them all."""
    started: list[tuple[str, str]] = []
    running: set[str] = set()

    def popen(command, env, **kwargs):
        started.append((command[command.index("train") + 1], env["OMP_NUM_THREADS"]))
        running.add(started[-1][0])

    monkeypatch.setattr(campaign, "ensure_data", lambda source=None: None)
    monkeypatch.setattr(campaign.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(campaign.subprocess, "Popen", popen)
    monkeypatch.setattr(Campaign, "running", lambda self, name: name in running)
    for name in campaign.STAGES[0]:
        _write_run(tmp_path, name, 64_000, 0.09, finished=True)
    runs = Campaign(tmp_path)
    assert runs.start("cpu") == ["cifar_resnet20_45k", "cifar_resnet20_seed1"]
    assert started == [("cifar_resnet20_45k", "1"), ("cifar_resnet20_seed1", "1")]
    assert runs.start("cpu") == []  # both cores busy: the 56-layer pair waits
    running.discard("cifar_resnet20_45k")
    _write_run(tmp_path, "cifar_resnet20_45k", 64_000, 0.09, finished=True)
    assert runs.start("cpu") == ["cifar_resnet56"] and started[-1] == ("cifar_resnet56", "1")
    running.clear()
    assert runs.start("cuda", all_stages=True) == [n for n in runs.names if not runs.finished(n)]


def test_a_check_keeps_its_weights_in_its_folder(tmp_path):
    """A check is not a Table 6 row: its weights never reach results/cifar10 under the model's name."""
    for name in ("cifar_resnet20", "cifar_resnet20_45k"):
        _write_run(tmp_path, name, 64_000, 0.09, finished=True)
        (tmp_path / name / runfolder.CHECKPOINT).write_bytes(b"state")
    weights = tmp_path / "weights"
    check = tmp_path / "cifar_resnet20_45k"
    assert Campaign(tmp_path).harvest("cifar_resnet20_45k", weights) == check / runfolder.FINAL
    assert not weights.exists() and not (check / runfolder.CHECKPOINT).exists()
    assert Campaign(tmp_path).harvest("cifar_resnet20", weights) == weights / "cifar_resnet20.safetensors"
    assert (weights / "cifar_resnet20.safetensors").read_bytes() == b"weights"


def test_a_rehearsal_is_shortened_and_kept_out_of_the_real_runs(tmp_path):
    with pytest.raises(ConfigError, match="rehearsal"):
        Campaign(campaign.ROOT, rehearsal=40)
    cfg = Campaign(tmp_path, rehearsal=40).config("cifar_resnet20")
    assert (cfg.iterations, tuple(cfg.milestones), cfg.eval_every) == (40, (20, 30), 40)


def _fake_data(root: Path, monkeypatch) -> dict[str, bytes]:
    contents = {"batches.meta": b"meta" * 10, "data_batch_1": bytes(range(256)) * 50, "test_batch": b"\x07" * 3000}
    folder = root / "source"
    folder.mkdir()
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    monkeypatch.chdir(root)
    monkeypatch.setattr(campaign, "SHA256", {n: hashlib.sha256(d).hexdigest() for n, d in contents.items()})
    monkeypatch.setattr(campaign, "SHARED_DATA", folder)
    return contents


def test_data_is_checked_by_hash_and_carried_losslessly_in_pieces(tmp_path, monkeypatch):
    contents = _fake_data(tmp_path, monkeypatch)
    assert campaign.ensure_data().is_symlink()
    assert [p.name for p in campaign.pack_data(tmp_path / "whole", 1 << 20)] == ["part-00"]
    # pieces smaller than one file: cut at the byte, rebuilt in order
    small = tmp_path / "small"
    limit_parts = campaign.pack_data(small, 5000)
    assert len(limit_parts) == 4 and all(p.stat().st_size <= 5000 for p in limit_parts)
    (tmp_path / campaign.DATA_DIR).unlink()
    moved = limit_parts[2].rename(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="part-02"):
        campaign.unpack_data(small)
    moved.rename(limit_parts[2])
    data_dir = campaign.unpack_data(small)
    assert not data_dir.is_symlink()
    assert {p.name: p.read_bytes() for p in data_dir.iterdir()} == contents
    # a corrupted file is refused, never trained on
    (data_dir / "test_batch").write_bytes(b"\x08" * 3000)
    with pytest.raises(DataError, match="not the lossless CIFAR-10"):
        campaign.ensure_data()


def _write_run(root: Path, model: str, steps: int, test_err: float, finished: bool, cpu: str = "AVX2") -> None:
    run = root / model
    run.mkdir(parents=True)
    cfg = dict(Campaign().config(model).to_dict(), data=campaign.DATA_SPEC)
    env = {"cpu_capability": cpu, "cpu": "Test CPU", "gpu": None, "threads": 1, "device": "cpu"}
    (run / runfolder.CONFIG).write_text(json.dumps(dict(cfg, config=cfg, environment=env,
                                                        provenance={"recipe": campaign.RECIPE})))
    lines = []
    for step in range(1000, steps + 1, 1000):
        lines.append({"step": step, "train_loss": 1.0, "train_err": 0.3, "img_s": 250.0, "time": step * 0.5})
        lines.append({"step": step, "val_err": test_err + (steps - step) / 1e6, "time": step * 0.5 + 1})
    (run / runfolder.METRICS).write_text("".join(json.dumps(r) + "\n" for r in lines))
    if finished:
        (run / runfolder.FINAL).write_bytes(b"weights")


def test_eta_leaves_pauses_out(tmp_path):
    """A run paused for an hour (SIGSTOP by a benchmark) inside its last 1,000 steps keeps the ETA
    of its speed, 0.4 s per step, instead of adding the hour to every remaining step."""
    run = tmp_path / "cifar_resnet20"
    _write_run(tmp_path, "cifar_resnet20", 0, 0.5, finished=False)
    seconds, lines = 0.0, []
    for step in range(100, 2001, 100):
        seconds += 40 + (3600 if step == 1700 else 0)
        lines.append({"step": step, "train_loss": 1.0, "train_err": 0.3, "img_s": 320.0, "time": seconds})
    (run / runfolder.METRICS).write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert Campaign(tmp_path).status("cifar_resnet20")["eta_s"] == round(0.4 * 62_000)


def test_status_report_row_and_figure_come_from_the_run_folders(tmp_path):
    results = tmp_path / "results"
    root = results / "campaign"
    _write_run(root, "cifar_resnet20", 64_000, 0.0861, finished=True)
    _write_run(root, "cifar_plain20", 20_000, 0.1500, finished=False)
    _write_run(root, "cifar_resnet20_seed1", 5_000, 0.2000, finished=False)
    with open(root / "cifar_plain20" / campaign.SEGMENTS, "w") as f:  # resumed on another CPU
        f.write(json.dumps({"from_step": 8000, "machine": {"cpu_capability": "AVX512", "cpu": "Other CPU"}}) + "\n")
    runs = Campaign(root)
    assert runs.current_stage() == 0
    s = runs.status("cifar_plain20")
    assert (s["step"], s["finished"], s["running"], s["test_err"], s["test_err_step"]) == (20_000, False, False,
                                                                                              0.15, 20_000)
    assert s["eta_s"] == round(0.5 * 44_000)  # 0.5 s per step over the last 1,000 steps
    assert s["machines"] == ["AVX2 Test CPU", "AVX512 Other CPU"]
    text = runs.format_status()
    assert "different arithmetic" in text and "finished" in text and "6h06m" in text

    report = write_report(tmp_path / "no-experiments", results).read_text()
    row20 = next(line for line in report.splitlines() if "[`cifar_resnet20`]" in line)
    assert "| 8.75 |" in row20 and "**8.61**" in row20 and "finished" in row20
    row_plain = next(line for line in report.splitlines() if "[`cifar_plain20`]" in line)
    assert "in progress: step 20,000 of 64,000" in row_plain and "not yet" in row_plain
    assert "**" not in row_plain  # an unfinished run is never shown as a result
    # the check is no Table 6 row: it sits in its own table, beside the run it checks
    assert "0.14 points below the paper's 8.75 %" in report
    check = next(line for line in report.splitlines() if "[`cifar_resnet20_seed1`]" in line)
    assert "seed 1" in check and "in progress: step 5,000 of 64,000" in check and "**" not in check
    reference = [line for line in report.splitlines() if "[`cifar_resnet20`]" in line][1]
    assert "| **8.61** | 9.36, 8.61-10.11 |" in reference  # 64k; the last 16 evaluations (49k..64k): +0.1 % each
    assert (root / "checks.png").stat().st_size > 0 and "(campaign/checks.png)" in report
    assert "after the first lr drop" not in report  # the check has not reached 32k
    # once every run is past the first lr drop (32k), a column compares them at the same steps (33k..40k)
    shutil.rmtree(root / "cifar_resnet20_seed1")
    _write_run(root, "cifar_resnet20_seed1", 40_000, 0.2000, finished=False)
    report = write_report(tmp_path / "no-experiments", results).read_text()
    assert "evaluations after the first lr drop (32k) up to 40k, the step every run has reached |" in report
    reference = [line for line in report.splitlines() if "[`cifar_resnet20`]" in line][1]
    check = next(line for line in report.splitlines() if "[`cifar_resnet20_seed1`]" in line)
    assert reference.endswith("| **8.61** | 9.36, 8.61-10.11 | 11.36 |") and check.endswith("| - | - | 20.35 |")
    # past the second drop (48k), the column compares the runs at the lowest lr (49k..56k)
    shutil.rmtree(root / "cifar_resnet20_seed1")
    _write_run(root, "cifar_resnet20_seed1", 56_000, 0.2000, finished=False)
    report = write_report(tmp_path / "no-experiments", results).read_text()
    assert "evaluations after the second lr drop (48k) up to 56k, the step every run has reached |" in report
    reference = [line for line in report.splitlines() if "[`cifar_resnet20`]" in line][1]
    assert reference.endswith("| **8.61** | 9.36, 8.61-10.11 | 9.76 |")
    assert (root / "fig6.png").stat().st_size > 0


def test_a_finished_run_becomes_weights_and_leaves_no_checkpoint(tmp_path, monkeypatch):
    """End to end on the built-in digits (the lossless CIFAR-10 is too slow for this suite):
    train, harvest, status; then the same run started again trains nothing."""
    monkeypatch.setattr(campaign, "DATA_SPEC", "digits")
    monkeypatch.setattr(campaign, "ensure_data", lambda source=None: None)
    started = []
    monkeypatch.setattr(Campaign, "start", lambda self, device="auto", all_stages=False: started.append(device))
    runs = Campaign(tmp_path / "root", rehearsal=6)
    assert runs.train("cifar_resnet20", device="cpu", then_start=True)
    run = tmp_path / "root" / "cifar_resnet20"
    assert (run / runfolder.FINAL).is_file() and not (run / runfolder.CHECKPOINT).exists()
    assert (tmp_path / "root" / "weights" / "cifar_resnet20.safetensors").read_bytes() == \
        (run / runfolder.FINAL).read_bytes()
    assert started == ["cpu"]  # the next runs are started when one ends
    status = runs.status("cifar_resnet20")
    assert status["finished"] and status["step"] == 6 and status["test_err"] is not None
    before = (run / runfolder.METRICS).read_bytes()
    assert runs.train("cifar_resnet20", device="cpu")
    assert (run / runfolder.METRICS).read_bytes() == before


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="the lossless CIFAR-10 (../shared/data/cifar10) is absent")
def test_the_shared_data_is_the_lossless_cifar10(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(campaign, "SHARED_DATA", SHARED_CIFAR)
    assert sorted(p.name for p in campaign.ensure_data().iterdir()) == sorted(campaign.SHA256)


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="the lossless CIFAR-10 (../shared/data/cifar10) is absent")
@pytest.mark.parametrize("model", campaign.STAGES[0])
def test_committed_weights_give_the_reported_test_error(model):
    """A finished run's committed weights, loaded from their file alone (model, per-pixel mean,
    classes), give on the 10,000 test images the test error its run recorded at the 64k-th
    iteration, the number REPORT's Table 6 row shows. Up to 3 images may differ: another CPU's
    vector arithmetic, or another batch size, can move a borderline image."""
    from resnetlab.data import open_dataset
    from resnetlab.evaluate import evaluate
    from resnetlab.weights import load_weights

    repo = Path(__file__).resolve().parents[1]
    weights = repo / campaign.WEIGHTS_DIR / f"{model}.safetensors"
    if not weights.is_file():
        pytest.skip(f"{model}'s run has not finished: no {weights}")
    recorded = [r for r in runfolder.read_metrics(repo / campaign.ROOT / model) if r.get("val_err") is not None]
    assert recorded[-1]["step"] == 64_000 and recorded[-1]["val_n"] == 10_000
    net, meta = load_weights(weights)
    assert meta.model == model and len(meta.classes) == 10 and len(meta.mean[0]) == 32  # 3 x 32 x 32
    result = evaluate(net, open_dataset(f"cifar10={SHARED_CIFAR}", "test"), protocol="full", mean=meta.mean,
                      std=meta.std, batch_size=500, progress=False)
    assert result["n"] == 10_000
    assert abs(result["correct"] - round((1 - recorded[-1]["val_err"]) * 10_000)) <= 3
