"""Weights files: round trip, metadata contract, refusals, and hostile/corrupt files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from resnetlab import create_model
from resnetlab.errors import WeightsError
from resnetlab.weights import WeightsMeta, check_state_dict, load_weights, read_meta, save_weights

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", num_classes=4).eval()
    path = tmp_path_factory.mktemp("w") / "m.safetensors"
    save_weights(model, path, mean=MEAN, std=STD, classes=["a", "b", "c", "d"], source="test")
    return model, path


def test_round_trip_rebuilds_model_and_outputs(saved):
    model, path = saved
    loaded, meta = load_weights(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    assert meta.model == "cifar_resnet20" and meta.kwargs["num_classes"] == 4
    assert meta.classes == ["a", "b", "c", "d"] and meta.input_size == (3, 32, 32)
    assert meta.mean == pytest.approx(list(MEAN)) and meta.source == "test"
    assert loaded.resnetlab_name == "cifar_resnet20"


def test_metadata_keys_are_the_contract(saved):
    _, path = saved
    with safe_open(str(path), "pt") as f:
        md = f.metadata()
    for key in ("model", "kwargs", "mean", "std", "input_size", "classes", "source"):
        assert f"resnetlab.{key}" in md
    assert md["resnetlab.model"] == "cifar_resnet20"
    assert json.loads(md["resnetlab.kwargs"])["num_classes"] == 4
    assert json.loads(md["resnetlab.input_size"]) == [3, 32, 32]
    assert json.loads(md["resnetlab.classes"]) == ["a", "b", "c", "d"]


def test_per_pixel_mean_and_default_classes(tmp_path):
    model = create_model("cifar_resnet20")
    mean = torch.rand(3, 32, 32).tolist()
    save_weights(model, tmp_path / "p.safetensors", mean=mean, std=[1.0, 1.0, 1.0])
    meta = read_meta(tmp_path / "p.safetensors")
    assert torch.tensor(meta.mean).shape == (3, 32, 32)
    assert meta.classes == [str(i) for i in range(10)]


def test_save_refuses_bad_arguments(tmp_path):
    model = create_model("cifar_resnet20")
    with pytest.raises(WeightsError, match="3 class names for a model with 10"):
        save_weights(model, tmp_path / "x.safetensors", mean=MEAN, std=STD, classes=["a", "b", "c"])
    with pytest.raises(WeightsError, match="std must be finite and positive"):
        save_weights(model, tmp_path / "x.safetensors", mean=MEAN, std=(0.2, 0.0, 0.2))
    with pytest.raises(WeightsError, match="create_model"):
        save_weights(torch.nn.Linear(2, 2), tmp_path / "x.safetensors", mean=MEAN, std=STD)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_atomic_write_keeps_previous_file(saved, tmp_path, monkeypatch):
    model, path = saved
    target = tmp_path / "keep.safetensors"
    target.write_bytes(path.read_bytes())
    import resnetlab.weights

    def boom(*a, **k):
        Path(a[1]).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(resnetlab.weights, "save_file", boom)
    with pytest.raises(OSError):
        save_weights(model, target, mean=MEAN, std=STD)
    assert target.read_bytes() == path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]


def test_load_into_wrong_architecture_names_tensors(saved):
    _, path = saved
    with pytest.raises(WeightsError, match=r"fc.weight \(4, 64\) \(model wants \(10, 64\)\)"):
        load_weights(path, model=create_model("cifar_resnet20"))
    with pytest.raises(WeightsError, match=r"missing: layer1.3.conv1.weight"):
        load_weights(path, model=create_model("cifar_resnet32", num_classes=4))
    from resnetlab.models.cifar_resnet import cifar_resnet

    with pytest.raises(WeightsError, match=r"unexpected: layer1.2.bn1.bias.*\(36 in all\)"):
        load_weights(path, model=cifar_resnet(depth=14, num_classes=4))


def test_check_state_dict_accepts_exact_match():
    model = create_model("cifar_resnet20")
    check_state_dict(model, model.state_dict(), "x")


def _truncations(data: bytes) -> list[bytes]:
    return [b"", data[:4], data[:8], data[:100], data[: len(data) // 2], data[:-1]]


def test_truncated_and_foreign_files_are_one_clear_error(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    for i, cut in enumerate(_truncations(data)):
        p = tmp_path / f"t{i}.safetensors"
        p.write_bytes(cut)
        with pytest.raises(WeightsError, match=str(p)):
            load_weights(p)
    pth = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, pth)
    with pytest.raises(WeightsError, match="not a safetensors file"):
        load_weights(pth)
    with pytest.raises(WeightsError, match="no such file"):
        load_weights(tmp_path / "absent.safetensors")
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(WeightsError, match="not a resnetlab weights file.*resnetlab import"):
        load_weights(plain)


def test_metadata_naming_unknown_model_is_refused(saved, tmp_path):
    _, path = saved
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        md = dict(f.metadata())
    md["resnetlab.model"] = "resnet9000"
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata=md)
    with pytest.raises(WeightsError, match="cannot build 'resnet9000'"):
        load_weights(bad)


def _metadata_strategy():
    text = st.text(max_size=30)
    jsonish = st.recursive(
        st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | text,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=3),
        max_leaves=10,
    )
    value = text | jsonish.map(json.dumps)
    keys = st.sampled_from(
        [f"resnetlab.{k}" for k in ("model", "kwargs", "mean", "std", "input_size", "classes", "source")]
    )
    return st.dictionaries(keys, value, max_size=7)


@settings(max_examples=200, deadline=None)
@given(_metadata_strategy())
def test_metadata_reader_never_crashes(md):
    """Property: any metadata either parses to a valid WeightsMeta or is a WeightsError."""
    try:
        meta = WeightsMeta.from_metadata(md)
    except WeightsError:
        return
    assert WeightsMeta.from_metadata(meta.to_metadata()) == meta


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6))
def test_fuzz_mutated_files(saved, tmp_path, flips):
    """Fuzz round: a weights file with mutated bytes loads or is refused with WeightsError."""
    _, path = saved
    data = bytearray(path.read_bytes())
    # Most mutations aim at the 8-byte length and the JSON header, where parsing happens.
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    for pos, byte in flips:
        data[pos % (8 + n + 64)] = byte
    p = tmp_path / "fuzz.safetensors"
    p.write_bytes(bytes(data))
    try:
        load_weights(p)
    except WeightsError:
        pass


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    """Files are written through mkstemp (0600) but must end up readable like any open() file."""
    import os
    import stat

    from resnetlab.files import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.md", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644
