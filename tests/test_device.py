"""``resnetlab.device.resolve_device``: the one ``--device`` parser of train, eval, predict and bench."""

from __future__ import annotations

import subprocess
import sys

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


KEEP_MEMORY_PROBE = """
import resource, sys, torch
from resnetlab.device import keep_freed_memory
torch.set_num_threads(1)
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
x = torch.randn(64, 16, 32, 32)
conv = torch.nn.Conv2d(16, 16, 3, padding=1)
def step():
    conv(torch.relu(x)).sum().backward()
for _ in range(3):  # the heap grows to the step's peak in the first steps, then is reused
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_kept_memory_is_not_page_faulted_in_anew_each_step():
    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", KEEP_MEMORY_PROBE, mode], capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0], int(out[1])

    (_, default), (kept, keep) = faults("default"), faults("keep")
    assert kept == "True"
    # 4 MB activations: by default each one is a fresh mmap, 1,000 faults a tensor
    assert default > 2000 and keep < default / 10, (default, keep)
