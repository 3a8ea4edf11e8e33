import itertools

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

from seed_asr.decoding import RepetitionGuard, beam_search

EOS = 5
LENGTHS = [3, 12, 7, 1, 12]
BEAM = 4


@pytest.fixture(scope="module")
def llm():
    model = tiny_qwen2()
    boost_token(model, EOS, 2.5)
    return model


@pytest.mark.parametrize(
    ("early_stopping", "length_penalty"),
    [(False, 1.0), (False, 0.0), (True, 1.0), ("never", 1.0), ("never", 2.0), (False, -0.5)],
)
def test_nbest_matches_hf_generate(llm, early_stopping, length_penalty):
    embeds, mask = left_padded_prefix(LENGTHS, llm.config.hidden_size)
    with torch.no_grad():
        out = llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            do_sample=False,
            num_beams=BEAM,
            num_return_sequences=BEAM,
            max_new_tokens=12,
            eos_token_id=EOS,
            pad_token_id=EOS,
            early_stopping=early_stopping,
            length_penalty=length_penalty,
            output_scores=True,
            return_dict_in_generate=True,
        )
    result = beam_search(
        llm,
        embeds,
        mask,
        EOS,
        max_new_tokens=12,
        beam_size=BEAM,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
    )
    expected_tokens = [cut_at_eos(row, EOS) for row in out.sequences.tolist()]
    expected_scores = out.sequences_scores.view(len(LENGTHS), BEAM)
    for utt, nbest in enumerate(result):
        assert [h.tokens for h in nbest] == expected_tokens[utt * BEAM : (utt + 1) * BEAM]
        assert [h.score for h in nbest] == pytest.approx(expected_scores[utt].tolist(), rel=1e-6, abs=1e-5)
    lengths = {len(nbest[0].tokens) for nbest in result}
    assert len(lengths) > 1 and min(lengths) < 12, "the test needs hypotheses ending at several lengths"


def test_logprob_and_score_equal_plain_forward(llm):
    embeds, mask = left_padded_prefix(LENGTHS, llm.config.hidden_size, seed=3)
    result = beam_search(llm, embeds, mask, EOS, max_new_tokens=6, beam_size=3, length_penalty=0.7)
    for utt, nbest in enumerate(result):
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        for hyp in nbest:
            scored = hyp.tokens if len(hyp.tokens) == 6 else [*hyp.tokens, EOS]
            reference = sequence_logprobs(llm, embeds[utt, -LENGTHS[utt] :], [scored])[0]
            assert hyp.logprob == pytest.approx(reference, abs=1e-4)
            assert hyp.score == pytest.approx(hyp.logprob / len(scored) ** 0.7, abs=1e-5)


def test_batch_equals_one_utterance_at_a_time_with_own_caps(llm):
    embeds, mask = left_padded_prefix(LENGTHS, llm.config.hidden_size, seed=4)
    caps = torch.tensor([2, 9, 5, 12, 1])
    batched = beam_search(llm, embeds, mask, EOS, max_new_tokens=caps, beam_size=3, nbest=2)
    for utt, cap in enumerate(caps.tolist()):
        width = LENGTHS[utt]
        alone = beam_search(
            llm,
            embeds[utt : utt + 1, -width:],
            mask[utt : utt + 1, -width:],
            EOS,
            max_new_tokens=cap,
            beam_size=3,
            nbest=2,
        )[0]
        assert [h.tokens for h in batched[utt]] == [h.tokens for h in alone]
        assert [h.score for h in batched[utt]] == pytest.approx([h.score for h in alone], abs=1e-5)
        assert all(len(h.tokens) <= cap for h in alone)


@pytest.mark.parametrize(("early_stopping", "length_penalty"), [(False, 0.0), ("never", 1.0)])
def test_wide_beam_finds_the_exhaustive_nbest(early_stopping, length_penalty):
    """Vocabulary {eos, 1, 2, 3}, at most 3 tokens: a beam of 36 holds every candidate of every step."""
    eos, vocab, cap = 0, 4, 3
    llm = tiny_qwen2(vocab=vocab, hidden=32, seed=5)
    boost_token(llm, eos, 3.0)
    embeds, mask = left_padded_prefix([4, 6], 32, seed=6)
    result = beam_search(
        llm,
        embeds,
        mask,
        eos,
        max_new_tokens=cap,
        beam_size=36,
        nbest=10,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
    )
    words = range(1, vocab)
    space = [[*p, eos] for n in range(cap) for p in itertools.product(words, repeat=n)]
    space += [list(p) for p in itertools.product(words, repeat=cap)]
    for utt, width in enumerate([4, 6]):
        logprobs = sequence_logprobs(llm, embeds[utt, -width:], space)
        scored = [
            (lp / len(seq) ** length_penalty, cut_at_eos(seq, eos))
            for lp, seq in zip(logprobs, space, strict=True)
        ]
        scored.sort(key=lambda s: -s[0])
        assert [h.tokens for h in result[utt]] == [tokens for _, tokens in scored[:10]]
        assert [h.score for h in result[utt]] == pytest.approx([s for s, _ in scored[:10]], abs=1e-4)


def test_repetition_guard_finishes_looping_beams():
    llm = loop_model(EOS)
    embeds, mask = token_prefix(llm, [10, 6])
    unguarded = beam_search(llm, embeds, mask, EOS, max_new_tokens=20, beam_size=3)
    assert [nbest[0].tokens for nbest in unguarded] == [[2, 3, 4] * 6 + [2, 3], [6] * 20]

    guard = RepetitionGuard(max_ngram=3, max_repeats=2)
    guarded = beam_search(llm, embeds, mask, EOS, max_new_tokens=20, beam_size=3, repetition_guard=guard)
    assert [nbest[0].tokens for nbest in guarded] == [[2, 3, 4, 2, 3, 4], [6, 6]]
    for utt, nbest in enumerate(guarded):
        best = nbest[0]  # scored over the kept tokens, without eos
        assert best.logprob == pytest.approx(sequence_logprobs(llm, embeds[utt], [best.tokens])[0], abs=1e-4)
        assert best.score == pytest.approx(best.logprob / len(best.tokens), abs=1e-6)


def test_bad_beam_settings_raise(llm):
    embeds, mask = left_padded_prefix([2], llm.config.hidden_size)
    with pytest.raises(ValueError, match="nbest"):
        beam_search(llm, embeds, mask, EOS, max_new_tokens=4, beam_size=2, nbest=3)
    with pytest.raises(ValueError, match="early_stopping"):
        beam_search(llm, embeds, mask, EOS, max_new_tokens=4, early_stopping="sometimes")
