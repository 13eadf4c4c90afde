"""The processes of a ``torchrun`` job: the process group, the few collectives the engine uses,
and the stop request (SIGINT/SIGTERM) they agree on."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Processes", "process_group", "StopRequest"]


@dataclass(frozen=True)
class Processes:
    """This process's place in the job: ``rank`` of ``world``, ``local_rank`` on its machine, and
    the device the collectives run on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Process 0 writes the run folder and takes the schedule's decisions."""
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the processes (float64)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, values: list[float]) -> list[float]:
        """Process 0's ``values`` on every process: a decision taken once."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return t.tolist()

    def share_buffers(self, model: nn.Module) -> None:
        """Process 0's buffers (BN running statistics, which each process updates from its own
        part of the batch) on every process, so that all of them evaluate the same model."""
        if self.world > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        """Wait for every process."""
        if self.world > 1:
            dist.barrier()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Processes]:
    """:class:`Processes` under torchrun (``WORLD_SIZE`` > 1), else the single process. A process
    group created here is destroyed on exit; one the caller created is left to the caller.
    On CUDA each process takes the GPU of its ``LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Processes(device=device)
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        backend = "nccl" if device.type == "cuda" else "gloo"
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is not None and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun's agent keeps ONE store for all restarts (--max-restarts): the dead attempt's
            # gloo/nccl addresses are still in it and a restarted rank would connect to them
            # ("connectFullMesh ... Connection refused", pytorch/pytorch#135712). Each attempt
            # rendezvouses under its own prefix of the agent's store instead.
            agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False)
            dist.init_process_group(backend, store=dist.PrefixStore(f"resnetlab/attempt{restart}", agent),
                                    rank=int(os.environ["RANK"]), world_size=world)
        else:
            dist.init_process_group(backend)
    try:
        yield Processes(dist.get_rank(), world, local_rank, device)
    finally:
        if owned:
            dist.destroy_process_group()


class StopRequest:
    """The one interrupt path of a training loop: inside ``with``, SIGINT (Ctrl-C) and SIGTERM (a
    scheduler's stop) only set a flag, so a step is never cut in half; the loop asks
    :meth:`requested` before each step, saves a checkpoint and returns. The processes of a job
    agree on the flag every ``every`` steps (one all-reduce)."""

    def __init__(self, processes: Processes = Processes(), every: int = 1) -> None:
        self.processes, self.every = processes, every
        self.raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.raised = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def requested(self, step: int) -> bool:
        """Whether to stop before ``step``: at once in one process, at agreed steps in a job."""
        if self.processes.world == 1:
            return self.raised
        return step % self.every == 0 and self.processes.all_sum([float(self.raised)])[0] > 0
