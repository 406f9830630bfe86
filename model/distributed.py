"""Data-parallel training across processes and GPUs with torch.distributed.

Launch with torchrun, one process per GPU (or per CPU worker with the gloo backend):

    torchrun --nproc-per-node 4 -m model.train --dataset mnist --data-dir DIR --device cuda

`model.train.main` calls `init_from_env()`: under torchrun (WORLD_SIZE > 1 in the environment)
it joins the process group (NCCL for CUDA devices, gloo otherwise). `train_model` then wraps the
model in DistributedDataParallel, which starts every process from rank 0's parameters and
averages the gradients over the processes after each backward pass; each process takes its
share (DistributedSampler: a seeded permutation per epoch, split by rank) of every global batch
of `batch_size` images, batch_size / world size each, so the optimizer sees the gradient of
the mean loss over the global batch, as in a single process. Each process draws its own noise
(seeded from the run's seed and its rank). Rank 0 evaluates and writes the run's files.
"""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "rank_and_world", "local_device", "wrap", "epoch_sampler",
           "shutdown"]


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR...); False when
    not launched by torchrun (a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    return True


def rank_and_world() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: torch.device) -> torch.device:
    """A process's own GPU (LOCAL_RANK) when training on CUDA; the CPU stays the CPU."""
    if device.type == "cuda":
        index = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return device


def wrap(model: torch.nn.Module, device: torch.device):
    """The model under DistributedDataParallel (gradients averaged over the processes)."""
    # Imported here: single-process runs (and the CLI's start-up) do without it.
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def epoch_sampler(n: int, seed: int):
    """This process's share of a seeded random permutation of n training images per epoch
    (a DistributedSampler; call set_epoch(epoch) first)."""
    from torch.utils.data import DistributedSampler

    rank, world = rank_and_world()
    return DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                              seed=seed, drop_last=False)


def shutdown() -> None:
    """Leave the process group. Call it once no DistributedDataParallel wrapper is in use."""
    if dist.is_available() and dist.is_initialized():
        # A wrapper no longer referenced can still hold the group through reference cycles;
        # collected now, the group's threads are joined here and not while the interpreter
        # exits, where a thread still joinable aborts the process (SIGABRT).
        gc.collect()
        dist.destroy_process_group()
