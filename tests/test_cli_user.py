"""What failed when resnetlab was tried as a new user would: each case as it was typed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagefolders import write_image_folder
from resnetlab import machine
from resnetlab.arguments import subcommands
from resnetlab.cli import build_parser, main, parse_args
from resnetlab.constants import CIFAR10_CLASSES
from resnetlab.data import ImageSet, decode_image
from resnetlab.errors import ConfigError, DataError
from resnetlab.evaluate import evaluate
from resnetlab.files import atomic_write_text
from resnetlab.registry import create_model
from resnetlab.weights import save_weights

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


def test_skip_bad_images_on_a_cifar_folder_is_counted_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys) -> None:
    """`skip_bad_images=true` was ignored for --data cifar10=FOLDER (a corrupt JPEG still stopped the run),
    and the command line never said how many images a run skipped, nor which."""
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "c10"
    write_image_folder(data / "train", CIFAR10_CLASSES, per_class=4, fmt="jpg")
    bad = data / "train" / "cat" / "0002.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    run = ["train", "demo", "--data", f"cifar10={data}", *SHORT]
    assert main([*run, "--out", str(tmp_path / "stops")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: " in err and "skip_bad_images=true leaves such files out" in err and "Traceback" not in err
    assert main([*run, "--out", str(tmp_path / "skips"), "skip_bad_images=true"]) == 0
    out, err = capsys.readouterr()
    assert "skipped 1 unreadable image (each named in" in out
    assert f"resnetlab: skipped an unreadable image: {bad}" in err
    records = [json.loads(line) for line in (tmp_path / "skips" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in records if "skipped" in r] == [err.split("skipped an unreadable image: ")[1].split("\n")[0]]
    # the decoded set is cached with its unreadable file: a run that does not skip is refused it again
    assert main([*run, "--out", str(tmp_path / "again")]) == 2
    assert f"{bad}: " in capsys.readouterr().err


def test_a_run_that_fails_before_its_first_checkpoint_can_be_started_again(tmp_path: Path, capsys) -> None:
    """A run that failed at step 4 left config.json and tensorboard/: the same command then said 'not empty:
    continue it with --resume', and --resume said 'nothing to resume'."""
    out = tmp_path / "run"
    short = [a for a in SHORT if not a.startswith(("checkpoint_every=", "iterations="))]
    nan = ["train", "demo", "--out", str(out), *short, "lr=1e30", "checkpoint_every=100", "iterations=3"]
    assert main(nan) == 2
    err = capsys.readouterr().err
    assert "no checkpoint was written yet, so the same command starts" in err
    assert (out / "config.json").is_file() and not (out / "checkpoint.pt").exists()
    assert main(nan) == 2  # the same command starts it again (and fails again the same way)
    assert "starting it again" in capsys.readouterr().err
    assert main(["train", "demo", "--out", str(out), "--resume"]) == 2  # --resume starts it again too
    assert "starting it again" in capsys.readouterr().err
    assert main(["train", "demo", "--out", str(out), *SHORT]) == 0  # now with a sane lr
    assert (out / "final.safetensors").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(["train", "demo", "--out", str(tmp_path / "mine"), *SHORT]) == 2  # a folder of other files: refused
    assert "is not empty" in capsys.readouterr().err and (tmp_path / "mine" / "notes.txt").is_file()


class _SignOfFirstPixel(torch.nn.Module):
    """Class 0 when the first pixel is bright, else class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 0, 0]
        return torch.stack([v, -v], dim=1)


def test_printed_fractions_carry_no_float_noise(tmp_path: Path) -> None:
    """`top1_err` printed 0.06999999999999995 and per-class accuracy 0.8999999761581421."""
    bright = [255] * 9 + [0] + [255] * 6 + [0] * 84  # class 0: 9 of 10 right; class 1: 84 of 90
    images = torch.tensor(bright, dtype=torch.uint8)[:, None, None, None].expand(-1, 3, 4, 4).contiguous()
    data = ImageSet("t", ["0", "1"], [0] * 10 + [1] * 90, images=images)
    result = evaluate(_SignOfFirstPixel(), data, protocol="full", mean=(0.5,) * 3, std=(0.5,) * 3,
                      input_size=(3, 4, 4), progress=False, out_dir=tmp_path)
    assert json.dumps([result["top1_err"], result["top1_acc"]]) == "[0.07, 0.93]"
    assert '"top1_acc": 0.9' in (tmp_path / "per_class.json").read_text().replace("\n", " ")
    assert json.loads((tmp_path / "per_class.json").read_text())["0"]["top1_acc"] == 0.9


def test_messages_name_the_file_and_what_was_expected(tmp_path: Path, capsys) -> None:
    """'not a readable PyTorch checkpoint (544502645)', 'cannot identify image file <_io.BytesIO object at
    0x...>' and 'header says 8675467939940627818 bytes' said neither what the file was nor what was expected."""
    text = tmp_path / "notes.th"
    text.write_text("nothing to see here, a text file\n")
    assert main(["import", "torchvision", str(text), "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert f"{text}: not a PyTorch checkpoint (expected a file written by torch.save" in err
    assert "starts with b'nothing '" in err
    fake = tmp_path / "w.safetensors"
    fake.write_text("definitely not safetensors\n")
    assert main(["predict", str(fake), str(text)]) == 2
    err = capsys.readouterr().err
    assert f"{fake}: not a safetensors file (expected an 8-byte header length, then a JSON header" in err
    assert "PyTorch checkpoint" not in err
    checkpoint = tmp_path / "resnet18.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, checkpoint)
    assert main(["eval", str(checkpoint), "--data", "digits"]) == 2
    assert ("it looks like a PyTorch checkpoint: convert it with `resnetlab import torchvision|timm|akamaster|"
            "transformers FILE -o OUT.safetensors`") in capsys.readouterr().err
    assert decode_error(text) == (f"{text}: not a readable image (its 33 bytes are in none of the formats Pillow "
                                  "reads; expected JPG, JPEG, PNG, BMP, PPM, PGM, TIF, TIFF, WEBP, GIF)")


def decode_error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        decode_image(path)
    return str(info.value)


def test_predict_predicts_the_good_images_and_names_the_bad_one(tmp_path: Path, capsys) -> None:
    """With one bad image among several, `predict` printed nothing for the good ones."""
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(create_model("cifar_resnet20", num_classes=3), weights, mean=[0.5] * 3, std=[0.25] * 3,
                 classes=["a", "b", "c"], input_size=(3, 32, 32))
    good = [tmp_path / "one.png", tmp_path / "two.png"]
    for path in good:
        Image.fromarray(np.zeros((40, 30, 3), dtype=np.uint8)).save(path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but not really")
    argv = ["predict", str(weights), str(good[0]), str(bad), str(good[1]), "--top", "2"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert [line for line in out.splitlines() if not line.startswith(" ")] == [str(good[0]), str(good[1])]
    assert err.strip().splitlines()[-1].startswith(f"resnetlab: error: {bad}: not a readable image")
    assert main([*argv, "--json"]) == 2
    results = json.loads(capsys.readouterr().out)
    assert [sorted(r) for r in results] == [["image", "top"], ["error", "image"], ["image", "top"]]
    # a class's index is its place in the weights' class list, counting from 0 (README)
    assert sorted(hit["index"] for hit in results[0]["top"]) in ([0, 1], [0, 2], [1, 2])
    assert all(hit["class"] == "abc"[hit["index"]] for r in results if "top" in r for hit in r["top"])


def test_an_unreadable_image_in_eval_is_one_line_not_a_worker_traceback(tmp_path: Path, capsys) -> None:
    """Decoded in a data-loader worker, the error reached the user as 'Caught DataError in DataLoader worker
    process 0' with the worker's traceback."""
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(create_model("cifar_resnet20", num_classes=2), weights, mean=[0.5] * 3, std=[0.25] * 3,
                 classes=["a", "b"], input_size=(3, 32, 32))
    write_image_folder(tmp_path / "data" / "test", ["a", "b"])
    bad = tmp_path / "data" / "test" / "b" / "0001.png"
    bad.write_text("not a png")
    assert main(["eval", str(weights), "--data", f"folder={tmp_path / 'data'}", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"resnetlab: error: {bad}: not a readable image")
    assert "Traceback" not in err and "worker" not in err


def test_hub_export_of_a_trained_run_carries_its_validation(tmp_path: Path, capsys) -> None:
    """`export --format hub` wrote "evaluation": [] even for a trained run with validation results."""
    out = tmp_path / "run"
    assert main(["train", "demo", "--out", str(out), *SHORT]) == 0
    assert main(["export", str(out / "final.safetensors"), "--format", "hub", "-o", str(tmp_path / "hub")]) == 0
    (evaluation,) = json.loads((tmp_path / "hub" / "config.json").read_text())["evaluation"]
    last = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "val_err" in r][-1]
    assert evaluation == {"dataset": "digits", "split": "val", "protocol": "full", "n": last["val_n"],
                          "top1_err": last["val_err"], "top5_err": last["val_top5_err"], "step": 2,
                          "source": "validation of the training run run at step 2"}
    assert last["val_n"] == 144  # the digits hold-out
    assert "No evaluation results" not in (tmp_path / "hub" / "README.md").read_text()


def test_skip_bad_images_in_validation_of_an_image_folder(tmp_path: Path, capsys) -> None:
    """skip_bad_images covers the validation images too (read in data-loader workers)."""
    for split, n in (("train", 8), ("val", 2)):
        write_image_folder(tmp_path / "data" / split, ["n01", "n02"], per_class=n, size=(40, 48), fmt="jpg")
    bad = tmp_path / "data" / "val" / "n02" / "0001.jpg"
    bad.write_text("not a jpeg")
    run = ["train", "demo", "--data", f"folder={tmp_path / 'data'}", "augment=imagenet", "crop=32", "pad=0",
           "normalization=per_channel", "batch_size=8", "iterations=2", "milestones=[1]", "log_every=1",
           "eval_every=0", "checkpoint_every=1", "num_workers=0"]
    assert main([*run, "--out", str(tmp_path / "stops")]) == 2
    assert f"{bad}: not a readable image" in capsys.readouterr().err
    assert main([*run, "--out", str(tmp_path / "skips"), "skip_bad_images=true"]) == 0
    out, err = capsys.readouterr()
    assert "skipped 1 unreadable image" in out and f"skipped an unreadable image: {bad}" in err
    validation = [r for r in map(json.loads, (tmp_path / "skips" / "metrics.jsonl").read_text().splitlines())
                  if "val_n" in r]
    assert validation[-1]["val_n"] == 3


def test_a_model_that_cannot_take_the_input_size_is_one_line(tmp_path: Path, capsys) -> None:
    """The same class of fault as AlexNet's multiscale traceback, on other commands: `info alexnet
    --input-size 32` and training AlexNet on the 16x16 digits ended in torch's RuntimeError."""
    assert main(["info", "alexnet", "--input-size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resnetlab: error: alexnet cannot take 32x32 inputs (") and err.count("\n") == 1
    out = tmp_path / "run"
    assert main(["train", "demo", "model=alexnet", "--out", str(out), *SHORT[2:]]) == 2
    assert "alexnet cannot take 16x16 inputs" in capsys.readouterr().err and not out.exists()


def test_a_failed_write_names_the_file_asked_for(tmp_path: Path) -> None:
    """A write error named the temporary file beside the target (`/proc/.x.pt.88yh3xyy.tmp`)."""
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, where no file can be created")
    with pytest.raises(OSError) as info:
        atomic_write_text("/proc/x.pt", "x")
    assert info.value.filename == "/proc/x.pt"
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as info:  # a file where the folder should be: named as it is
        atomic_write_text(tmp_path / "file" / "x.txt", "x")
    assert info.value.filename == str(tmp_path / "file")
