"""Fashion-MNIST validation-split .npz files for the ``npz`` dataset (issue 16, item 2).

From the 60k training images only (the 10k test set is never read): a fixed class-stratified
10,000 (1,000 per class, drawn with RandomState(12345)) become ``eval_images`` / ``eval_labels``;
the other 50,000 are ``images`` with ``labels`` -1 except a class-balanced labeled set of
``n`` images (n/10 per class) drawn from them with RandomState(seed). Optionally ``--pool P``
keeps only the first P of a fixed class-stratified permutation of the unlabeled rest (the
labeled set is always kept). Usage:
    python make_npz.py OUT_DIR N [N ...] --seeds 0 1 [--pool P]
writes OUT_DIR/fm_val_<N>_s<seed>[_pool<P>].npz
"""
import argparse
import os

import numpy as np

from r2d2_plugin.usb.datasets import per_class_pick
from r2d2_plugin.usb.fashionmnist import CLASSES, SYSTEM_DIR, VAL_SEED, locate, read_split

VAL_PER_CLASS, POOL_SEED = 1000, 54321


def per_class(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices of every class, drawn with ``seed`` (the plugin's labeled-set draw)."""
    return per_class_pick(labels, {c: n for c in range(CLASSES)}, seed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("num_labels", nargs="+", type=int)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--pool", type=int, default=None)
    args = parser.parse_args()
    images, labels = read_split(locate(SYSTEM_DIR, allow_download=False), "train")
    val = per_class(labels, VAL_PER_CLASS, VAL_SEED)
    train = np.setdiff1d(np.arange(len(labels)), val)
    x, y = images[train], labels[train]
    os.makedirs(args.out, exist_ok=True)
    for n in args.num_labels:
        for seed in args.seeds:
            lb = per_class(y, n // CLASSES, seed)
            keep = np.arange(len(y))
            if args.pool is not None:
                rest = np.setdiff1d(keep, lb)
                order = np.random.RandomState(POOL_SEED).permutation(rest)
                # class-stratified: the first pool/10 of every class in the fixed order
                picked = np.concatenate([order[y[order] == c][:(args.pool // CLASSES)] for c in range(CLASSES)])
                keep = np.sort(np.concatenate([lb, picked]))
            marks = np.full(len(y), -1)
            marks[lb] = y[lb]
            name = f"fm_val_{n}_s{seed}" + (f"_pool{args.pool}" if args.pool else "") + ".npz"
            np.savez(os.path.join(args.out, name), images=x[keep], labels=marks[keep],
                     eval_images=images[val], eval_labels=labels[val], true_labels=y[keep])
            print(name, len(keep), "rows,", (marks[keep] >= 0).sum(), "labeled")


if __name__ == "__main__":
    main()
