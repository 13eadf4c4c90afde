"""`resnetlab export`: TorchScript and ONNX (dynamic batch axis, checked against onnxruntime)."""

from __future__ import annotations

import json

import pytest
import torch

from resnetlab import create_model
from resnetlab.cli import main
from resnetlab.export import export
from resnetlab.weights import save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("export") / "w.safetensors"
    save_weights(create_model("cifar_resnet20"), path, mean=[0.5] * 3, std=[0.25] * 3, source="test")
    return path


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript(weights, tmp_path):
    out = tmp_path / "m.pt"
    result = export(weights, "torchscript", out)
    assert result["max_abs_diff"] == 0.0
    extra = {"resnetlab.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["resnetlab.json"])["resnetlab.model"] == "cifar_resnet20"
    assert scripted(torch.randn(5, 3, 32, 32)).shape == (5, 10)


def test_onnx_matches_pytorch(weights, tmp_path):
    onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    out = tmp_path / "m.onnx"
    result = export(weights, "onnx", out)
    # checked on a batch of 3 while traced with 2: the batch axis is dynamic
    assert result["max_abs_diff"] is not None and result["max_abs_diff"] < 1e-4
    graph = onnx.load(str(out))
    props = {p.key: p.value for p in graph.metadata_props}
    assert props["resnetlab.model"] == "cifar_resnet20" and json.loads(props["resnetlab.std"]) == [0.25] * 3
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_cli_export_and_bad_input(weights, tmp_path, capsys):
    assert main(["export", str(weights), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 0
    assert "max |diff| vs PyTorch 0.00e+00" in capsys.readouterr().out
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    assert main(["export", str(tmp_path / "bad.safetensors"), "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.safetensors" in err[0]
    assert not (tmp_path / "m.onnx").exists()
