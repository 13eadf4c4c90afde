"""The one environment probe: what a run, an experiment or a benchmark ran on.

Recorded in every run folder's ``config.json``, every ``experiment.json`` and every bench line,
so that a figure always comes with its machine (the CPU changes between sessions here: compare
figures measured in the same run, never absolute ones across machines).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

__all__ = ["describe", "cpu_model", "git_commit"]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The commit of the resnetlab checkout this code runs from (None outside a git checkout)."""
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit or None


def describe(device: torch.device | str = "cpu", world_size: int = 1) -> dict[str, Any]:
    """Versions, host, device, processes, threads, CPU model and vector capability, core count,
    GPU name, the 1-minute load average (the CPU may be shared) and the git commit."""
    device = torch.device(device)
    return {
        "resnetlab": importlib.metadata.version("resnetlab"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "device": str(device),
        "world_size": world_size,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "load_avg_1min": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
        "git_commit": git_commit(),
    }
