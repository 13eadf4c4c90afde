"""TensorBoard event files: read back with TensorBoard's own reader; a missing package or a write error never fails a run."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import resnetlab.tensorboard as tb
from resnetlab.tensorboard import TensorBoardLog


def _accumulator(log_dir: Path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                            reason="the tensorboard package (resnetlab[tensorboard]) is not installed")
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_scalars_and_image_read_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard package (resnetlab[tensorboard]) is not installed")
    picture = np.zeros((30, 50, 4), dtype=np.uint8)
    picture[:, :25] = (200, 10, 10, 255)  # left half red, right half transparent (white)
    Image.fromarray(picture, "RGBA").save(tmp_path / "curves.png")
    log = TensorBoardLog(tmp_path)
    assert log.enabled
    logged = {0: (2.30, 0.91, 0.1), 10: (1.75, 0.62, 0.1), 20: (1.25, 0.44, 0.01)}
    for step, (loss, err, lr) in logged.items():
        log.scalars(step, {"train/loss": loss, "train/err": err, "train/lr": lr,
                           "val/err": 0.5 if step == 20 else None})
    log.image("curves", tmp_path / "curves.png", 20)
    log.close()
    log.scalars(30, {"train/loss": 1.0})  # after close: nothing, no error

    acc = _accumulator(tmp_path / "tensorboard")
    assert set(acc.Tags()["scalars"]) == {"train/loss", "train/err", "train/lr", "val/err"}
    for i, tag in enumerate(("train/loss", "train/err", "train/lr")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [0, 10, 20]
        assert [e.value for e in events] == pytest.approx([v[i] for v in logged.values()], rel=1e-6)
    assert [(e.step, e.value) for e in acc.Scalars("val/err")] == [(20, 0.5)]  # None values are skipped
    (image,) = acc.Images("curves")
    assert (image.step, image.width, image.height) == (20, 50, 30)
    shown = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
    assert (shown[:, :25] == (200, 10, 10)).all() and (shown[:, 25:] == 255).all()


def test_missing_package_prints_one_line_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    monkeypatch.setattr(tb, "_missing_reported", False)
    for run in ("a", "b"):
        log = TensorBoardLog(tmp_path / run)
        assert not log.enabled
        log.scalars(1, {"train/loss": 1.0})
        log.image("curves", tmp_path / "absent.png", 1)
        log.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [tb.MISSING_MESSAGE]
    assert err[0].startswith("tensorboard not installed:") and "pip install 'resnetlab[tensorboard]'" in err[0]
    assert not (tmp_path / "a" / "tensorboard").exists()
    TensorBoardLog(tmp_path / "c", enabled=False)
    assert capsys.readouterr().err == ""


def test_write_errors_turn_the_log_off(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard package (resnetlab[tensorboard]) is not installed")
    (tmp_path / "tensorboard").write_text("a file where the folder should be\n")
    log = TensorBoardLog(tmp_path)
    log.scalars(0, {"train/loss": 1.0})
    assert not log.enabled
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "turned off" in line and "the run continues" in line

    log = TensorBoardLog(tmp_path / "ok")
    assert log.enabled

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    log._writer.add_scalar = full_disk
    for step in range(3):
        log.scalars(step, {"train/loss": 1.0})
    log.image("curves", tmp_path / "absent.png", 3)
    log.close()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "turned off" in line and "No space left on device" in line
