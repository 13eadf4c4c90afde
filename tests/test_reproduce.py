"""``resnetlab reproduce`` and ``resnetlab report``: experiments as data, shortened runs labelled."""

from __future__ import annotations

import json

import pytest

from resnetlab import ConfigError
from resnetlab.cli import main
from resnetlab.errors import DataError
from resnetlab.reproduce import EXPERIMENTS, CifarSettings, mean_std, run_experiment, run_summary, settings_note


def test_experiment_defaults_are_the_papers() -> None:
    assert EXPERIMENTS["cifar_table6"].settings.nets() == [f"cifar_resnet{d}" for d in (20, 32, 44, 56, 110)]
    assert EXPERIMENTS["fig6"].settings.nets() == [f"cifar_plain{d}" for d in (20, 32, 44, 56)] + [
        f"cifar_resnet{d}" for d in (20, 32, 44, 56)]
    assert EXPERIMENTS["fig7"].settings.nets() == [
        "cifar_plain20", "cifar_plain56", "cifar_resnet20", "cifar_resnet56", "cifar_resnet110"]
    assert EXPERIMENTS["gradients_init"].settings.grad_at == (0,)  # measures without training
    for exp in EXPERIMENTS.values():
        assert settings_note(exp.settings, exp.settings) is None


def test_shortened_settings_say_so() -> None:
    paper = EXPERIMENTS["fig6"].settings
    note = settings_note(CifarSettings(depths=(20, 56), plain_depths=paper.plain_depths, iterations=2000), paper)
    assert note.startswith("shortened: ")
    assert "depths=[20,56] (full: [20,32,44,56])" in note and "iterations=2000 (full: the recipe's)" in note
    # asking for more than the paper (plain/ResNet-110, more seeds) is not a shortening
    more = CifarSettings(depths=(20, 32, 44, 56, 110), plain_depths=paper.plain_depths, seeds=(0, 1, 2))
    assert settings_note(more, paper) is None
    assert "plain110" in " ".join(more.nets())
    # recipe overrides count, unless they only change speed
    assert settings_note(paper, paper, {"lr": 0.05, "amp": "bf16", "device": "cuda"}) == (
        "changed from the paper's recipe: amp=bf16, lr=0.05")
    assert settings_note(paper, paper, {"device": "cuda"}) is None


def test_cifar_settings_refuse_bad_values() -> None:
    for depth in (21, 8):  # 8 is 6n+2 but not a registered CIFAR net
        with pytest.raises(ConfigError, match="6n\\+2"):
            CifarSettings(depths=(depth,))
    with pytest.raises(ConfigError):
        CifarSettings(seeds=())
    with pytest.raises(ConfigError):
        CifarSettings(iterations=0)


def test_mean_std_like_the_paper() -> None:
    assert mean_std([6.43, 6.61, 6.79]) == pytest.approx((6.61, 0.18))
    assert mean_std([8.75]) == (8.75, 0.0)


def test_table1_beside_the_paper(tmp_path) -> None:
    folder = run_experiment("table1", ["models=resnet[13][48]"], out=tmp_path)
    record = json.loads((folder / "experiment.json").read_text())
    rows = {r["model"]: r for r in record["results"]["rows"]}
    assert set(rows) == {"resnet18", "resnet34"}
    assert rows["resnet18"]["macs"] / 1e9 == pytest.approx(1.8, rel=0.02)
    assert rows["resnet34"]["macs"] / 1e9 == pytest.approx(3.6, rel=0.02)
    assert rows["resnet34"]["params"] == 21_797_672  # torchvision's resnet34
    assert record["note"] == "shortened: models=resnet[13][48] (full: *)"
    table = (folder / "table.md").read_text()
    assert table.startswith("**shortened: models=")
    assert "| resnet18 | 11.69 | 1.81 | 1.8 | +0.8 % |" in table
    assert record["command"] == f"resnetlab reproduce table1 'models=resnet[13][48]' --out {tmp_path}"


def test_cli_errors_are_one_line(tmp_path, capsys) -> None:
    assert main(["reproduce", "table9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'table9'" in err and "'table7', 'table8'" in err
    assert main(["reproduce"]) == 2  # it said `key=value` was required
    assert "the following arguments are required: EXPERIMENT\n" in capsys.readouterr().err
    assert main(["reproduce", "table1", "depth=20", "--out", str(tmp_path)]) == 2
    assert "unknown key(s) depth" in capsys.readouterr().err
    assert main(["reproduce", "fig6", "depths=[20,21]", "--out", str(tmp_path)]) == 2
    assert "6n+2" in capsys.readouterr().err
    assert main(["reproduce", "fig7", "--out", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path / "empty"), "--results", str(tmp_path / "r")]) == 2
    assert "no experiment folders" in capsys.readouterr().err


def test_report_from_table1(tmp_path, capsys) -> None:
    assert main(["reproduce", "table1", "models=resnet18", "--out", str(tmp_path / "root")]) == 0
    assert "| resnet18 |" in capsys.readouterr().out
    assert main(["report", "--out", str(tmp_path / "root"), "--results", str(tmp_path / "results")]) == 0
    report = (tmp_path / "results" / "REPORT.md").read_text()
    assert "## Table 1 (table1)" in report
    assert "**shortened: models=resnet18 (full: *)**" in report
    assert "resnetlab reproduce table1 models=resnet18" in report
    assert "Not yet trained with the full recipe" in report
    assert not (tmp_path / "results" / "cifar10").exists()
    # the reproduce root is gone: the report is made again from the copies committed beside it
    from resnetlab.report import write_report

    again = write_report(tmp_path / "nothing", tmp_path / "results").read_text()
    assert f"Generated by `resnetlab report --out {tmp_path / 'results'}`" in again
    assert "## Table 1 (table1)" in again and "**shortened: models=resnet18 (full: *)**" in again
    with pytest.raises(DataError):
        write_report(tmp_path / "nothing", tmp_path / "no-results")


def test_shortened_cifar_experiments_end_to_end(tmp_path) -> None:
    """fig6 -> cifar_table6 -> fig7 -> gradients -> report on digits, 4 iterations: the two
    nets are trained once and shared, and everything says it is shortened."""
    pytest.importorskip("resnetlab.train", reason="the training engine (resnetlab.train) is not merged yet")
    short = ["depths=[20]", "iterations=4", "batch_size=32", "eval_every=4", "checkpoint_every=4"]
    for name in ("fig6", "cifar_table6", "fig7"):
        run_experiment(name, short, data="digits", out=tmp_path)
    run_experiment("gradients", short + ["grad_at=[0,4]"], data="digits", out=tmp_path)
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert not list((tmp_path / "runs").glob("*.lock"))  # the run locks are gone with their holders
    # eval_every is in the run's identity (it drives the plateau schedule; not a result-neutral key)
    assert runs == ["cifar_plain20-seed0-digits-it4-batch_size32-eval_every4",
                    "cifar_resnet20-seed0-digits-it4-batch_size32-eval_every4"]
    for name in ("fig6", "cifar_table6", "fig7", "gradients"):
        record = json.loads((tmp_path / name / "experiment.json").read_text())
        assert record["note"].startswith("shortened: ") and "iterations=4" in record["note"]
        assert record["note"].endswith("changed from the paper's recipe: batch_size=32, eval_every=4")
        assert record["dataset"] == "digits"
        table = (tmp_path / name / "table.md").read_text()
        assert table.startswith("**shortened: ") and "Data: **digits**, not CIFAR-10" in table
    made_by = json.loads((tmp_path / "runs" / runs[1] / "config.json").read_text())["provenance"]
    assert made_by["experiment"] == "fig6" and made_by["dataset"] == "digits"  # fig6 created it
    assert made_by["paper_recipe"] is False and {"iterations", "batch_size", "eval_every"} <= set(made_by["changes"])
    for png in ("fig6/fig6.png", "fig7/fig7.png", "gradients/gradients.png"):
        assert (tmp_path / png).stat().st_size > 1000
    fig7 = json.loads((tmp_path / "fig7" / "experiment.json").read_text())["results"]
    assert [len(r["layers"]) for r in fig7["rows"]] == [19, 19]  # 6n+1 3x3 layers of a 20-layer net
    (claim,) = fig7["claims"]  # ResNet-20 vs plain-20, checked against the paper either way
    assert claim.startswith("mean response std: ResNet-20 ") and "(paper: smaller)" in claim
    grads = json.loads((tmp_path / "gradients" / "experiment.json").read_text())["results"]["rows"]
    assert [(r["label"], r["at"]) for r in grads] == [("plain-20", 0), ("ResNet-20", 0), ("plain-20", 4),
                                                     ("ResNet-20", 4)]
    report = main(["report", "--out", str(tmp_path), "--results", str(tmp_path / "results")])
    assert report == 0
    text = (tmp_path / "results" / "REPORT.md").read_text()
    assert text.count("**shortened: ") >= 4 and runs[1] in text
    assert "## Fig. 6 (fig6) on digits: " in text and "| digits |" in text
    assert (tmp_path / "results" / "fig6" / "fig6.png").is_file()
    # the report's sources are copied beside it: experiment files and each run's small files only
    assert (tmp_path / "results" / "fig7" / "experiment.json").is_file()
    assert sorted(p.name for p in (tmp_path / "results" / "runs" / runs[1]).iterdir()) == [
        "config.json", "metrics.jsonl"]
    assert not (tmp_path / "results" / "cifar10").exists()  # shortened weights are never kept


# ----------------------------------------------------------------------------- run identity and provenance


def _fake_run(run_dir, config, data, *, provenance=None, finished=True, checkpoint=False) -> None:
    """A run folder as train() leaves it (config.json, metrics.jsonl; final weights or a checkpoint)."""
    from resnetlab import runfolder
    from resnetlab.reproduce.runs import resolved_config

    run_dir.mkdir(parents=True)
    runfolder.write_config(run_dir, resolved_config(config, data), "cpu", 1, provenance)
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": config.iterations, "val_err": 0.25, "time": 60.0}) + "\n")
    if finished:
        (run_dir / "final.safetensors").write_bytes(b"weights")
    if checkpoint:
        (run_dir / "checkpoint.pt").write_bytes(b"checkpoint")


def test_one_list_of_result_neutral_keys() -> None:
    """reproduce uses resnetlab.recipes.RESULT_NEUTRAL_KEYS: eval_every changes the result
    (it drives the plateau schedule), checkpoint_every does not."""
    import resnetlab.reproduce as package
    from resnetlab.recipes import RESULT_NEUTRAL_KEYS
    from resnetlab.reproduce import experiments, runners, runs, tables

    for module in (package, experiments, runners, runs, tables):
        assert not {"NEUTRAL_TRAIN_KEYS", "RUN_INPUT_KEYS"} & set(vars(module))
    paper = EXPERIMENTS["fig6"].settings
    assert settings_note(paper, paper, {"eval_every": 5}) == "changed from the paper's recipe: eval_every=5"
    assert settings_note(paper, paper, {key: 5 for key in ("log_every", "checkpoint_every")}) is None
    assert "eval_every" not in RESULT_NEUTRAL_KEYS
    name = runs.run_name(paper, "cifar_resnet20", 0, {"eval_every": 5, "checkpoint_every": 7}, "digits")
    assert name == "cifar_resnet20-seed0-digits-eval_every5"


def test_provenance_says_whether_the_run_is_the_papers_recipe() -> None:
    import dataclasses

    from resnetlab.reproduce import runs

    data = "cifar10=/data/cifar10"
    paper = runs.paper_config("paper_cifar", "cifar_resnet110", 2)
    assert paper.warmup_until_train_error == 0.8 and paper.seed == 2  # section 4.2's warm-up is the paper's
    made = runs.provenance("cifar_table6", "paper_cifar", paper, data)
    assert made == {"experiment": "cifar_table6", "recipe": "paper_cifar", "paper_recipe": True, "changes": {},
                    "dataset": "cifar10"}
    assert runs.provenance("x", "paper_cifar", dataclasses.replace(paper, device="cuda"), data)["paper_recipe"]
    changed = runs.provenance("x", "paper_cifar", dataclasses.replace(paper, lr=0.05), "digits")
    assert changed["paper_recipe"] is False and changed["dataset"] == "digits"
    assert changed["changes"] == {"lr": {"paper": 0.1, "ours": 0.05}}
    short = runs.train_config(CifarSettings(iterations=640), "cifar_resnet20", 0, {})
    assert (short.iterations, short.milestones, short.eval_every) == (640, (320, 480), 20)
    assert set(runs.provenance("x", "paper_cifar", short, data)["changes"]) == {"iterations", "milestones",
                                                                               "eval_every"}


def test_run_summary_reads_the_provenance_written_at_creation(tmp_path) -> None:
    """Whether a run is the paper's recipe is what its config.json says, not re-derived later."""
    import dataclasses

    import torch

    from resnetlab.reproduce import runs

    paper = dataclasses.replace(runs.paper_config("paper_cifar", "cifar_resnet20", 3), device="cuda")
    data = "cifar10=/data/cifar10"
    _fake_run(tmp_path / "paper", paper, data, provenance=runs.provenance("fig6", "paper_cifar", paper, data))
    _fake_run(tmp_path / "none", paper, data)  # made without provenance (e.g. by `resnetlab train`)
    summary = run_summary(tmp_path / "paper")
    assert summary["full"] is True and summary["provenance"] is True and summary["experiment"] == "fig6"
    assert (summary["model"], summary["seed"], summary["dataset"], summary["val_err"]) == (
        "cifar_resnet20", 3, "cifar10", 0.25)
    assert summary["device"] == f"cpu, {torch.get_num_threads()} thread" + ("s" if torch.get_num_threads() > 1 else "")
    unknown = run_summary(tmp_path / "none")
    assert unknown["full"] is False and unknown["provenance"] is False


def test_a_run_is_reused_or_resumed_only_with_the_same_config(tmp_path) -> None:
    import dataclasses

    from resnetlab.reproduce import runs

    config = runs.train_config(CifarSettings(iterations=4), "cifar_resnet20", 0, {"batch_size": 32})
    finished = tmp_path / "finished"
    _fake_run(finished, config, "digits")
    # same result-changing keys (device is neutral): reused as it is, nothing trained
    assert runs.ensure_run(dataclasses.replace(config, device="cpu"), "digits", finished, {}) == finished
    # other data, or another lr: refused with the difference named
    with pytest.raises(ConfigError, match=r"data: 'digits' there, 'cifar10=/x' wanted.*neither reused nor resumed"):
        runs.ensure_run(config, "cifar10=/x", finished, {})
    with pytest.raises(ConfigError, match=r"lr: 0.1 there, 0.05 wanted"):
        runs.ensure_run(dataclasses.replace(config, lr=0.05), "digits", finished, {})
    # an unfinished run with a checkpoint: the config is checked before train(resume=True) runs
    unfinished = tmp_path / "unfinished"
    _fake_run(unfinished, config, "digits", finished=False, checkpoint=True)
    with pytest.raises(ConfigError, match=r"eval_every: 1 there, 4 wanted"):
        runs.ensure_run(dataclasses.replace(config, eval_every=4), "digits", unfinished, {})
    assert (unfinished / "checkpoint.pt").read_bytes() == b"checkpoint"
    # a run another process holds (its lock) is not touched, whatever its state
    import fcntl

    with open(tmp_path / "finished.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="being trained by another process"):
            runs.ensure_run(config, "digits", finished, {})
    assert runs.ensure_run(config, "digits", finished, {}) == finished  # released with its holder
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="no readable config.json"):
        runs.ensure_run(config, "digits", tmp_path / "stray", {})


def test_report_keeps_weights_of_paper_runs_on_cifar10_only(tmp_path) -> None:
    """A paper-recipe run on digits is reported as digits and its weights are never copied to
    results/cifar10; the same run on cifar10 data is."""
    from resnetlab.report import write_report
    from resnetlab.reproduce import runs

    root = tmp_path / "root"
    run_experiment("table1", ["models=resnet18"], out=root)
    for model, data in (("cifar_resnet20", "digits"), ("cifar_resnet56", "cifar10=/data/cifar10")):
        config = runs.paper_config("paper_cifar", model, 0)
        name = runs.run_name(CifarSettings(), model, 0, {}, data)
        _fake_run(root / "runs" / name, config, data, provenance=runs.provenance("fig6", "paper_cifar", config, data))
    text = write_report(root, tmp_path / "results").read_text()
    assert "| [cifar_resnet20-seed0-digits](runs/cifar_resnet20-seed0-digits/) | cifar_resnet20 | 0 | digits |" in text
    assert sorted(p.name for p in (tmp_path / "results" / "cifar10").iterdir()) == ["cifar_resnet56.safetensors"]
    assert "Not yet trained with the full recipe on cifar10" in text and "cifar_resnet20, " in text
    assert (tmp_path / "results" / "runs" / "cifar_resnet20-seed0-digits" / "config.json").is_file()
    assert not (tmp_path / "results" / "runs" / "cifar_resnet20-seed0-digits" / "final.safetensors").exists()
    assert (tmp_path / "results" / "table1" / "table.md").is_file()


def test_report_notes_state_no_measurements() -> None:
    """The report's typed-in notes describe methods only; numbers come from run folders."""
    import re

    from resnetlab.report import DATA_NOTES, DIFFERENCES

    for note in [*DATA_NOTES.values(), *(n for notes in DIFFERENCES.values() for n in notes)]:
        assert not re.search(r"~ ?\d|\d ?%|#\d|\bloss\b|\bstep \d", note), note
