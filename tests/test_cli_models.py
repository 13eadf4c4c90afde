"""`resnetlab list` / `info` (DESIGN contract) and the one-line error promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from resnetlab.cli import main
from resnetlab.docs import render

REPO = Path(__file__).resolve().parents[1]


def test_list_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "--json"]) == 0
    names = json.loads(capsys.readouterr().out)
    assert {"resnet50", "plain34", "cifar_resnet110", "cifar_plain56"} <= set(names)


def test_info_json_contract(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "resnet50", "variant=v1.5", "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["model"] == "resnet50" and info["params"] == 25_557_032 and info["macs"] == 4_089_184_256
    assert any("conv2_x" in line for line in info["layers"])


def test_info_input_size(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "cifar_resnet20", "--input-size", "64", "--json"]) == 0
    # convolutions scale with the area, the 640 MACs of the fc layer do not
    assert json.loads(capsys.readouterr().out)["macs"] == 4 * (40_551_040 - 640) + 640


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["info", "resnet51"], "unknown model 'resnet51'"),
        (["info", "resnet50", "shortcut=D"], "shortcut='D'"),
        (["info", "cifar_resnet", "depth=21"], "6n+2"),
        (["info", "resnet50", "bogus"], "expected key=value"),
    ],
)
def test_user_errors_are_one_line(argv: list[str], fragment: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_script_exit_code() -> None:
    proc = subprocess.run([sys.executable, "-m", "resnetlab.cli", "info", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("resnetlab: error: unknown model")


def test_readme_model_table_is_generated() -> None:
    readme = (REPO / "README.md").read_text()
    assert render(readme) == readme, "README model table is stale: run `make readme`"
