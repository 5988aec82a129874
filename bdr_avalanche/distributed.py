"""Multi-process training with ``torchrun`` and DistributedDataParallel.

One run on ``N`` processes: each process trains on its shard of every
experience (new data and memory together) with the model wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, so that the gradient
is the one of the *global* batch, ``N`` times the per-process batch. The
state that must be the same on every process is kept the same:

- the statistics of CwD and BDR follow the global batch: the batch's
  features are gathered from all processes (:func:`gather_batch`, with
  gradients for CwD), so the loss and the prior equal the single-process
  values on the whole batch;
- whole-dataset features (herding, BDR's phase statistics) are extracted
  on a shard per process and gathered back in dataset order
  (:func:`extract_features`); the herding picks are then broadcast from
  rank 0 (:func:`broadcast_object`), and so is the shuffling order of
  the in-memory loaders (:func:`broadcast_tensor`);
- the model's parameters and buffers (BatchNorm statistics, which each
  process updates on its own shard) are broadcast from rank 0 at the end
  of every experience (:func:`broadcast_module`), before the memory is
  selected and the previous model is copied.

Everything here is a no-op in a single process, so library code calls it
unconditionally. Avalanche's :data:`DistributedHelper` answers the rank and
world-size questions; :func:`init_from_env` replaces its
``init_distributed``, which picks the GPU by global rank (wrong on more
than one node) and sets the random seeds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sized
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from avalanche.distributed import DistributedHelper
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = [
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "broadcast_tensor",
    "extract_features",
    "gather_batch",
    "gather_objects",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "launched_by_torchrun",
    "rank",
    "shard_size",
    "shutdown",
    "sum_over_ranks",
    "world_size",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """Whether the environment describes a multi-process job (``torchrun``
    sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group described by ``torchrun``'s environment and
    return this process's device.

    ``device`` is the run's device: ``cuda`` gives NCCL with one GPU per
    process, ``cuda:LOCAL_RANK``; ``cpu`` gives gloo. A CUDA device with an
    index is refused: under ``torchrun`` the local rank chooses the GPU
    (``CUDA_VISIBLE_DEVICES`` chooses which GPUs are used). Without
    ``torchrun``, or if the group is already initialised, nothing is
    joined and ``device`` is returned.
    """
    if not launched_by_torchrun():
        return device
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device}: distributed training needs cpu or cuda")
    if device.type == "cuda" and device.index is not None:
        raise ValueError(
            f"device={str(device)!r}: under torchrun each process takes the GPU of "
            "its local rank; use device auto or cuda (and CUDA_VISIBLE_DEVICES to "
            "choose the GPUs)"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} "
                "visible): start at most that many processes per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        log.info(
            "process %d of %d (%s) on %s",
            rank(),
            world_size(),
            dist.get_backend(),
            device,
        )
    return device


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return DistributedHelper.is_distributed and DistributedHelper.world_size > 1


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return DistributedHelper.rank


def world_size() -> int:
    """The number of processes (1 in a single process)."""
    return DistributedHelper.world_size


def is_main_process() -> bool:
    """Rank 0, the process that logs and writes files."""
    return DistributedHelper.is_main_process


def shard_size(total: int, name: str = "batch size") -> int:
    """``total`` (a global batch size) split over the processes; it must
    divide evenly, so that every process takes the same share."""
    world = world_size()
    if total % world:
        raise ValueError(
            f"the global {name} {total} does not split over {world} processes; "
            f"use a multiple of {world}"
        )
    return total // world


def gather_batch(tensor: Tensor, differentiable: bool = False) -> Tensor:
    """The concatenation, in rank order, of ``tensor`` from every process
    (all of the same shape): the global batch of a per-process batch.

    With ``differentiable``, gradients flow back to every process's part,
    summed over the processes that use the result; since every process
    computes the same loss from the gathered batch and DDP averages the
    gradients, the model receives the gradient of that loss once.
    """
    if not is_distributed():
        return tensor
    if differentiable:
        return torch.cat(dist_nn.all_gather(tensor))
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def sum_over_ranks(tensor: Tensor) -> Tensor:
    """``tensor`` summed over the processes (a new tensor; no gradient)."""
    if not is_distributed():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every process (picklable objects)."""
    if not is_distributed():
        return obj
    return DistributedHelper.broadcast_object(obj, src=src)


def broadcast_tensor(tensor: Tensor, src: int = 0) -> Tensor:
    """``tensor`` overwritten, in place, with rank ``src``'s values on every
    process (e.g. one shuffling permutation for all); returned for
    convenience. A no-op in one process."""
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor


def gather_objects(obj: T) -> list[T]:
    """``obj`` of every process, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every process (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy the parameters and buffers of rank ``src``'s ``module`` into
    every process's (in place)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src)


def extract_features(
    recorder: Any,
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Features and labels of every sample of ``dataset``, in order, with
    ``recorder`` (a :class:`~bdr_avalanche._utils.FeatureRecorder`).

    Distributed, each process extracts the samples ``rank::world`` and the
    shards are gathered and interleaved back into dataset order, so every
    process gets the same tensors as one process would.
    """
    world, n = world_size(), len(cast(Sized, dataset))  # a dataset with a length
    if not is_distributed():
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        return recorder.extract(model, loader, device)
    per_rank = -(-n // world)
    # pad with the first samples so that every shard has per_rank samples
    indices = [(rank() + world * i) % n for i in range(per_rank)]
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size)
    features, labels = recorder.extract(model, loader, device)
    features = gather_batch(features.contiguous()).view(world, per_rank, -1)
    labels = gather_batch(labels.contiguous()).view(world, per_rank)
    # row i of shard r is sample r + world * i: interleave the shards
    features = features.transpose(0, 1).reshape(world * per_rank, -1)[:n]
    labels = labels.transpose(0, 1).reshape(-1)[:n]
    return features, labels
