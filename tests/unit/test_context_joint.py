"""Joint context-aware / context-free beam search (seed_asr.decoding.joint, recognize method=joint_beam)."""

from dataclasses import replace

import pytest
import torch
from models_helpers import make_batch, take, tiny_speech_llm, tiny_tokenizer

from seed_asr.decoding.joint import JointConfig, JointScorer
from seed_asr.decoding.recognize import DecodingConfig, recognize

TEXTS = ["call anneliese okonkwo", "今天天气很好", "play some music please"]
FRAMES = [90, 37, 61]
CONTEXTS = [{"history": "set a timer", "keywords": ["berlin", "okonkwo"]}, None, {"keywords": ["music"]}]
BEAM = DecodingConfig(method="beam", beam_size=3, nbest=3, repetition_max_ngram=0)

pytestmark = pytest.mark.usefixtures("one_thread")


def build_model(eos_factor: float = 1.0):
    """A random tiny SpeechLLM; eos_factor -3 makes eos the likely next token (hypotheses end with eos)."""
    torch.manual_seed(0)
    model = tiny_speech_llm(tiny_tokenizer()).eval()
    with torch.no_grad():
        model.base_llm.get_output_embeddings().weight[model.prompt.eos_id] *= eos_factor
    return model


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture(scope="module")
def batch():
    return make_batch(TEXTS, FRAMES, CONTEXTS)


def joint(alpha: float, prune: float | None = None) -> DecodingConfig:
    return replace(BEAM, method="joint_beam", use_context=True, joint=JointConfig(alpha, prune))


def as_pairs(nbests):
    return [[(h.tokens, h.logprob) for h in nbest] for nbest in nbests]


def test_alpha_one_is_context_aware_beam_search_and_alpha_zero_context_free(model, batch):
    aware = recognize(model, batch, replace(BEAM, use_context=True))
    free = recognize(model, batch, BEAM)
    assert as_pairs(recognize(model, batch, joint(1.0))) == as_pairs(aware)
    assert as_pairs(recognize(model, batch, joint(0.0))) == as_pairs(free)
    assert as_pairs(aware) != as_pairs(free)  # the contexts matter for this model


@pytest.mark.parametrize(("alpha", "eos_factor"), [(0.3, 1.0), (0.7, 1.0), (0.3, -3.0)])
def test_joint_scores_are_the_alpha_mix_of_speech_llm_scores(batch, alpha, eos_factor):
    model = build_model(eos_factor)
    nbests = recognize(model, batch, joint(alpha))
    caps = model.max_new_tokens(model.encode_audio(batch["feats"], batch["feat_lens"])[1])
    # a hypothesis shorter than its cap ended with eos (guard off), one at its cap did not
    ended = torch.tensor([[len(h.tokens) < c for h in nbest] for nbest, c in zip(nbests, caps, strict=True)])
    assert ended.any() == (eos_factor < 0)
    hyps = [[h.tokens for h in nbest] for nbest in nbests]
    with torch.no_grad():
        aware, free = (
            torch.where(ended, *(model.score(batch, hyps, c, add_eos=eos) for eos in (True, False)))
            for c in (True, False)
        )
    expected = alpha * aware + (1 - alpha) * free
    got = torch.tensor([[h.logprob for h in nbest] for nbest in nbests])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_batched_joint_beam_equals_one_utterance_at_a_time(model, batch):
    cfg = joint(0.5, prune=6.0)
    together = recognize(model, batch, cfg)
    for i, nbest in enumerate(together):
        alone = recognize(model, take(batch, i), cfg)[0]
        assert [h.tokens for h in nbest] == [h.tokens for h in alone]
        logprobs = [torch.tensor([h.logprob for h in hyps]) for hyps in (nbest, alone)]
        torch.testing.assert_close(*logprobs, rtol=1e-4, atol=1e-4)


def test_audio_is_encoded_once(model, batch, monkeypatch):
    calls = []
    encode = model.encode_audio
    monkeypatch.setattr(model, "encode_audio", lambda *a: calls.append(1) or encode(*a))
    recognize(model, batch, joint(0.5))
    assert len(calls) == 1


def test_zero_prune_threshold_follows_the_context_free_greedy_path(model, batch):
    greedy = recognize(model, batch, DecodingConfig(method="greedy", repetition_max_ngram=0))
    pruned = recognize(model, batch, joint(0.5, prune=0.0))
    assert [nbest[0].tokens for nbest in pruned] == [nbest[0].tokens for nbest in greedy]
    assert all(len(nbest) == 1 for nbest in pruned)  # one surviving candidate per step: one hypothesis


class FixedScorer:
    """Returns fixed `(N, V)` scores and records what the search asked it."""

    def __init__(self, scores: torch.Tensor) -> None:
        self.scores = scores
        self.calls: list[tuple[str, list[int]]] = []

    def start(self) -> torch.Tensor:
        self.calls.append(("start", []))
        return self.scores

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls.append(("step", tokens.tolist()))
        return self.scores[: len(tokens)]

    def select(self, rows: torch.Tensor) -> None:
        self.calls.append(("select", rows.tolist()))


def test_pruning_drops_tokens_far_below_the_best_context_free_token():
    aware = FixedScorer(torch.tensor([[-5.0, -1.0, -0.5, -9.0], [-1.0, -2.0, -3.0, -4.0]]))
    free = FixedScorer(torch.tensor([[-0.5, -2.0, -7.0, -3.0], [-3.0, -2.5, -1.0, -9.5]]))
    scorer = JointScorer(aware, free, JointConfig(alpha=0.25, prune_threshold=4.0))
    inf = float("-inf")
    # row 0: best free -0.5, token 2 (-7.0) is 6.5 below: pruned; row 1: best -1.0, token 3 pruned
    expected = torch.tensor([[-1.625, -1.75, inf, -4.5], [-2.5, -2.375, -1.5, inf]])
    torch.testing.assert_close(scorer.start(), expected)
    torch.testing.assert_close(scorer.step(torch.tensor([1, 0])), expected)
    scorer.select(torch.tensor([1, 1, 0]))
    assert aware.calls == free.calls == [("start", []), ("step", [1, 0]), ("select", [1, 1, 0])]
    unpruned = JointScorer(aware, free, JointConfig(alpha=0.25)).start()
    torch.testing.assert_close(unpruned, 0.25 * aware.scores + 0.75 * free.scores)


def test_joint_settings_are_validated():
    with pytest.raises(ValueError, match="alpha"):
        JointConfig(alpha=1.5)
    with pytest.raises(ValueError, match="prune_threshold"):
        JointConfig(prune_threshold=-1.0)
    assert DecodingConfig(method="joint_beam", joint={"alpha": 0.2}).joint == JointConfig(0.2, None)
    with pytest.raises(ValueError, match="joint_beam"):
        DecodingConfig(method="joint")
