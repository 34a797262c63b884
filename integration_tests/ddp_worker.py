"""One process of a ``torchrun`` launch for ``test_distributed``: trains exactly as
``python -m r2d2_plugin.cli.train`` does (``prepare`` + ``fit``), then saves this process's
model, pseudo-label store (R2-D2) and results to ``OUT/rank<r>.pt``.

    torchrun --nproc_per_node=2 integration_tests/ddp_worker.py OUT --c CONFIG.yaml ...
"""
import os
import sys

import torch

from r2d2_plugin.algorithms.hooks import unwrapped
from r2d2_plugin.cli.config import get_config
from r2d2_plugin.cli.train import fit, prepare

if __name__ == "__main__":
    out, argv = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(1)
    args = get_config(argv)
    alg = prepare(args)
    results = fit(args, alg)
    saved = {"model": unwrapped(alg.model).state_dict(), "world_size": args.world_size,
             "final_acc": results["eval/final_acc"], "it": alg.it}
    if hasattr(alg, "store"):
        saved.update(store=alg.store.full_logits(), pseudo_label_acc=alg.store.accuracy(), lam=alg.lam)
    torch.save(saved, os.path.join(out, f"rank{args.rank}.pt"))
    if args.distributed:
        torch.distributed.destroy_process_group()
