"""Phoneme strings (espeak-ng IPA, as the built-in corpus records how each utterance was read) -> CTC labels.

A CTC head on phonemes learns far faster than one on the LLM's characters, of which half the built-in
corpus (Mandarin) has hundreds with a few dozen syllable sounds between them (`scripts/bench_ctc_units.py`).
The label set is fixed (not fitted to a corpus), so checkpoints stay compatible: blank, unknown, then every
symbol of the Latin letters, digits (Mandarin tones), Latin-1 and Latin Extended-A letters, IPA Extensions,
Spacing Modifier Letters, combining diacritics and Phonetic Extensions blocks. Stress marks, syllable and
word boundaries are dropped.
"""

from __future__ import annotations

BLANK = 0
UNKNOWN = 1
_DROPPED = frozenset("ˈˌ.-_ \t\n")
_SYMBOLS = (
    "abcdefghijklmnopqrstuvwxyz0123456789"
    + ":"
    + "".join(chr(c) for c in range(0xC0, 0x180))  # Latin-1 and Latin Extended-A letters (æ, ð, ŋ, ...)
    + "".join(chr(c) for c in range(0x250, 0x370))  # IPA Extensions, modifier letters, diacritics
    + "".join(chr(c) for c in range(0x1D00, 0x1D80))  # Phonetic Extensions (ᵻ, ...)
    + "θβχ"
)
_LABELED = dict.fromkeys(s for s in _SYMBOLS if s not in _DROPPED)
_IDS = {symbol: index + 2 for index, symbol in enumerate(_LABELED)}
NUM_CLASSES = len(_IDS) + 2


def phoneme_ids(phonemes: str) -> list[int]:
    """Label ids of an IPA string: stress marks and spaces dropped, symbols outside the set -> UNKNOWN."""
    return [_IDS.get(symbol, UNKNOWN) for symbol in phonemes if symbol not in _DROPPED]
