"""MWER loss, N-best posteriors, padding/duplicate masks and the WER risks, against hand-computed values."""

import pytest
import torch

from seed_asr.losses.mwer import expected_risk, mwer_loss, nbest_posteriors, nbest_risks, pad_nbest


def test_loss_and_gradient_equal_hand_computed_values():
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    logp = (probs.log() - 7.0).requires_grad_()  # a common offset: only the renormalised list counts
    risk = torch.tensor([[0.0, 0.5, 1.0]])
    loss = mwer_loss(logp, risk, torch.ones(1, 3, dtype=torch.bool))
    loss.backward()
    # mean risk 0.5: 0.5 * (0 - 0.5) + 0.3 * 0 + 0.2 * 0.5 = -0.15
    assert loss.item() == pytest.approx(-0.15, abs=1e-6)
    # d/dlogp_i = p_i (risk_i - E_p[risk]), E_p[risk] = 0.35
    expected = torch.tensor([[0.5 * -0.35, 0.3 * 0.15, 0.2 * 0.65]])
    torch.testing.assert_close(logp.grad, expected)


def test_descent_raises_better_than_average_and_lowers_worse_hypotheses():
    logp = torch.zeros(1, 4, requires_grad=True)  # uniform: the expected risk is the mean
    risk = torch.tensor([[0.1, 0.4, 0.2, 0.7]])  # mean 0.35
    mwer_loss(logp, risk, torch.ones(1, 4, dtype=torch.bool)).backward()
    better = risk < risk.mean()
    assert (logp.grad[better] < 0).all() and (logp.grad[~better] > 0).all()
    stepped = (logp - 1.0 * logp.grad).detach()
    before = expected_risk(logp.detach(), risk, torch.ones(1, 4, dtype=torch.bool))
    after = expected_risk(stepped, risk, torch.ones(1, 4, dtype=torch.bool))
    assert after < before


def test_masked_hypotheses_are_left_out_and_get_no_gradient():
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    logp = torch.tensor([[-1.0, -2.0, 50.0, float("nan")], [-1.0, -1.5, -3.0, -0.5]], requires_grad=True)
    risk = torch.tensor([[0.2, 0.6, 9.0, 9.0], [0.0, 0.25, 0.5, 1.0]])
    loss = mwer_loss(logp, risk, mask)
    loss.backward()
    # plain reference: each utterance on its valid hypotheses alone
    rows = [(logp[0, :2], risk[0, :2]), (logp[1], risk[1])]
    per_row = [(lp.detach().softmax(0) * (r - r.mean())).sum() for lp, r in rows]
    assert loss.item() == pytest.approx(float(sum(per_row) / 2), abs=1e-6)
    assert torch.equal(logp.grad[0, 2:], torch.zeros(2))
    assert torch.isfinite(logp.grad).all()
    torch.testing.assert_close(nbest_posteriors(logp.detach(), mask)[0, 2:], torch.zeros(2))


def test_degenerate_lists_give_zero_loss_with_a_gradient_path():
    """One distinct hypothesis, equal risks, or no hypothesis at all: 0, but backward still runs."""
    logp = torch.tensor([[-1.0, -1.0, -1.0], [-0.3, -2.0, -4.0], [-1.0, -2.0, -3.0]], requires_grad=True)
    risk = torch.tensor([[0.5, 0.5, 0.5], [0.3, 0.3, 0.3], [0.0, 1.0, 1.0]])
    mask = torch.tensor([[True, False, False], [True, True, True], [False, False, False]])
    loss = mwer_loss(logp, risk, mask)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros(3, 3))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="must all be"):
        mwer_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool))


def test_pad_nbest_pads_and_masks_duplicates():
    padded, mask = pad_nbest([[[1, 2], [1, 2], [3]], [[4]], [[5], [6], [7], [8], [9]]], 4)
    assert padded == [[[1, 2], [1, 2], [3], []], [[4], [], [], []], [[5], [6], [7], [8]]]
    assert mask.tolist() == [[True, False, True, False], [True, False, False, False], [True] * 4]


def test_risks_are_wer_and_keyword_weighted_wer():
    ref = "Call Anneliese Okonkwo now"
    hyps = [["call annalise okonkwo now", "call anneliese okonkwo", ref]]
    keywords = [["Anneliese", "Okonkwo", "Brandvold"]]
    wer = nbest_risks(hyps, [ref], keywords, ["en"], keyword_weight=1.0)
    weighted = nbest_risks(hyps, [ref], keywords, ["en"], keyword_weight=3.0)
    # 4 words, 2 of them keywords: one error each; weighted (3 * biased + unbiased) / (3 * 2 + 2)
    torch.testing.assert_close(wer, torch.tensor([[0.25, 0.25, 0.0]]))
    torch.testing.assert_close(weighted, torch.tensor([[3 / 8, 1 / 8, 0.0]]))


def test_mandarin_risk_counts_characters():
    risk = nbest_risks([["我们今天去北京", "我们明天去背景"]], ["我们明天去北京"], [["北京"]], ["zh"], 3.0)
    # 7 characters, 2 in the keyword: 1 unbiased error -> 1 / 11, 2 biased errors -> 6 / 11
    torch.testing.assert_close(risk, torch.tensor([[1 / 11, 6 / 11]]))
    no_keywords = nbest_risks([["我们今天去北京"]], ["我们明天去北京"], [[]], ["zh"], 3.0)
    assert float(no_keywords) == pytest.approx(1 / 7)
