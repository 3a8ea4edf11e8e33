import pytest
import torch
from decoding_helpers import (
    boost_token,
    cut_at_eos,
    left_padded_prefix,
    loop_model,
    sequence_logprobs,
    tiny_qwen2,
    token_prefix,
)

from seed_asr.decoding import RepetitionGuard, greedy_decode

EOS = 5
LENGTHS = [3, 12, 7, 1, 12, 9]


@pytest.fixture(scope="module")
def llm():
    model = tiny_qwen2()
    boost_token(model, EOS, 3.0)
    return model


def hf_greedy(llm, embeds, mask, max_new_tokens):
    with torch.no_grad():
        out = llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            eos_token_id=EOS,
            pad_token_id=EOS,
        )
    return [cut_at_eos(row, EOS) for row in out.tolist()]


def test_greedy_matches_hf_generate_with_mixed_prefix_lengths(llm):
    embeds, mask = left_padded_prefix(LENGTHS, llm.config.hidden_size)
    result = greedy_decode(llm, embeds, mask, EOS, 24)
    expected = hf_greedy(llm, embeds, mask, 24)
    assert result.tokens == expected
    assert {len(t) for t in expected} != {len(expected[0])}, "the test needs rows of different lengths"
    assert result.stop_reasons == ["eos" if len(t) < 24 else "length" for t in expected]


def test_greedy_scores_equal_plain_forward_logprob(llm):
    embeds, mask = left_padded_prefix(LENGTHS, llm.config.hidden_size, seed=1)
    result = greedy_decode(llm, embeds, mask, EOS, 16)
    for row, tokens in enumerate(result.tokens):
        scored = tokens + [EOS] if result.stop_reasons[row] == "eos" else tokens
        prefix = embeds[row, -LENGTHS[row] :]
        reference = sequence_logprobs(llm, prefix, [scored])[0]
        assert result.scores[row].item() == pytest.approx(reference, abs=1e-4)


def test_per_utterance_caps_cut_each_row(llm):
    embeds, mask = left_padded_prefix(LENGTHS, llm.config.hidden_size, seed=2)
    caps = torch.tensor([1, 4, 20, 2, 9, 30])
    result = greedy_decode(llm, embeds, mask, EOS, caps)
    expected = hf_greedy(llm, embeds, mask, 30)
    assert result.tokens == [row[:cap] for row, cap in zip(expected, caps.tolist(), strict=True)]


def test_repetition_guard_stops_forced_loops():
    llm = loop_model(EOS)
    embeds, mask = token_prefix(llm, [10, 6, 9])
    unguarded = greedy_decode(llm, embeds, mask, EOS, 20)
    assert unguarded.tokens == [[2, 3, 4] * 6 + [2, 3], [6] * 20, []]
    assert unguarded.stop_reasons == ["length", "length", "eos"]

    guarded = greedy_decode(llm, embeds, mask, EOS, 20, RepetitionGuard(max_ngram=3, max_repeats=2))
    assert guarded.tokens == [[2, 3, 4, 2, 3, 4], [6, 6], []]
    assert guarded.stop_reasons == ["repeat", "repeat", "eos"]
    kept = [[2, 3, 4, 2, 3, 4], [6, 6], [EOS]]
    references = [sequence_logprobs(llm, embeds[row], [seq])[0] for row, seq in enumerate(kept)]
    assert guarded.scores.tolist() == pytest.approx(references, abs=1e-4)


def test_repetition_guard_ignores_loops_longer_than_max_ngram():
    llm = loop_model(EOS)
    embeds, mask = token_prefix(llm, [10])
    result = greedy_decode(llm, embeds, mask, EOS, 20, RepetitionGuard(max_ngram=2, max_repeats=2))
    assert result.stop_reasons == ["length"] and len(result.tokens[0]) == 20


def test_loop_period_hand_cases():
    guard = RepetitionGuard(max_ngram=3, max_repeats=2)
    tokens = torch.tensor([[1, 2, 1, 2, 1, 2], [7, 1, 1, 1, 1, 1], [1, 2, 3, 1, 2, 3], [1, 2, 1, 2, 1, 3]])
    assert guard.loop_period(tokens).tolist() == [2, 1, 0, 0]
    assert guard.loop_period(torch.tensor([[1, 2, 3, 1, 2, 3, 1, 2, 3]])).tolist() == [3]


@pytest.mark.parametrize(
    ("mask", "caps", "message"),
    [
        (torch.tensor([[1, 1, 0]]), 4, "left padded"),
        (torch.tensor([[1, 1]]), 4, "prefix_mask must be"),
        (torch.tensor([[0, 1, 1]]), torch.tensor([3, 4]), "max_new_tokens"),
        (torch.tensor([[0, 1, 1]]), 0, "max_new_tokens"),
    ],
)
def test_bad_inputs_raise_clear_errors(llm, mask, caps, message):
    embeds = torch.randn(1, 3, llm.config.hidden_size)
    with pytest.raises(ValueError, match=message):
        greedy_decode(llm, embeds, mask, EOS, caps)
