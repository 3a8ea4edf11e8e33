"""Decoders for any Hugging Face causal LM continuing left-padded embedding prefixes."""

from seed_asr.decoding.beam import EarlyStopping, Hypothesis, beam_search, beam_search_with_scorer
from seed_asr.decoding.greedy import DecodeResult, greedy_decode, greedy_search
from seed_asr.decoding.repetition import RepetitionGuard
from seed_asr.decoding.scorer import CausalLMScorer, Scorer

__all__ = [
    "CausalLMScorer",
    "DecodeResult",
    "EarlyStopping",
    "Hypothesis",
    "RepetitionGuard",
    "Scorer",
    "beam_search",
    "beam_search_with_scorer",
    "greedy_decode",
    "greedy_search",
]
