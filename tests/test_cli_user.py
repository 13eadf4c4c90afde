"""What failed when resnetlab was tried as a new user would: each case as it was typed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from resnetlab.cli import main, parse_args

SHORT = ["model=cifar_resnet", 'model_kwargs={"depth":8}', "iterations=2", "milestones=[1]", "batch_size=16",
         "train_subset=32", "log_every=1", "eval_every=0", "checkpoint_every=1"]


def test_key_value_after_the_options_is_parsed() -> None:
    args = parse_args(["train", "paper_cifar", "--data", "X", "model=cifar_resnet56", "--out", "o", "lr=0.05"])
    assert args.recipe == "paper_cifar" and args.data == "X" and args.out == "o"
    assert args.overrides == ["model=cifar_resnet56", "lr=0.05"]
    args = parse_args(["reproduce", "fig6", "--data", "digits", "iterations=4", "--device", "cpu"])
    assert args.overrides == ["iterations=4"] and args.device == "cpu"
    with pytest.raises(SystemExit):  # a misspelt option is still an error
        parse_args(["train", "demo", "--dta", "digits"])


def test_bare_word_choice_and_device_and_resume_from_the_run_folder(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "run")
    assert main(["train", "demo", "--out", out, "val=none", "--device", "cpu", *SHORT]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["val"] == "none" and saved["device"] == "cpu" and saved["provenance"] == {"recipe": "demo"}
    capsys.readouterr()
    # README: `resnetlab train RECIPE --out DIR --resume` takes the recipe settings and data from DIR
    (tmp_path / "run" / "final.safetensors").unlink()
    assert main(["train", "demo", "--out", out, "--resume"]) == 0
    assert (tmp_path / "run" / "final.safetensors").is_file()
    assert main(["train", "demo", "--out", out, "--resume", "lr=0.5"]) == 2
    assert "different config (lr: 0.1 -> 0.5)" in capsys.readouterr().err
    assert main(["train", "paper_cifar", "--out", out, "--resume"]) == 2
    assert "is a run of recipe 'demo', not 'paper_cifar'" in capsys.readouterr().err
    assert main(["train", "demo", "--out", str(tmp_path / "x"), "--device", "cpu", "device=cpu"]) == 2
    assert "'device' given twice" in capsys.readouterr().err
    assert main(["train", "demo", "--out", str(tmp_path / "y"), "val=true"]) == 2
    assert "val: true is not one of 'holdout', 'test', 'none'" in capsys.readouterr().err
    assert main(["train", "demo", "--out", str(tmp_path / "z"), "schedule=plateau", "eval_every=0"]) == 2
    assert "schedule=plateau needs validation errors" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_reproduce_takes_device(tmp_path: Path, capsys) -> None:
    assert main(["reproduce", "table1", "models=resnet18", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "unknown key(s) device; valid keys: models" in capsys.readouterr().err  # table1 trains nothing
    args = parse_args(["reproduce", "fig6", "--device", "cuda:1", "--data", "digits"])
    assert args.device == "cuda:1"


def test_submodules_are_attributes_of_the_package() -> None:
    code = ("import resnetlab\n"
            "print(resnetlab.inference.optimize.__name__, resnetlab.train.train.__name__)\n"
            "try:\n    resnetlab.inferense\nexcept AttributeError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "optimize train"
    assert "module 'resnetlab' has no attribute 'inferense'" in out and "submodules: " in out
