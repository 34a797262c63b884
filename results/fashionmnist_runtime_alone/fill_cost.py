"""Cost of one lazy-R2 fill row: the frozen ``digits_cnn`` (3 x 28 x 28, Fashion-MNIST's input)
in eval mode, as it was (BatchNorm after each convolution) and with its BatchNorm folded into the
convolutions (``fold_batchnorm``, what R2 predicts with now), on one torch thread. Milliseconds per
row: the median over 7 repeats of 20 batches; the batch sizes a fill sees (48: a D2 step's
unlabeled rows) and a larger one. Writes fill_cost.md beside this file.
Usage: python results/fashionmnist_runtime_alone/fill_cost.py"""
import copy
import os
import statistics
import time

import torch

from r2d2_plugin.algorithms.hooks import fold_batchnorm
from r2d2_plugin.usb.nets import digits_cnn

torch.manual_seed(0)
torch.set_num_threads(1)
net = digits_cnn(num_classes=10)
with torch.no_grad():  # move BatchNorm's running statistics away from their initial 0 / 1
    for _ in range(20):
        net(torch.randn(64, 3, 28, 28))
net.eval().requires_grad_(False)
folded = fold_batchnorm(copy.deepcopy(net))


def ms_per_row(model: torch.nn.Module, x: torch.Tensor) -> float:
    times = []
    with torch.no_grad():
        for _ in range(3):
            model(x)
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(20):
                model(x)
            times.append((time.perf_counter() - start) / (20 * len(x)))
    return 1e3 * statistics.median(times)


lines = ["| batch | as it was, ms / row | BatchNorm folded, ms / row | folded / as it was | max abs logit difference |",
         "|---|---|---|---|---|"]
for batch in (48, 512):
    x = torch.randn(batch, 28, 28, 3).permute(0, 3, 1, 2)  # channels-last, as ArrayEvalView serves it
    before, after = ms_per_row(net, x), ms_per_row(folded, x)
    with torch.no_grad():
        diff = (net(x)["logits"] - folded(x)["logits"]).abs().max().item()
    lines.append(f"| {batch} | {before:.4f} | {after:.4f} | {after / before:.2f} | {diff:.1e} |")
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fill_cost.md")
with open(out, "w") as f:
    f.write("# One fill row's cost, one torch thread\n\nMade by `python results/fashionmnist_runtime_alone/"
            "fill_cost.py` (alone on the machine).\n\n" + "\n".join(lines) + "\n")
print("\n".join(lines))
