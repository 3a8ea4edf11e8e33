"""The RL training step on a tiny SpeechLLM: its CE term, its gradient path, and that its MWER
term descends the expected WER."""

import pytest
import torch
from models_helpers import make_batch, tiny_speech_llm

from seed_asr.decoding.recognize import DecodingConfig
from seed_asr.lit.rl_module import MWERConfig, mwer_step, nbest_ids
from seed_asr.losses.mwer import nbest_risks, pad_nbest

TEXTS = ["call anna now", "play music", "stop the timer", "lights on"]
CONTEXTS = [{"history": "hello", "keywords": ["Anna", "Brandvold"], "entities": ["Anna"]}, None, None, None]
DECODING = DecodingConfig()

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def batch():
    return make_batch(TEXTS, [40, 30, 35, 25], CONTEXTS)


@pytest.mark.parametrize("use_context", [False, True])
def test_ce_term_equals_the_forward_cross_entropy(batch, use_context):
    torch.manual_seed(0)
    model = tiny_speech_llm().eval()
    out = mwer_step(model, batch, MWERConfig(), DECODING, use_context=use_context)
    with torch.no_grad():
        reference = model(batch, use_context=use_context)["ce_loss"]
    torch.testing.assert_close(out["ce_loss"].detach(), reference)


def test_identical_samples_still_give_every_parameter_a_gradient(batch):
    """Near-greedy sampling repeats one hypothesis: the MWER term is 0 but backward reaches every
    parameter (what keeps DDP ranks in step), even with no cross-entropy."""
    torch.manual_seed(0)
    model = tiny_speech_llm().train()
    cfg = MWERConfig(nbest=3, nbest_source="sampling", temperature=1e-4, ce_weight=0.0)
    out = mwer_step(model, batch, cfg, DECODING)
    assert out["nbest_size"].item() == 1.0 and out["loss"].item() == 0.0
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert model.training  # decoding ran in eval mode and gave the mode back


def expected_wer(model, batch, hyps: list[list[list[int]]], mask: torch.Tensor) -> torch.Tensor:
    """Plain-torch expected WER of fixed N-best lists, with gradient: per utterance, the WERs of its
    distinct hypotheses weighted by the softmax of their scores; the mean over utterances."""
    texts = [[model.prompt.decode(h) for h in row] for row in hyps]
    wer = nbest_risks(texts, batch["texts"], [[]] * len(texts), ["en"] * len(texts), 1.0)
    logp = model.score(batch, hyps)
    return torch.stack([(logp[b, m].softmax(0) * wer[b, m]).sum() for b, m in enumerate(mask)]).mean()


def shifted_expected_wer(
    model, batch, hyps, mask, params: list[torch.Tensor], shift: list[torch.Tensor]
) -> float:
    """`expected_wer` with each parameter moved by its shift; the parameters are restored after."""
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, s in zip(params, shift, strict=True):
            p.add_(s)
        value = float(expected_wer(model, batch, hyps, mask))
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
    return value


def test_rl_gradient_is_the_expected_wer_gradient_and_a_step_against_it_lowers_the_expected_wer():
    """With ce_weight=0 the RL loss's gradient is that of the expected WER of the model's own N-best
    (the mean-risk baseline changes the value, not the gradient), and a small step against it lowers
    that expected WER by the first-order amount (finite differences). Checks of direction, unlike how
    far a few optimiser steps happen to get, do not turn on the CPU's kernel rounding."""
    torch.manual_seed(0)
    model = tiny_speech_llm().train()
    batch = make_batch(TEXTS, [40, 30, 35, 25])
    sft = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(50):  # brief SFT: beam N-best lists that mix right and wrong hypotheses
        loss = model(batch)["loss"]
        sft.zero_grad()
        loss.backward()
        sft.step()
    cfg = MWERConfig(nbest=4, beam_size=4, ce_weight=0.0, keyword_weight=1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    out = mwer_step(model, batch, cfg, DECODING)
    grad = torch.autograd.grad(out["loss"], params)

    hyps, mask = pad_nbest(nbest_ids(model, batch, cfg, DECODING, False), cfg.nbest)  # the step's lists
    before = expected_wer(model, batch, hyps, mask)
    assert out["expected_wer"].item() == pytest.approx(before.item(), abs=1e-6)
    g = torch.cat([x.flatten() for x in grad])
    reference = torch.cat([x.flatten() for x in torch.autograd.grad(before, params)])
    assert reference.norm() > 0.1  # the lists' WERs differ where the model puts weight
    assert (g - reference).norm() < 1e-4 * reference.norm()

    eps = 1e-4 / float(g @ g)  # first order: E(theta -/+ eps g) = E(theta) -/+ 1e-4
    down = shifted_expected_wer(model, batch, hyps, mask, params, [-eps * x for x in grad])
    up = shifted_expected_wer(model, batch, hyps, mask, params, [eps * x for x in grad])
    assert down < before.item() < up
    assert (up - down) / 2e-4 == pytest.approx(1.0, rel=0.05), (down, before.item(), up)


def test_bad_rl_options_are_named():
    with pytest.raises(ValueError, match="beam_size"):
        MWERConfig(nbest=4, beam_size=2)
    with pytest.raises(ValueError, match="nbest_source"):
        MWERConfig(nbest_source="greedy")
