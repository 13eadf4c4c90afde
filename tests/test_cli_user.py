"""What failed when resnetlab was tried as a new user would: each case as it was typed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnetlab import machine
from resnetlab.arguments import subcommands
from resnetlab.cli import build_parser, main, parse_args
from resnetlab.errors import ConfigError

SHORT = ["model=cifar_resnet", 'model_kwargs={"depth":8}', "iterations=2", "milestones=[1]", "batch_size=16",
         "train_subset=32", "log_every=1", "eval_every=0", "checkpoint_every=1"]


def test_key_value_after_the_options_is_parsed() -> None:
    args = parse_args(["train", "paper_cifar", "--data", "X", "model=cifar_resnet56", "--out", "o", "lr=0.05"])
    assert args.recipe == "paper_cifar" and args.data == "X" and args.out == "o"
    assert args.overrides == ["model=cifar_resnet56", "lr=0.05"]
    args = parse_args(["reproduce", "fig6", "--data", "digits", "iterations=4", "--device", "cpu"])
    assert args.overrides == ["iterations=4", "device=cpu"]  # --device D is the override device=D
    with pytest.raises(SystemExit):  # a misspelt option is still an error
        parse_args(["train", "demo", "--dta", "digits"])


@pytest.mark.parametrize("argv, overrides", [
    (["detect", "train", "shapes_demo", "--data", "shapes", "--out", "runs/s", "iterations=4"], ["iterations=4"]),
    (["detect", "train", "shapes_demo", "iterations=2", "--device", "cpu", "--data", "shapes", "--out", "runs/s"],
     ["iterations=2", "device=cpu"]),
    (["detect", "train", "shapes_demo", "--out", "runs/s", "--resume", "iterations=20"], ["iterations=20"]),
])
def test_nested_subcommands_parse_the_way_train_does(argv: list[str], overrides: list[str]) -> None:
    """These three crashed with ``TypeError: parse_intermixed_args`` (the ``detect`` parser has sub-commands)."""
    args = parse_args(argv)
    assert (args.command, args.detect_command, args.recipe, args.overrides) == ("detect", "train", "shapes_demo",
                                                                                overrides)
    assert args.out == "runs/s"


def _leaves(parser, path=()):
    """``(command words, parser)`` of every sub-command that has no sub-commands of its own."""
    sub = subcommands(parser)
    if sub is None:
        yield path, parser
        return
    for name, child in sub.choices.items():
        yield from _leaves(child, (*path, name))


#: the commands that run a network on data, and so take --device and --threads
RUNS_NETWORKS = {("train",), ("reproduce",), ("eval",), ("predict",), ("bench",), ("detect", "train"),
                 ("detect", "eval"), ("detect", "predict")}


def test_every_subcommand_parses_key_value_after_options_and_takes_device() -> None:
    """Whatever sub-commands exist (nested ones too): an empty key=value list is not 'required', a
    key=value after an option is parsed, and the commands that run networks take --device."""
    leaves = dict(_leaves(build_parser()))
    assert RUNS_NETWORKS <= set(leaves)
    for words, parser in leaves.items():
        options = {o for a in parser._actions for o in a.option_strings}
        if words in RUNS_NETWORKS:
            assert {"--device", "--threads"} <= options, words
        positionals = [a for a in parser._actions if not a.option_strings]
        if "overrides" not in [a.dest for a in positionals]:
            continue
        # the positionals before the key=value list, then an option, then a key=value
        before = [next(iter(a.choices)) if a.choices else "x" for a in positionals[:[a.dest for a in positionals].index("overrides")]]
        required = [w for a in parser._actions if a.required and a.option_strings for w in (a.option_strings[0], "x")]
        option = ["--device", "cpu"] if "--device" in options else ["--json"]
        assert "a=1" in parse_args([*words, *before, *required, *option, "a=1"]).overrides, words
        assert "b=2" in parse_args([*words, *before, "a=1", *required, "b=2"]).overrides, words
        assert parse_args([*words, *before, *required]).overrides == [], words


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


@pytest.fixture
def keep_threads():
    """Restore torch's thread count and the automatic choice after a test that changes them."""
    threads, auto = torch.get_num_threads(), machine._auto_choice
    yield machine
    torch.set_num_threads(threads)
    machine._auto_choice = auto


def test_threads_are_chosen_one_way_and_said(keep_threads, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             capsys) -> None:
    """`resnetlab train demo` took 393 s with the default threads on two busy cores and 20 s with one:
    every command chooses the same way (cores minus their load), says so, and takes threads=N."""
    machine = keep_threads
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(machine, "_TORCH_DEFAULT_THREADS", 4)
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for load, expected in ((2.3, 1), (1.0, 1), (0.4, 2)):
        torch.set_num_threads(4)
        monkeypatch.setattr(machine, "_auto_choice", None)
        monkeypatch.setattr(machine.os, "getloadavg", lambda: (load, 0.0, 0.0))
        line = machine.choose_threads()
        assert line == (f"{expected} CPU thread{'s' if expected > 1 else ''} (automatic: load {load:.1f} on 2 cores; "
                        "threads=N to choose)") and torch.get_num_threads() == expected
        assert machine.choose_threads() == line  # made once per process
    assert machine.choose_threads(3) == "3 CPU threads (threads=3)" and torch.get_num_threads() == 3
    assert machine.choose_threads() == "3 CPU threads (set by the program; threads=N to choose)"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert machine.choose_threads() == "3 CPU threads (OMP_NUM_THREADS=3)"
    with pytest.raises(ConfigError, match="threads must be >= 0"):
        machine.choose_threads(-1)
    # the command line: --threads N (or threads=N) is the run's, said on stderr and in config.json
    out = tmp_path / "run"
    assert main(["train", "demo", "--out", str(out), "--threads", "1", *SHORT]) == 0
    assert "training cifar_resnet on cpu, 1 CPU thread (threads=1)" in capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    assert saved["threads"] == 1 and saved["environment"]["threads"] == 1
    assert main(["eval", str(out / "final.safetensors"), "--data", "digits", "--threads", "2", "--json"]) == 0
    assert "evaluating on cpu, 2 CPU threads (threads=2)" in capsys.readouterr().err
