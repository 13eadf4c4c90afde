"""The one environment probe: what a run, an experiment or a benchmark ran on.

Recorded in every run folder's ``config.json``, every ``experiment.json`` and every bench line,
so that a figure always comes with its machine (the CPU changes between sessions here: compare
figures measured in the same run, never absolute ones across machines).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import ConfigError

__all__ = ["describe", "cpu_model", "git_commit", "choose_threads", "chosen_threads"]


#: torch's own thread count before anyone changed it (its default, or ``OMP_NUM_THREADS``)
_TORCH_DEFAULT_THREADS = torch.get_num_threads()
#: the automatic choice of this process, made once: ``(threads, why)``
_auto_choice: tuple[int, str] | None = None


def choose_threads(requested: int = 0) -> str:
    """Set torch's intra-op CPU threads the one way every command does, and say what was chosen.

    ``requested`` > 0 (``threads=N``, ``--threads N``) is taken as given. Otherwise a count set
    before is kept: ``OMP_NUM_THREADS`` in the environment, or ``torch.set_num_threads`` called
    by the program. Else the threads are the cores this process may use minus the load already
    on them (the 1-minute load average, rounded down), at least one and at most torch's default:
    OpenMP threads that share a busy core spin-wait on each other (``resnetlab train demo`` on a
    2-core machine whose cores were both busy: 393 s with 2 threads, 20 s with 1). That choice
    is made once per process. Returns one line, e.g.
    ``"1 CPU thread (automatic: load 2.3 on 2 cores; threads=N to choose)"``.
    """
    global _auto_choice
    if requested < 0:
        raise ConfigError(f"threads must be >= 0 (0: automatic), got {requested}")
    current = torch.get_num_threads()
    if requested:
        threads, why = requested, f"threads={requested}"
    elif os.environ.get("OMP_NUM_THREADS"):
        threads, why = current, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    elif _auto_choice is not None and current == _auto_choice[0]:
        threads, why = _auto_choice
    elif current != _TORCH_DEFAULT_THREADS:
        threads, why = current, "set by the program; threads=N to choose"
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        _auto_choice = (max(1, min(_TORCH_DEFAULT_THREADS, cores - int(load))),
                        f"automatic: load {load:.1f} on {cores} cores; threads=N to choose")
        threads, why = _auto_choice
    torch.set_num_threads(threads)
    return f"{threads} CPU thread{'s' if threads != 1 else ''} ({why})"


@contextlib.contextmanager
def chosen_threads(requested: int = 0) -> Iterator[str]:
    """:func:`choose_threads` for the ``with`` block (its line is the value), torch's previous
    thread count restored after it: a command run in a process that goes on (a test, a notebook)
    leaves the threads as it found them."""
    previous = torch.get_num_threads()
    try:
        yield choose_threads(requested)
    finally:
        torch.set_num_threads(previous)


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
