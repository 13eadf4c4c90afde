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


def test_run_summary_counts_a_paper_run_on_real_data_as_full(tmp_path) -> None:
    import dataclasses

    import torch

    from resnetlab import runfolder
    from resnetlab.recipes import get_recipe

    paper = dataclasses.replace(get_recipe("paper_cifar"), model="cifar_resnet20", seed=3, device="cuda")
    for name, config in (("paper", paper), ("lr", dataclasses.replace(paper, lr=0.05))):
        (tmp_path / name).mkdir()
        resolved = dict(config.to_dict(), data="cifar10=/data/cifar10")  # as train() writes it
        runfolder.write_config(tmp_path / name, resolved, runfolder.environment(torch.device("cpu"), 1))
    summary = run_summary(tmp_path / "paper")
    assert summary["full"] is True and summary["model"] == "cifar_resnet20" and summary["seed"] == 3
    assert summary["device"] == f"cpu, {torch.get_num_threads()} thread" + ("s" if torch.get_num_threads() > 1 else "")
    assert run_summary(tmp_path / "lr")["full"] is False


def test_cli_errors_are_one_line(tmp_path, capsys) -> None:
    assert main(["reproduce", "table9", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'table9'" in capsys.readouterr().err
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
    with pytest.raises(DataError):
        from resnetlab.report import write_report

        write_report(tmp_path / "nothing", tmp_path / "results")


def test_shortened_cifar_experiments_end_to_end(tmp_path) -> None:
    """fig6 -> cifar_table6 -> fig7 -> gradients -> report on digits, 4 iterations: the two
    nets are trained once and shared, and everything says it is shortened."""
    pytest.importorskip("resnetlab.train", reason="the training engine (resnetlab.train) is not merged yet")
    short = ["depths=[20]", "iterations=4", "batch_size=32", "eval_every=4", "checkpoint_every=4"]
    for name in ("fig6", "cifar_table6", "fig7"):
        run_experiment(name, short, data="digits", out=tmp_path)
    run_experiment("gradients", short + ["grad_at=[0,4]"], data="digits", out=tmp_path)
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["cifar_plain20-seed0-it4-batch_size32", "cifar_resnet20-seed0-it4-batch_size32"]
    for name in ("fig6", "cifar_table6", "fig7", "gradients"):
        record = json.loads((tmp_path / name / "experiment.json").read_text())
        assert record["note"].startswith("shortened: ") and "iterations=4" in record["note"]
        assert record["note"].endswith("changed from the paper's recipe: batch_size=32")
        assert (tmp_path / name / "table.md").read_text().startswith("**shortened: ")
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
    assert text.count("**shortened: ") >= 4 and "cifar_resnet20-seed0-it4-batch_size32" in text
    assert (tmp_path / "results" / "fig6" / "fig6.png").is_file()
    assert not (tmp_path / "results" / "cifar10").exists()  # shortened weights are never kept
