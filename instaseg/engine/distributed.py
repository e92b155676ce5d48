"""Process-group helpers. ``instaseg train`` under ``torchrun`` (any number of nodes) reads
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR from the environment and uses DDP: gloo on CPU,
nccl on CUDA. Without those variables everything runs in one process."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def env_world_size() -> int:
    """WORLD_SIZE set by torchrun (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> bool:
    """Join the process group torchrun describes; True if this is a multi-process run."""
    if env_world_size() <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=60))
    return True


def is_dist() -> bool:
    """True inside an initialised multi-process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    """Rank 0: the only process that writes files, logs and evaluates."""
    return get_rank() == 0


def local_rank() -> int:
    """LOCAL_RANK from torchrun (0 otherwise): the GPU index on this node."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_dist():
        dist.barrier()


def all_true(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` holds on every rank."""
    if not is_dist():
        return flag
    t = torch.tensor([0 if flag else 1], device=device)
    dist.all_reduce(t)
    return int(t.item()) == 0


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    """Leave the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
