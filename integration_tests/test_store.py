"""PseudoLabelStore on its own: the D2 step, duplicates in a batch, checkpoint shape checks."""
from __future__ import annotations

import pytest
import torch

from r2d2_plugin import ConfigError, PseudoLabelStore


def test_descend_is_the_closed_form_step_and_a_repeated_index_takes_its_last_row():
    store = PseudoLabelStore(5, 3, torch.tensor([0, 1, 2, 0, 1]))
    store.logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    before = store.logits.clone()
    idx = torch.tensor([4, 1, 4])
    probs = torch.softmax(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    store.descend(idx, probs, step=0.5)
    for i, row in ((1, 1), (4, 2)):
        expected = before[i] - 0.5 * (torch.softmax(before[i], dim=-1) - probs[row])
        torch.testing.assert_close(store.logits[i], expected)
    assert torch.equal(store.logits[[0, 2, 3]], before[[0, 2, 3]])


def test_accuracy_skips_unknown_labels_and_load_checks_the_shape():
    store = PseudoLabelStore(3, 2, torch.tensor([1, -1, 0]))
    store.logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert store.accuracy() == 0.5
    with pytest.raises(ConfigError, match="store has shape"):
        store.load_state_dict({"logits": torch.zeros(4, 2)})
