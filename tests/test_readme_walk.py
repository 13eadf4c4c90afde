"""A new user's walk through the README, as a test of the README's own commands.

Every ``resnetlab`` command in the README's code blocks parses as it is written; the cheap ones
run, in the README's order, in a fresh folder (so ``runs/...`` and ``results/`` land there), on
small stand-ins for the user's files: ``PATH`` is a CIFAR-10 image folder of 30 images,
``cat.jpg``/``dog.png`` are made here, and the akamaster checkpoint is the shared one (skipped
without ``../shared``). The two commands that would take minutes run shortened, and say how:
training gets ``iterations=2`` and friends appended, ``reproduce table1`` measures one model.
The detection, ImageNet, multi-GPU and full-length commands are parsed only.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagefolders import write_image_folder
from resnetlab.cli import main, parse_args
from resnetlab.constants import CIFAR10_CLASSES

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()

#: README commands run by the walk (as written, comments and brackets removed) -> what is appended
SHORTENED = ["iterations=2", "batch_size=8", "milestones=[1]", "log_every=1", "eval_every=0", "checkpoint_every=1"]
RUN = {
    "resnetlab list": [],
    "resnetlab info resnet50 variant=v1.5 --json": [],
    "resnetlab import akamaster resnet56-4bfd9763.th -o r56.safetensors": [],
    "resnetlab eval r56.safetensors --data cifar10=PATH --split val": [],
    "resnetlab export r56.safetensors --format onnx -o r56.onnx": [],
    "resnetlab predict r56.safetensors cat.jpg dog.png --json": [],
    "resnetlab train paper_cifar model=cifar_resnet56 --data cifar10=PATH --out runs/r56": SHORTENED,
    "resnetlab train paper_cifar --out runs/r56 --resume": [],
    "resnetlab reproduce table1": ["models=resnet18"],
    "resnetlab report --out runs/reproduce": [],
}


def _blocks(language: str) -> list[str]:
    """The bodies of the README's fenced code blocks of ``language`` ("" for plain blocks)."""
    blocks, body, opened = [], None, ""
    for line in README.splitlines():
        if line.startswith("```") and body is None:
            body, opened = [], line[3:].strip()
        elif line.startswith("```"):
            if opened == language:
                blocks.append("\n".join(body))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def readme_commands() -> list[list[str]]:
    """Every ``resnetlab ...`` command line of the plain code blocks as argv (``torchrun ... -m
    resnetlab.cli`` too), without its comment; an optional ``[--flag]`` becomes the flag."""
    commands = []
    for block in _blocks(""):
        for line in block.splitlines():
            if not (line.startswith("resnetlab ") or "-m resnetlab.cli " in line):
                continue
            words = shlex.split(re.sub(r"\s+#.*$", "", line))
            if "resnetlab.cli" in words:
                words = ["resnetlab", *words[words.index("resnetlab.cli") + 1:]]
            if words[:1] == ["resnetlab"]:
                commands.append([w[1:-1] if w.startswith("[") and w.endswith("]") else w for w in words])
    return commands


def test_the_readme_lists_the_commands_the_walk_runs() -> None:
    written = {" ".join(argv) for argv in readme_commands()}
    assert set(RUN) <= written, f"README no longer shows: {sorted(set(RUN) - written)}"
    assert len(written) >= 25 and any(argv[:2] == ["resnetlab", "detect"] for argv in readme_commands())


@pytest.mark.parametrize("argv", readme_commands(), ids=" ".join)
def test_every_readme_command_parses(argv: list[str]) -> None:
    """As written: options and key=value words in the README's order (`detect train` crashed on them)."""
    try:
        parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"`{' '.join(argv)}` does not parse (exit {exc.code})")


def test_quick_start_runs_and_prints_what_it_says(capsys) -> None:
    (code,) = [block for block in _blocks("python") if "create_model" in block][:1]
    exec(compile(code, "README.md quick start", "exec"), {})
    said = re.search(r"print\(resnetlab\.complexity\(model\)\)\s+# (\{.*\})", code).group(1)
    assert capsys.readouterr().out.splitlines()[0] == said


def test_readme_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_dir: Path) -> None:
    akamaster = shared_dir / "weights" / "cifar10-akamaster" / "resnet56-4bfd9763.th"
    if not akamaster.is_file():
        pytest.skip(f"{akamaster} is absent")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "cifar10"
    write_image_folder(data / "train", CIFAR10_CLASSES)
    Image.fromarray(np.full((48, 64, 3), 200, dtype=np.uint8)).save("cat.jpg")
    Image.fromarray(np.full((40, 40, 3), 50, dtype=np.uint8)).save("dog.png")
    substitute = {"cifar10=PATH": f"cifar10={data}", "resnet56-4bfd9763.th": str(akamaster)}
    ran = []
    for argv in readme_commands():
        written = " ".join(argv)
        if written not in RUN:
            continue
        command = [substitute.get(word, word) for word in argv[1:]] + RUN[written]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(command)
        assert code == 0, f"`{written}` (run as `resnetlab {' '.join(command)}`) exited {code}"
        ran.append(written)
    assert ran == [c for c in (" ".join(a) for a in readme_commands()) if c in RUN]
    assert Path("runs/r56/final.safetensors").is_file() and Path("r56.onnx").is_file()
    assert Path("results/REPORT.md").is_file() and not list(Path("runs").rglob("*.lock"))
