"""``resnetlab reproduce`` and ``resnetlab report``: experiments as data, shortened runs labelled."""

from __future__ import annotations

import json

import pytest

from resnetlab import ConfigError
from resnetlab.cli import main
from resnetlab.errors import DataError
from resnetlab.reproduce import EXPERIMENTS, CifarSettings, mean_std, run_experiment, settings_note


def test_experiment_defaults_are_the_papers() -> None:
    assert EXPERIMENTS["cifar_table6"].settings.nets() == [f"cifar_resnet{d}" for d in (20, 32, 44, 56, 110)]
    assert EXPERIMENTS["fig6"].settings.nets() == [f"cifar_plain{d}" for d in (20, 32, 44, 56)] + [
        f"cifar_resnet{d}" for d in (20, 32, 44, 56)]
    assert EXPERIMENTS["fig7"].settings.nets() == [
        "cifar_plain20", "cifar_plain56", "cifar_resnet20", "cifar_resnet56", "cifar_resnet110"]
    for exp in EXPERIMENTS.values():
        assert settings_note(exp.settings, exp.settings) is None


def test_shortened_settings_say_so() -> None:
    paper = EXPERIMENTS["fig6"].settings
    note = settings_note(CifarSettings(depths=(20, 56), plain_depths=paper.plain_depths, iterations=2000), paper)
    assert note.startswith("shortened: ")
    assert "depths=[20,56] (paper: [20,32,44,56])" in note and "iterations=2000 (paper: the recipe's)" in note
    # asking for more than the paper (plain/ResNet-110, more seeds) is not a shortening
    more = CifarSettings(depths=(20, 32, 44, 56, 110), plain_depths=paper.plain_depths, seeds=(0, 1, 2))
    assert settings_note(more, paper) is None
    assert "plain110" in " ".join(more.nets())
    # recipe overrides count, unless they only change speed
    assert "lr=0.05 (recipe override)" in settings_note(paper, paper, {"lr": 0.05, "device": "cuda"})
    assert settings_note(paper, paper, {"device": "cuda"}) is None


def test_cifar_settings_refuse_bad_values() -> None:
    with pytest.raises(ConfigError, match="6n\\+2"):
        CifarSettings(depths=(21,))
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
    assert record["note"] == "shortened: models=resnet[13][48] (paper: *)"
    table = (folder / "table.md").read_text()
    assert "| resnet18 | 11.69 | 1.81 | 1.8 | +0.8 % |" in table
    assert record["command"] == f"resnetlab reproduce table1 'models=resnet[13][48]' --out {tmp_path}"


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
    assert "**shortened: models=resnet18 (paper: *)**" in report
    assert "resnetlab reproduce table1 models=resnet18" in report
    assert "Not yet trained with the full recipe" in report
    assert not (tmp_path / "results" / "cifar10").exists()
    with pytest.raises(DataError):
        from resnetlab.report import write_report

        write_report(tmp_path / "nothing", tmp_path / "results")
