"""Masked-prediction loss on hand-built logits."""

import math

import pytest
import torch

from seed_asr.losses.cross_entropy import IGNORE_INDEX, masked_prediction_loss
from seed_asr.models.ssl import SSLHead


def test_hand_computed_loss_and_accuracy_on_masked_frames_only():
    # Frame 0 (masked): uniform over 4 classes -> loss log 4, argmax 0 = label 0 (tie: first index).
    # Frame 1 (masked): logit 2 on class 1 vs 0 elsewhere, label 1 -> loss log(3 + e^2) - 2, correct.
    # Frame 2 (not masked): confidently wrong, must not count.
    logits = torch.tensor([[[0.0, 0, 0, 0], [0, 2, 0, 0], [50, 0, 0, 0]]], requires_grad=True)
    labels = torch.tensor([[0, 1, 3]])
    mask = torch.tensor([[True, True, False]])
    loss, acc = masked_prediction_loss(logits, labels, mask)
    expected = (math.log(4) + math.log(3 + math.e**2) - 2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == 1.0
    loss.backward()
    assert (logits.grad[0, 2] == 0).all() and (logits.grad[0, :2] != 0).any()


def test_unmasked_logits_do_not_change_the_loss():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 5, generator=gen)
    labels = torch.randint(5, (2, 6), generator=gen)
    mask = torch.rand(2, 6, generator=gen) < 0.5
    changed = torch.where(mask.unsqueeze(-1), logits, torch.randn(2, 6, 5, generator=gen) * 100)
    loss = masked_prediction_loss(logits, labels, mask)[0]
    assert torch.equal(loss, masked_prediction_loss(changed, labels, mask)[0])
    ref = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_codebooks_are_averaged_and_ignore_index_skipped():
    gen = torch.Generator().manual_seed(1)
    logits = [torch.randn(2, 4, 3, generator=gen) for _ in range(2)]
    labels = torch.randint(3, (2, 4, 2), generator=gen)
    labels[1, 3, :] = IGNORE_INDEX
    mask = torch.ones(2, 4, dtype=torch.bool)
    keep = labels[..., 0] != IGNORE_INDEX
    refs = [torch.nn.functional.cross_entropy(lg[keep], labels[..., n][keep]) for n, lg in enumerate(logits)]
    loss, _ = masked_prediction_loss(logits, labels, mask)
    assert loss.item() == pytest.approx(sum(r.item() for r in refs) / 2, rel=1e-6)


def test_empty_mask_gives_zero_loss_with_graph():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    labels, mask = torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool)
    loss, acc = masked_prediction_loss(logits, labels, mask)
    assert loss.item() == 0 and acc.item() == 0 and loss.requires_grad


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="codebook"):
        labels = torch.zeros(1, 3, 2, dtype=torch.long)  # 2 codebooks of labels, 1 of logits
        masked_prediction_loss(torch.randn(1, 3, 4), labels, torch.ones(1, 3, dtype=torch.bool))


def test_head_outputs_one_logit_tensor_per_codebook():
    hidden = torch.randn(2, 5, 8)
    assert SSLHead(8, 16)(hidden).shape == (2, 5, 16)
    multi = SSLHead(8, 16, num_codebooks=3)(hidden)
    assert len(multi) == 3 and all(m.shape == (2, 5, 16) for m in multi)
