"""Process-group plumbing for `torchrun`: which rank this is, its device, barriers and broadcasts.

`torchrun --nproc_per_node N -m em3 train ...` sets WORLD_SIZE/RANK/LOCAL_RANK; a plain
`python -m em3 train` is a world of one and never touches torch.distributed.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from em3.training.fit import World


def setup(device_kind: str) -> World:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); World() when single-process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def resolve_device(configured: str) -> torch.device:
    """auto → cuda if available, else cpu; under torchrun each process takes cuda:LOCAL_RANK."""
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if configured == "auto" else configured
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available; use train.device=auto or cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def broadcast(obj: Any, world: World) -> Any:
    """Rank 0's value of a picklable object, on every rank."""
    if world.size <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
