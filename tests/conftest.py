"""Shared fixtures. Data and weights from ../shared are read in place, never copied into the repo."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RESNETLAB_SHARED", REPO.parent / "shared"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository (or $RESNETLAB_SHARED); skips when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return SHARED


def shared_folder(shared_dir: Path, relative: str, marker: str, what: str) -> Path:
    """``shared_dir / relative``, read in place; skips naming ``what`` when its ``marker`` file is absent."""
    path = shared_dir / relative
    if not (path / marker).exists():
        pytest.skip(f"{what} absent from {path}")
    return path


@pytest.fixture(scope="session")
def akamaster_dir(shared_dir: Path) -> Path:
    return shared_folder(shared_dir, "weights/cifar10-akamaster", "resnet20-12fca82f.th", "akamaster checkpoints")


@pytest.fixture(scope="session")
def cifar10_jpeg_root(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared CIFAR-10 JPEG training copy, extracted once per session: ``ROOT/train/<class>/*.jpg``."""
    tar = shared_dir / "data" / "cifar10-jpeg" / "train.tar.gz"
    if not tar.is_file():
        pytest.skip(f"CIFAR-10 JPEG copy absent: {tar}")
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    with tarfile.open(tar) as tf:
        tf.extractall(root, filter="data")
    return root


@pytest.fixture(scope="module")
def one_thread():
    """One CPU thread for a module of many small ops: on a shared 2-core machine a second OpenMP
    thread mostly waits for the first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def meta_model() -> Callable[..., nn.Module]:
    """``meta_model(name, **kwargs)``: a registered model built on the meta device (shapes only, no
    memory, no initialisation): enough for counts, keys and shapes."""
    from resnetlab import create_model

    def build(name: str, **kwargs: Any) -> nn.Module:
        with torch.device("meta"):
            return create_model(name, **kwargs)

    return build
