"""Model-hub folders: save_pretrained / from_pretrained, the hub cache
offline, `resnetlab export --format hub`, and timm loading what resnetlab wrote."""

from __future__ import annotations

import json
import socket
import sys

import pytest
import torch

import resnetlab
from resnetlab import create_model
from resnetlab.cli import main
from resnetlab.errors import ConfigError, WeightsError
from resnetlab.weights import save_weights

RESULT = {"model": "w.safetensors", "dataset": "imagenet", "split": "val", "protocol": "10crop", "n": 50000,
          "correct": 34375, "top1_acc": 0.6875, "top5_acc": 0.875, "top1_err": 0.3125, "top5_err": 0.125}


@pytest.fixture
def offline(monkeypatch):
    """No connection can be opened, and huggingface_hub is in offline mode."""

    def refuse(*args, **kwargs):
        raise OSError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_constants = pytest.importorskip("huggingface_hub.constants", reason="the hub extra is not installed")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read once at import time


def _model(name: str = "resnet18", **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    for m in model.modules():  # random BN statistics: a wrong mapping shows in the outputs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def test_folder_round_trip_config_and_card(tmp_path):
    model = _model("resnet50", variant="v1", widths=[4, 8, 16, 32], stem_pool="caffe", num_classes=4)
    meta = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "classes": ["cat", "dog", "eel", "fox"],
            "source": "caffe:ResNet-50-model.caffemodel", "evaluation": [RESULT]}
    folder = resnetlab.save_pretrained(model, tmp_path / "r50", meta)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet50" and config["num_classes"] == 4
    assert config["kwargs"] == {"variant": "v1", "widths": [4, 8, 16, 32], "stem_pool": "caffe", "num_classes": 4}
    assert config["input_size"] == [3, 224, 224] and config["classes"] == meta["classes"]
    assert config["mean"] == meta["mean"] and config["evaluation"] == [RESULT]
    cfg = config["pretrained_cfg"]
    assert cfg["mean"] == meta["mean"] and cfg["std"] == meta["std"] and cfg["num_classes"] == 4
    assert cfg["first_conv"] == "conv1" and cfg["classifier"] == "fc" and cfg["crop_pct"] == 0.875
    assert cfg["paper_ids"] == "arXiv:1512.03385" and cfg["label_names"] == meta["classes"]
    assert config["timm"]["model"] is None and "variant='v1'" in config["timm"]["note"]
    card = (folder / "README.md").read_text()
    for text in ["# resnet50", "Deep Residual Learning for Image Recognition", "the paper's v1",
                 "MSRA Caffe models", "widths [4, 8, 16, 32]", "caffe:ResNet-50-model.caffemodel",
                 "| imagenet | val | 10crop | 50000 | 31.25 % | 12.50 % |", "Not for timm"]:
        assert text in card, text

    rebuilt = resnetlab.from_pretrained(folder)  # the model, as in Hugging Face and timm; metadata on it
    got = rebuilt.pretrained_meta
    assert got.model == "resnet50" and got.kwargs == config["kwargs"] and got.classes == meta["classes"]
    assert rebuilt.pretrained_cfg == cfg and rebuilt.pretrained_cfg["architecture"] == "resnet50"
    assert not rebuilt.training
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_bad_folders_and_arguments(tmp_path):
    model = _model("resnet18", widths=[4, 8, 16, 32], num_classes=3)
    with pytest.raises(ConfigError, match="unknown meta key.*'labels'"):
        resnetlab.save_pretrained(model, tmp_path / "a", {"labels": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match="missing top1_err"):
        resnetlab.save_pretrained(model, tmp_path / "a", {"evaluation": {"dataset": "x", "split": "val",
                                                                         "protocol": "center", "n": 1}})
    folder = resnetlab.save_pretrained(model, tmp_path / "ok")  # no meta: ImageNet mean/std, class indices
    config = json.loads((folder / "config.json").read_text())
    assert config["mean"] == [0.485, 0.456, 0.406] and config["classes"] == ["0", "1", "2"]
    assert "No evaluation results" in (folder / "README.md").read_text()
    config["kwargs"]["variant"] = "v1.5"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="config.json: says 'resnet18'.*v1.5.*but model.safetensors holds"):
        resnetlab.from_pretrained(folder)
    for text, reason in (("{\"architecture\": ", "unreadable JSON"), ("[1]", "not a JSON object")):
        (folder / "config.json").write_text(text)
        with pytest.raises(WeightsError, match=f"config.json: {reason}"):
            resnetlab.from_pretrained(folder)
    with pytest.raises(WeightsError, match="not a model folder"):
        resnetlab.from_pretrained(tmp_path / "missing")
    with pytest.raises(WeightsError, match="no model.safetensors"):
        resnetlab.from_pretrained(tmp_path)


def _hub_cache(tmp_path, folder, repo: str = "resnetlab/r18-test", revision: str = "a1b2c3d4" * 5):
    """A huggingface_hub cache holding ``repo``: models--ORG--NAME/{refs/main, snapshots/REV/...}."""
    root = tmp_path / "hf-cache"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for item in folder.iterdir():
        (snapshot / item.name).write_bytes(item.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return root


def test_from_hf_hub_through_the_offline_cache(tmp_path, offline):
    model = _model("resnet18", variant="v1.5", widths=[4, 8, 16, 32], num_classes=3)
    folder = resnetlab.save_pretrained(model, tmp_path / "out", {"classes": ["a", "b", "c"]})
    cache = _hub_cache(tmp_path, folder)
    x = torch.randn(1, 3, 40, 40)
    for name in ["hf-hub:resnetlab/r18-test", "hf-hub:resnetlab/r18-test@" + "a1b2c3d4" * 5]:
        rebuilt = resnetlab.from_pretrained(name, cache_dir=cache)
        assert rebuilt.pretrained_meta.classes == ["a", "b", "c"]
        assert rebuilt.pretrained_cfg["label_names"] == ["a", "b", "c"]
        with torch.no_grad():
            assert torch.equal(rebuilt(x), model(x))
    with pytest.raises(WeightsError, match="hf-hub:resnetlab/absent: not available from the hub or its cache"):
        resnetlab.from_pretrained("hf-hub:resnetlab/absent", cache_dir=cache)


def test_hf_hub_without_huggingface_hub_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"needs huggingface_hub: pip install 'resnetlab\[hub\]'"):
        resnetlab.from_pretrained("hf-hub:org/name")


def test_cli_export_hub(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    save_weights(_model("cifar_resnet20"), weights, mean=[0.5] * 3, std=[0.25] * 3, source="test")
    assert main(["export", str(weights), "--format", "hub", "-o", str(tmp_path / "hub")]) == 0
    assert "as hub, max |diff| vs PyTorch 0.00e+00" in capsys.readouterr().out
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["architecture"] == "cifar_resnet20" and config["source"] == "test"
    assert config["pretrained_cfg"]["crop_pct"] == 1.0  # CIFAR-size models are tested on the whole image
    assert main(["export", str(tmp_path / "absent.safetensors"), "--format", "hub", "-o", str(tmp_path / "h2")]) == 2
    assert "absent.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet18d"])
def test_timm_loads_a_v15_resnet_with_the_same_logits(tmp_path, offline, name):
    """timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=...)) on what
    save_pretrained wrote gives resnetlab's logits; nothing is downloaded (connections refused)."""
    timm = pytest.importorskip("timm", reason="timm (the dev extra) is the reference here")
    model = _model(name, variant="v1.5")
    folder = resnetlab.save_pretrained(model, tmp_path / name)
    theirs = timm.create_model(name, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors"))).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, logits = model(x), theirs(x)
    assert float((logits - ours).abs().max()) <= 1e-5 * float(ours.abs().max())


def test_timm_takes_the_class_count_and_normalization_from_config(tmp_path, offline):
    """With config.json's pretrained_cfg as the overlay, timm also takes the class count (else it
    would drop a 10-way classifier) and the input normalization."""
    timm = pytest.importorskip("timm", reason="timm (the dev extra) is the reference here")
    small = _model("resnet18", variant="v1.5", num_classes=10)
    folder = resnetlab.save_pretrained(small, tmp_path / "small", {"mean": [0.5] * 3, "std": [0.25] * 3})
    config = json.loads((folder / "config.json").read_text())
    assert config["timm"]["model"] == "resnet18"
    cfg = config["pretrained_cfg"]
    theirs = timm.create_model("resnet18", pretrained=True, num_classes=10,
                               pretrained_cfg_overlay=dict(cfg, file=str(folder / "model.safetensors"))).eval()
    data = timm.data.resolve_data_config({}, model=theirs)
    assert list(data["mean"]) == [0.5] * 3 and list(data["std"]) == [0.25] * 3
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), small(x), rtol=1e-5, atol=1e-5)
