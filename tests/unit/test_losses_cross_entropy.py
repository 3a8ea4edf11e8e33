"""next_token_nll against hand-computed values."""

import math

import torch

from seed_asr.losses.cross_entropy import IGNORE_INDEX, next_token_nll


def test_next_token_nll_scores_each_token_given_its_prefix_and_skips_ignored_ones() -> None:
    logits = torch.zeros(1, 3, 4)           # uniform over 4 tokens ...
    logits[0, 0, 2] = math.log(3.0)         # ... except position 0, where token 2 has odds 3 : 1 : 1 : 1
    labels = torch.tensor([[IGNORE_INDEX, 2, 1]])
    nll, scored = next_token_nll(logits, labels)
    assert nll.shape == scored.shape == (1, 2)
    assert torch.allclose(nll[0], torch.tensor([-math.log(3 / 6), math.log(4.0)]))
    labels[0, 2] = IGNORE_INDEX
    assert next_token_nll(logits, labels)[1].tolist() == [[True, False]]
