"""How many Mandarin character substitutions of an evaluation are homophones: the hypothesis wrote a
character that espeak-ng reads exactly like the reference's (same syllable and tone), which no audio of
the built-in corpus can tell apart.

    python scripts/homophone_errors.py runs/demo/eval_sft/hyps.jsonl

Reads the ``hyps.jsonl`` of ``seed-asr eval``; prints the substitutions, the homophone share, and the most
frequent non-homophone substitutions.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections import Counter
from pathlib import Path

from seed_asr.corpus.synth import get_engine
from seed_asr.metrics.wer import substitution_pairs
from seed_asr.text.units import is_mandarin


@functools.cache
def reading(character: str, voice: str) -> str:
    """espeak-ng's IPA reading of one character, stress marks removed."""
    return re.sub("[ˈˌ]", "", get_engine().phonemes(character, voice))


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("hyps", type=Path, help="hyps.jsonl of seed-asr eval")
    parser.add_argument("--voice", default="cmn-latn-pinyin", help="espeak-ng voice of the corpus' Mandarin")
    parser.add_argument("--top", type=int, default=10, help="non-homophone substitutions to list")
    args = parser.parse_args()
    pairs = []
    for line in args.hyps.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if is_mandarin(str(row.get("lang") or "")):
            pairs += substitution_pairs(row["hyp"], row["ref"], row["lang"])
    if not pairs:
        raise SystemExit(f"{args.hyps}: no Mandarin substitution")
    same = [reading(ref, args.voice) == reading(hyp, args.voice) for ref, hyp in pairs]
    share = 100 * sum(same) / len(pairs)
    print(f"{len(pairs)} Mandarin substitutions, {sum(same)} homophones ({share:.1f}%)")
    others = Counter(pair for pair, homophone in zip(pairs, same, strict=True) if not homophone)
    for (ref, hyp), count in others.most_common(args.top):
        print(f"  {ref} ({reading(ref, args.voice)}) -> {hyp} ({reading(hyp, args.voice)}): {count}")


if __name__ == "__main__":
    main()
