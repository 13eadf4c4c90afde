"""The one timing loop: how many calls of a function a device completes per second.

Used by ``resnetlab bench`` (ours against a baseline) and by ``inference.optimize(runtime="auto")``
(which runtime is fastest here); GPU work is counted when it is done, not when it is queued.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

__all__ = ["sync", "calls_per_second"]


def sync(device: torch.device) -> None:
    """Wait until ``device`` has finished the work queued on it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def calls_per_second(fn: Callable[[], Any], device: torch.device, min_time: float, min_calls: int = 1) -> float:
    """Calls of ``fn`` per second, timed over at least ``min_time`` seconds and ``min_calls``
    calls, the device synchronised after each call (so GPU work is counted when done)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and calls >= min_calls:
            return calls / elapsed
