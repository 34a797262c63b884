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
import gzip
import os
import shutil
import tempfile

import numpy as np
from torchvision.datasets.mnist import read_image_file, read_label_file

RAW = "/usr/share/datasets/fashion-mnist"
VAL_SEED, VAL_PER_CLASS, POOL_SEED = 12345, 1000, 54321


def read_train():
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
            paths[name] = os.path.join(tmp, name)
            with gzip.open(os.path.join(RAW, name + ".gz")) as src, open(paths[name], "wb") as dst:
                shutil.copyfileobj(src, dst)
        images = read_image_file(paths["train-images-idx3-ubyte"]).numpy()
        labels = read_label_file(paths["train-labels-idx1-ubyte"]).numpy().astype(np.int64)
    return images, labels


def per_class(labels, n, seed, among):
    rng = np.random.RandomState(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero((labels == c) & among))[:n]
                                   for c in range(10)]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("num_labels", nargs="+", type=int)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--pool", type=int, default=None)
    args = parser.parse_args()
    images, labels = read_train()
    val = per_class(labels, VAL_PER_CLASS, VAL_SEED, np.ones(len(labels), bool))
    train = np.setdiff1d(np.arange(len(labels)), val)
    x, y = images[train], labels[train]
    os.makedirs(args.out, exist_ok=True)
    for n in args.num_labels:
        for seed in args.seeds:
            lb = per_class(y, n // 10, seed, np.ones(len(y), bool))
            keep = np.arange(len(y))
            if args.pool is not None:
                rest = np.setdiff1d(keep, lb)
                order = np.random.RandomState(POOL_SEED).permutation(rest)
                # class-stratified: the first pool/10 of every class in the fixed order
                picked = np.concatenate([order[y[order] == c][:(args.pool // 10)] for c in range(10)])
                keep = np.sort(np.concatenate([lb, picked]))
            marks = np.full(len(y), -1)
            marks[lb] = y[lb]
            name = f"fm_val_{n}_s{seed}" + (f"_pool{args.pool}" if args.pool else "") + ".npz"
            np.savez(os.path.join(args.out, name), images=x[keep], labels=marks[keep],
                     eval_images=images[val], eval_labels=labels[val], true_labels=y[keep])
            print(name, len(keep), "rows,", (marks[keep] >= 0).sum(), "labeled")


if __name__ == "__main__":
    main()
