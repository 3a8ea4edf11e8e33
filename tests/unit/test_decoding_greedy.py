import pytest
import torch
from decoding_helpers import boost_token, cut_at_eos, left_padded_prefix, sequence_logprobs, tiny_qwen2

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


def loop_model(vocab: int = 16, hidden: int = 32):
    """A Qwen2 whose next token is succ(current token): 2->3->4->2 loops, 6->6 loops, 9->eos, else ->2.

    Attention and MLP outputs are zeroed, so the last hidden state is the current token's embedding;
    embeddings are orthogonal with RMS 1 and the output rows map each token to its successor.
    """
    llm = tiny_qwen2(vocab=vocab, hidden=hidden, layers=1)
    succ = {t: 2 for t in range(vocab)} | {2: 3, 3: 4, 4: 2, 6: 6, 9: EOS}
    with torch.no_grad():
        for layer in llm.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        basis = torch.linalg.qr(torch.randn(hidden, hidden))[0][:vocab] * hidden**0.5
        llm.model.embed_tokens.weight.copy_(basis)
        llm.lm_head.weight.zero_()
        for token, nxt in succ.items():
            llm.lm_head.weight[nxt] += basis[token] / hidden * 10.0
    return llm


def token_prefix(llm, last_tokens):
    embeds = llm.get_input_embeddings()(torch.tensor(last_tokens))[:, None, :].detach()
    return embeds, torch.ones(len(last_tokens), 1, dtype=torch.long)


def test_repetition_guard_stops_forced_loops():
    llm = loop_model()
    embeds, mask = token_prefix(llm, [10, 6, 9])
    unguarded = greedy_decode(llm, embeds, mask, EOS, 20)
    assert unguarded.tokens == [[2, 3, 4] * 6 + [2, 3], [6] * 20, []]
    assert unguarded.stop_reasons == ["length", "length", "eos"]

    guarded = greedy_decode(llm, embeds, mask, EOS, 20, RepetitionGuard(max_ngram=3, max_repeats=2))
    assert guarded.tokens == [[2, 3, 4, 2, 3, 4], [6, 6], []]
    assert guarded.stop_reasons == ["repeat", "repeat", "eos"]


def test_repetition_guard_ignores_loops_longer_than_max_ngram():
    llm = loop_model()
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
