"""Temperature sampling through the scorer protocol: distribution, scores, caps, low-temperature limit."""

import pytest
import torch
from decoding_helpers import boost_token, left_padded_prefix, sequence_logprobs, tiny_qwen2

from seed_asr.decoding import CausalLMScorer, greedy_decode
from seed_asr.decoding.sampling import sample_with_scorer

EOS = 5

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def llm():
    model = tiny_qwen2(vocab=23, hidden=32)
    with torch.no_grad():
        model.lm_head.weight *= 6.0  # peaked next-token distributions, so temperature matters
    boost_token(model, EOS, 2.0)
    return model


def draw(llm, lengths, samples, temperature, max_new_tokens, seed=0):
    embeds, mask = left_padded_prefix(lengths, llm.config.hidden_size)
    generator = torch.Generator().manual_seed(seed)
    return sample_with_scorer(
        CausalLMScorer(llm, embeds, mask),
        len(lengths),
        EOS,
        max_new_tokens=max_new_tokens,
        num_samples=samples,
        temperature=temperature,
        generator=generator,
    )


def test_first_tokens_follow_the_tempered_distribution(llm):
    n, temperature = 4000, 2.0
    embeds, mask = left_padded_prefix([4], llm.config.hidden_size)
    with torch.no_grad():
        logp = CausalLMScorer(llm, embeds, mask).start()[0]
    tempered, plain = (logp / temperature).softmax(0), logp.softmax(0)
    hyps = draw(llm, [4], n, temperature, max_new_tokens=1)[0]
    counts = torch.bincount(torch.tensor([(h.tokens or [EOS])[0] for h in hyps]), minlength=len(logp))
    freq = counts.float() / n
    sigma = (tempered * (1 - tempered) / n).sqrt()
    assert ((freq - tempered).abs() <= 4 * sigma + 1e-3).all()
    assert ((freq - plain).abs() > 4 * sigma).any()  # the test tells the temperature apart


def test_scores_are_untempered_sequence_logprobs_and_caps_hold(llm):
    lengths, caps = [3, 6], torch.tensor([4, 9])
    embeds, _ = left_padded_prefix(lengths, llm.config.hidden_size)
    nbest = draw(llm, lengths, 5, 1.5, max_new_tokens=caps, seed=1)
    assert [len(row) for row in nbest] == [5, 5]
    for row, (utt, length) in enumerate(zip(nbest, lengths, strict=True)):
        prefix = embeds[row, -length:]
        # eos is part of a hypothesis' score when it was drawn, i.e. when the hypothesis is below its cap
        seqs = [h.tokens + [EOS] if len(h.tokens) < int(caps[row]) else h.tokens for h in utt]
        reference = sequence_logprobs(llm, prefix, seqs)
        assert all(len(h.tokens) <= int(caps[row]) for h in utt)
        assert [h.logprob for h in utt] == pytest.approx(reference, rel=1e-4, abs=1e-4)


def test_low_temperature_gives_the_greedy_transcript(llm):
    lengths = [2, 5, 3]
    embeds, mask = left_padded_prefix(lengths, llm.config.hidden_size)
    greedy = greedy_decode(llm, embeds, mask, EOS, max_new_tokens=8).tokens
    nbest = draw(llm, lengths, 3, 1e-4, max_new_tokens=8)
    assert [[h.tokens for h in row] for row in nbest] == [[g] * 3 for g in greedy]


def test_bad_arguments_are_named(llm):
    with pytest.raises(ValueError, match="temperature"):
        draw(llm, [2], 2, 0.0, max_new_tokens=3)
    with pytest.raises(ValueError, match="num_samples"):
        draw(llm, [2], 0, 1.0, max_new_tokens=3)
