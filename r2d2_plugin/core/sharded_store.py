"""The pseudo-label store sharded across DDP processes (``r2d2_store_device: sharded``).

Process r of N keeps the rows of the samples i with i mod N = r (at position i div N), 1/N of
the store. The R2-D2 arithmetic is ``PseudoLabelStore``'s, row by row, so a sharded run keeps the
replicated run's store bit for bit; only where the rows live changes:

- ``read`` (each process its own batch): the batches' indices are gathered, each owner fills in
  the rows it keeps and an all-reduce (a sum with zeros elsewhere, exact) hands every process its
  rows; ``descend`` and ``assign`` get every process's rows (``R2D2`` gathers them) and keep their
  own; R2 repredicts on each process exactly the rows it keeps, so repredictions exchange nothing;
- store-wide statistics are all-reduced;
- checkpoints hold the whole store: ``before_save`` (called by ``R2D2.evaluate``, before USB's
  rank-0 save) gathers it, so the store resumes with any store place and any number of processes
  (the DDP weights resume under the same torchrun command, docs/distributed.md).

Under DDP every method but ``state_dict`` and ``nbytes`` is collective: all processes call it.
With one process it is the replicated store.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist

from .store import STATS_CHUNK, PseudoLabelStore, check_shape


class ShardedPseudoLabelStore(PseudoLabelStore):
    """``PseudoLabelStore`` whose rows are spread over the processes of the DDP group."""

    def __init__(self, num_samples: int, num_classes: int, true_labels: torch.Tensor, dtype: str = "fp32"):
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        own_labels = torch.as_tensor(true_labels, dtype=torch.long)[self.rank::self.world]
        super().__init__(len(own_labels), num_classes, own_labels, dtype=dtype, place="device")
        self.place, self.num_samples = "sharded", num_samples
        self.snapshot: Optional[torch.Tensor] = None

    def kept(self, idx: torch.Tensor, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mine = idx % self.world == self.rank
        return torch.div(idx[mine], self.world, rounding_mode="floor"), rows[mine]

    def reduced(self, *totals: float) -> Tuple[float, ...]:
        summed = torch.tensor(totals, dtype=torch.float64, device=self.compute_device)
        if self.world > 1:
            dist.all_reduce(summed)
        return tuple(summed.tolist())

    def read(self, idx: torch.Tensor) -> torch.Tensor:
        """This process's rows of ``idx`` (collective: every process reads its own batch, all of
        the same size)."""
        idx = idx.to(self.compute_device)
        if self.world == 1:
            return self.rows(idx)
        every = [torch.empty_like(idx) for _ in range(self.world)]
        dist.all_gather(every, idx.contiguous())
        every = torch.cat(every)
        positions, where = self.kept(every, torch.arange(len(every), device=self.compute_device))
        rows = torch.zeros(len(every), self.logits.shape[1], device=self.compute_device)
        rows[where] = self.rows(positions)
        dist.all_reduce(rows)
        return rows[self.rank * len(idx):(self.rank + 1) * len(idx)]

    def full_logits(self) -> torch.Tensor:
        """The whole store (num_samples x C, kept dtype, CPU), gathered from every process in
        blocks of ``STATS_CHUNK`` rows per process (the device holds one block at a time)."""
        if self.world == 1:
            return super().full_logits()
        size = -(-self.num_samples // self.world)
        blocks = []
        for start in range(0, size, STATS_CHUNK):
            stop = min(start + STATS_CHUNK, size)
            block = torch.zeros(stop - start, self.logits.shape[1], dtype=self.logits.dtype,
                                device=self.compute_device)
            mine = self.logits[start:stop]
            block[:len(mine)] = mine
            gathered = [torch.empty_like(block) for _ in range(self.world)]
            dist.all_gather(gathered, block)
            blocks.append(torch.stack(gathered, dim=1).reshape(-1, block.shape[1]).cpu())
        return torch.cat(blocks)[:self.num_samples]

    def assign_share(self, idx: torch.Tensor, logits: torch.Tensor, pad_to: int) -> None:
        """R2: this process's share is exactly the rows it keeps; nothing is exchanged."""
        self.assign(idx, logits)

    def before_save(self) -> None:
        """Collective, just before USB's rank-0 checkpoint: the whole store for rank 0's next
        ``state_dict`` (the other processes drop their copy). One process saves its rows as they are."""
        if self.world == 1:
            return
        full = self.full_logits()
        self.snapshot = full if self.rank == 0 else None

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The whole store, as the replicated store saves it (under DDP on rank 0: the
        ``before_save`` of this iteration, kept in host memory until the next one)."""
        if self.world == 1:
            return {"logits": self.full_logits()}
        if self.snapshot is None:
            raise RuntimeError("r2d2: the sharded store was not gathered before this checkpoint")
        return {"logits": self.snapshot}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Keep this process's rows of a whole-store checkpoint."""
        logits = state["logits"]
        check_shape(logits, (self.num_samples, self.logits.shape[1]))
        self.logits = self.placed(logits[self.rank::self.world].clone())
