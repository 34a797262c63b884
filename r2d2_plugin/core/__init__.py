"""The algorithm core: the D2 loss, the four-stage schedule and the pseudo-label store.

Plain PyTorch: nothing here imports USB, the launcher or the experiment tools."""
