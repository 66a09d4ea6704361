"""Data-parallel dictionary learning: Semi-NMF and NMF under ``torchrun``, each rank on its own rows.

The block coordinate descent solver (:mod:`mmconcepts.decompose._solver`) needs of the data only sums over
samples: ``A = V^T V`` (K x K), ``C = V^T Z`` (K x D), the squared error and the L1 mass. Each rank computes
them over the rows it reads (:func:`my_rows`: a contiguous range of the layer's rows, whatever the number of
shards; a rank with no rows adds zeros) and :class:`Collective` sums them over the ranks (``all_reduce``), so
every rank takes the same concept step; rank 0's concepts are broadcast after each step (a concept restarted
on a badly explained sample takes rank 0's sample) and at the start (rank 0 seeds them). A store larger than
one machine's memory or disk is learnt with each machine reading only its part; the training activations are
gathered on rank 0 in store order.

:class:`Local` is the single-process collective: every call is the identity.
"""

from __future__ import annotations

import os

import torch


class Local:
    """One process: sums, broadcasts and gathers are the identity."""

    rank, world = 0, 1

    def sum_(self, *tensors: torch.Tensor) -> None:
        """Sum each tensor over the ranks, in place."""

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's value of ``tensor``, on every rank."""
        return tensor

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Every rank's rows, in rank order, on rank 0 (``None`` elsewhere)."""
        return rows


class Collective(Local):
    """The ranks of a ``torch.distributed`` launch (gloo on CPUs, NCCL on GPUs)."""

    def __init__(self):
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") \
            if dist.get_backend() == "nccl" else torch.device("cpu")

    def _on(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if tensor.device == self.device else tensor.to(self.device)

    def sum_(self, *tensors: torch.Tensor) -> None:
        for tensor in tensors:
            moved = self._on(tensor)
            self.dist.all_reduce(moved)
            if moved is not tensor:
                tensor.copy_(moved)

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        moved = self._on(tensor.contiguous())
        self.dist.broadcast(moved, src=0)
        return moved.to(tensor.device)

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor | None:
        parts = [None] * self.world
        self.dist.all_gather_object(parts, rows.cpu())
        return torch.cat(parts) if self.rank == 0 else None

    def barrier(self) -> None:
        self.dist.barrier()


def collective() -> Local:
    """The collective of this process: :class:`Collective` under a launcher (``WORLD_SIZE`` > 1), else
    :class:`Local`."""
    return Collective() if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else Local()


def row_range(n_rows: int, rank: int, world: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` of ``n_rows`` that ``rank`` of ``world`` reads: contiguous, in rank order (store
    order is rank order), sizes differing by at most one, the larger parts first (rank 0, which seeds the
    concepts, has ``ceil(n_rows / world)``); a rank beyond the rows gets an empty range."""
    share, extra = divmod(n_rows, world)
    start = rank * share + min(rank, extra)
    return start, start + share + (rank < extra)


def my_rows(n_rows: int, group: Local) -> tuple[int, int]:
    """The rows ``[start, stop)`` this rank reads (:func:`row_range`)."""
    return row_range(n_rows, group.rank, group.world)
