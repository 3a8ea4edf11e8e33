"""The RL training step on a tiny SpeechLLM: its CE term, its gradient path, and that it lowers WER."""

import pytest
import torch
from models_helpers import make_batch, one_torch_thread, tiny_speech_llm  # noqa: F401

from seed_asr.decoding.recognize import DecodingConfig
from seed_asr.lit.rl_module import MWERConfig, eval_mode, mwer_step, nbest_ids
from seed_asr.losses.mwer import expected_risk, nbest_risks, pad_nbest

TEXTS = ["call anna now", "play music", "stop the timer", "lights on"]
CONTEXTS = [{"history": "hello", "keywords": ["Anna", "Brandvold"], "entities": ["Anna"]}, None, None, None]
DECODING = DecodingConfig()


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


def measured_expected_wer(model, batch, cfg: MWERConfig) -> float:
    """Expected WER under the model's renormalised beam N-best distribution."""
    with eval_mode(model), torch.no_grad():
        hyps, mask = pad_nbest(nbest_ids(model, batch, cfg, DECODING, False), cfg.nbest)
        texts = [[model.prompt.decode(h) for h in row] for row in hyps]
        wer = nbest_risks(texts, batch["texts"], [[]] * len(texts), ["en"] * len(texts), 1.0)
        return float(expected_risk(model.score(batch, hyps), wer, mask).mean())


def test_rl_steps_lower_the_expected_wer_of_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny_speech_llm().train()
    batch = make_batch(TEXTS, [40, 30, 35, 25])
    sft = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cfg = MWERConfig(nbest=4, beam_size=4, ce_weight=0.05, keyword_weight=1.0)
    for step in range(1, 101):  # brief SFT, until the N-best has variety: some hypotheses right, some wrong
        loss = model(batch)["loss"]
        sft.zero_grad()
        loss.backward()
        sft.step()
        if step >= 20 and step % 5 == 0 and 0.1 < (before := measured_expected_wer(model, batch, cfg)) < 0.7:
            break
    assert 0.1 < before < 0.7
    rl = torch.optim.Adam(model.parameters(), lr=5e-4)
    for _ in range(8):
        loss = mwer_step(model, batch, cfg, DECODING)["loss"]
        rl.zero_grad()
        loss.backward()
        rl.step()
    after = measured_expected_wer(model, batch, cfg)
    assert after < 0.9 * before, (before, after)


def test_bad_rl_options_are_named():
    with pytest.raises(ValueError, match="beam_size"):
        MWERConfig(nbest=4, beam_size=2)
    with pytest.raises(ValueError, match="nbest_source"):
        MWERConfig(nbest_source="greedy")
