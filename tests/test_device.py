"""``resnetlab.device.resolve_device``: the one ``--device`` parser of train, eval, predict and bench."""

from __future__ import annotations

import pytest
import torch

from resnetlab.device import resolve_device
from resnetlab.errors import ConfigError


def test_auto_and_cpu() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "meta", ""])
def test_unknown_devices_are_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:0")
