"""Accuracy of an r2d2 run's final pseudo-label store (its last reprediction, the fine-tune's
targets) on the unlabeled rows of the .npz it trained on (``true_labels``, written by
make_npz.py; the run never saw them). Usage: python store_acc.py RUN_DIR/latest_model.pth DATA.npz"""
import sys

import numpy as np
import torch

state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["r2d2"]
with np.load(sys.argv[2]) as f:
    labels, truth = f["labels"], f["true_labels"]
pred = state["store"]["logits"].float().argmax(1).numpy()
unlabeled = labels < 0
print(f"{sys.argv[1]}: pseudo-label accuracy on {unlabeled.sum()} unlabeled rows "
      f"{(pred[unlabeled] == truth[unlabeled]).mean():.4f}")
