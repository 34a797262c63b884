"""r2d2_strong brought step by step to FixMatch (issue 16, validation split): writes the configs of
``fixmatch_reduction/`` from ``configs/r2d2_strong_fashionmnist_{40,250}.yaml``.

With a reprediction before every iteration (stages 0 / 0 / 3000 / 0, ``r2d2_repredict_period: 1``)
from the weak view, each row the strong view trains on is the network's weak-view prediction of
that very step, as in FixMatch; ``r2d2_lr_r2`` then holds one lr per iteration:

- ``*_stepped.yaml``: the FixMatch-like row's lrs (0.05 for 1894 iterations, then 0.04 / 0.03 /
  0.02 / 0.01 for 276, 276, 276, 278): that row without D2's stale re-reads;
- ``*_cosine.yaml``: USB's cosine schedule (its ``get_cosine_schedule_with_warmup``), FixMatch's lr
  at iteration k: 0.05 cos(7πk / 48000).

Both take the FixMatch-like row's other options (``pool50k.md``): no warm-up, α 4/3 (FixMatch's
unlabeled weight per image; λ 37.5, the same store step), β 0, R2 from the weak view.
Usage, from the repository root: python results/fashionmnist_val/fixmatch_reduction.py
"""
import os

import torch
from ruamel.yaml import YAML
from semilearn.core.utils import get_cosine_schedule_with_warmup

HERE = os.path.dirname(os.path.abspath(__file__))
ITERATIONS, LR = 3000, 0.05
STEPPED = [LR] * 1894 + [0.04] * 276 + [0.03] * 276 + [0.02] * 276 + [0.01] * 278
COSINE_FACTOR = get_cosine_schedule_with_warmup(torch.optim.SGD([torch.zeros(1)], lr=LR), ITERATIONS).lr_lambdas[0]
COSINE = [round(LR * COSINE_FACTOR(k), 8) for k in range(ITERATIONS)]


def main() -> None:
    yaml = YAML(typ="safe")
    yaml.default_flow_style = None
    yaml.width = 100
    os.makedirs(os.path.join(HERE, "fixmatch_reduction"), exist_ok=True)
    for labels in (40, 250):
        with open(f"configs/r2d2_strong_fashionmnist_{labels}.yaml") as f:
            config = yaml.load(f)
        for name, lrs in (("stepped", STEPPED), ("cosine", COSINE)):
            assert len(lrs) == ITERATIONS
            config.update(r2d2_warmup_iter=0, r2d2_d2_iter=0, r2d2_r2_iter=ITERATIONS,
                          r2d2_finetune_iter=0, r2d2_repredict_period=1, r2d2_lr_r2=lrs,
                          r2d2_alpha=4 / 3, r2d2_lambda=37.5, r2d2_beta=0.0,
                          r2d2_repredict_from="weak_view", r2d2_lazy_repredict=False)
            with open(os.path.join(HERE, "fixmatch_reduction", f"{labels}_{name}.yaml"), "w") as f:
                f.write(f"# Made by results/fashionmnist_val/fixmatch_reduction.py from "
                        f"configs/r2d2_strong_fashionmnist_{labels}.yaml.\n")
                yaml.dump(config, f)


if __name__ == "__main__":
    main()
