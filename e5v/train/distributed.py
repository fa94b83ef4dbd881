"""Data parallelism for ``accelerate launch`` / ``torchrun``: one process per device, same results.

The launcher sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (and the rendezvous address). Every rank
draws the same global micro-batch (the data order depends only on the seed), embeds its own slice,
and the slices' embeddings are all-gathered *with gradients*, so InfoNCE sees the whole global batch
as negatives, exactly like a single process would. Gradients are then summed over ranks and divided
by the world size (the gather's backward already routes every rank's loss gradient to the rank that
produced the embedding). Only rank 0 writes logs, checkpoints and the adapter. Without a launcher
this is a no-op single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    """The process group view of this process."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: list[int]) -> list[int]:
        """This rank's contiguous slice of the global micro-batch (equal sizes on every rank)."""
        if len(rows) % self.world:
            raise ValueError(f"the batch size ({len(rows)}) must be a multiple of the number of processes "
                             f"({self.world})")
        size = len(rows) // self.world
        return rows[self.rank * size:(self.rank + 1) * size]

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """(b, D) per rank -> (world * b, D) in rank order, differentiable."""
        if self.world == 1:
            return local
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(local.contiguous()))

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= self.world

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def setup(device: str | None = None) -> Dist:
    """Join the process group if a launcher started us; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if world == 1:
        return Dist(0, 1, torch.device(device or ("cuda" if cuda else "cpu")))
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank, world, torch.device(f"cuda:{local}" if cuda else "cpu"))
