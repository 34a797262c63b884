"""The collectives the pseudo-label store needs under DDP (``torch.distributed`` only)."""
from __future__ import annotations

import hashlib
from typing import Any, Tuple

import torch
import torch.distributed as dist


def in_group() -> bool:
    """Whether this process is in a process group of more than one process."""
    return dist.is_initialized() and dist.get_world_size() > 1


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` (same shape everywhere), concatenated in rank order."""
    if not in_group():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_rows(idx: torch.Tensor, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every process's ``idx`` and ``rows`` (same shapes on every process), in rank order."""
    return all_gather_cat(idx), all_gather_cat(rows)


def gather_padded(idx: torch.Tensor, rows: torch.Tensor, length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``gather_rows`` for shards of up to ``length`` rows: shorter shards are padded with index
    -1, which the result leaves out."""
    pad = length - idx.shape[0]
    idx = torch.cat((idx, idx.new_full((pad,), -1)))
    rows = torch.cat((rows, rows.new_zeros((pad, *rows.shape[1:]))))
    idx, rows = gather_rows(idx, rows)
    keep = idx >= 0
    return idx[keep], rows[keep]


def store_digest(logits: torch.Tensor) -> torch.Tensor:
    """The first 8 bytes of the SHA-256 of the store's bytes, as one int64."""
    data = logits.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return torch.tensor([int.from_bytes(hashlib.sha256(data).digest()[:8], "little", signed=True)])


def check_stores_agree(store: Any) -> None:
    """Raise if a replicated pseudo-label store differs between processes (collective)."""
    if not in_group():
        return
    digests = all_gather_cat(store_digest(store.logits).to(store.device)).cpu()
    if not bool((digests == digests[0]).all()):
        raise RuntimeError(f"r2d2: the pseudo-label store differs between processes (SHA-256 "
                           f"prefixes {digests.tolist()}); report this as a bug")
