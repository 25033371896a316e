"""Data-parallel training under torchrun (DDP): gloo on CPU, nccl on CUDA.

`cgs train` needs no flag: under torchrun (which sets WORLD_SIZE and MASTER_ADDR) the run joins
the process group, even with a single process, so one GPU exercises the same nccl/DDP path.
Batch sizes are per rank (the global batch is world x batch), and the learning rate is not
scaled unless ``lr_scaling="linear"`` (lr x world). Only rank 0 validates and writes files.
The EMA teacher stays identical on every rank because every rank updates it from identical
student weights and from BatchNorm statistics averaged over the ranks after each step.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" or "nccl" inside a torchrun process group

    def describe(self) -> str:
        if self.backend is None:
            return "single process"
        return f"torchrun: {self.world} process(es), {self.backend} backend, this is rank {self.rank}"

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistContext:
    """Join the torchrun process group when there is one; a single process otherwise."""
    if "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=local_rank,
        backend=str(dist.get_backend()),
    )


def any_rank(flag: bool, context: DistContext, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (stop requests, deadlines)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_int(value: int, context: DistContext, device: torch.device) -> int:
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=device)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


@torch.no_grad()
def average_floating_buffers(module: torch.nn.Module, context: DistContext) -> None:
    """Average BatchNorm running statistics over the ranks (each rank saw different slices)."""
    if not context.enabled:
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    dist.all_reduce(flat)
    flat /= context.world
    offset = 0
    for buffer in buffers:
        buffer.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
        offset += buffer.numel()


def share_from_main(value: Any, context: DistContext) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object); unchanged when not distributed."""
    if not context.enabled:
        return value
    box = [value if context.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def state_hash(*modules: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_replicas_identical(step: int, context: DistContext, *modules: torch.nn.Module) -> str:
    """Raise if the given modules differ between ranks; returns this rank's hash."""
    mine = state_hash(*modules)
    if context.enabled:
        gathered: list[str | None] = [None] * context.world
        dist.all_gather_object(gathered, mine)
        if len(set(gathered)) != 1:
            raise RuntimeError(f"replicas diverged at step {step}: {gathered}")
    return mine


def shutdown(context: DistContext, all_ranks_done: bool = False) -> None:
    """Leave the process group. After a run every rank finished, wait for all of them first: a
    rank that tears gloo down while a peer still talks to it can abort ("terminate called
    without an active exception"). After a failure, leave at once (peers may never arrive)."""
    if context.enabled and dist.is_initialized():
        if all_ranks_done:
            dist.barrier()
        dist.destroy_process_group()


def wrap_for_data_parallel(student: torch.nn.Module, context: DistContext, runtime) -> torch.nn.Module:
    """DDP around the student when running distributed (BN buffers are averaged after each step)."""
    if not context.enabled:
        return student

    device_ids = [context.local_rank] if runtime.device.type == "cuda" else None
    # BN buffers are not broadcast from rank 0 at each forward (they are averaged after each step);
    # torch 2.13 renamed the switch and warns on the old name, a raw library line on every rank.
    # At init the ranks' buffers are the same (one checkpoint), so syncing them then changes nothing.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return DistributedDataParallel(student, device_ids=device_ids, forward_sync_buffers=False)
    return DistributedDataParallel(student, device_ids=device_ids, broadcast_buffers=False)


def broadcast_float(value: float, context: DistContext, device: torch.device) -> float:
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())
