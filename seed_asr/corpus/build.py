"""Build the built-in corpus: plan dialogues and splits from a seed, synthesise in parallel, write shards."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from seed_asr.corpus.noise import NOISE_COLORS
from seed_asr.corpus.render import RenderTask, render_block
from seed_asr.corpus.synth import get_engine
from seed_asr.corpus.texts import (
    DOMAINS,
    LANGUAGES,
    check_invented_share,
    check_listed_names,
    context_keywords,
    load_lexicon,
    make_dialogue,
)
from seed_asr.corpus.voices import HeldOutVoices, Speaker, VoiceSpace, held_out_voices, voice_spaces
from seed_asr.data.audio import SAMPLE_RATE
from seed_asr.data.parallel import default_workers, ordered_map
from seed_asr.data.shards import SplitWriter, make_record

log = logging.getLogger(__name__)

DEFAULT_SPLITS: Mapping[str, float] = MappingProxyType({"train": 0.9, "dev": 0.05, "test": 0.05})
#: The split of held-out speakers (``heldout_voices``): the only one they speak in.
HELDOUT_SPLIT = "heldout"
#: Utterances synthesised after one reset of espeak-ng, whose audio depends on what it spoke since:
#: the same blocks give the same audio whatever the number of workers; changing this constant
#: changes the audio (slightly: pitch flutter phase and a few samples of length).
RENDER_BLOCK = 64


@dataclass(frozen=True)
class PlannedUtterance:
    """Everything about one utterance except its audio."""

    key: str
    split: str
    text: str
    lang: str
    domain: str
    speaker: Speaker
    history: str
    keywords: tuple[str, ...]
    entities: tuple[str, ...]
    dialogue: str


def _split_targets(num_utterances: int, splits: Mapping[str, float]) -> dict[str, int]:
    """Utterances per split, summing to ``num_utterances`` (largest remainders get the rounding)."""
    exact = {name: num_utterances * fraction for name, fraction in splits.items()}
    targets = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(splits, key=lambda name: targets[name] - exact[name])
    for name in by_remainder[: num_utterances - sum(targets.values())]:
        targets[name] += 1
    return targets


def plan_corpus(
    num_utterances: int,
    seed: int,
    languages: Sequence[str],
    lang_weights: Sequence[float],
    domains: Sequence[str],
    splits: Mapping[str, float],
    turns: tuple[int, int],
    num_distractors: tuple[int, int],
    voices: Mapping[str, VoiceSpace],
    invented_names: float = 0.0,
    heldout: Mapping[str, HeldOutVoices] | None = None,
    listed_names: int | None = None,
) -> list[PlannedUtterance]:
    """Dialogues, texts, contexts, speakers and splits of the corpus, deterministic from ``seed``.

    ``invented_names`` is the probability that an entity (and a distractor) is invented rather than
    listed, ``listed_names`` how many entries of each name list are drawn from (`load_lexicon`).
    ``heldout``: per language, the accents and variants that speak only in the ``heldout`` split, which
    holds only such speakers (and only languages that have some).

    Whole dialogues go to one split, and a text belongs to one split only: a dialogue repeating a
    text of another split joins that split, or is dropped when that split is full (or when its texts
    belong to two splits). Otherwise a split is drawn in proportion to the room it has left.

    Raises:
        RuntimeError: the generators cannot produce enough texts that fit (e.g. a tiny domain set).
    """
    rng = random.Random(seed)
    room = _split_targets(num_utterances, splits)
    owner: dict[str, str] = {}
    planned: list[PlannedUtterance] = []
    attempts = num_dialogues = 0
    while any(room.values()):
        attempts += 1
        if attempts > 100 * num_utterances + 1000:
            raise RuntimeError(f"could not plan {num_utterances} utterances with split-disjoint texts from "
                               f"domains {list(domains)}; left unfilled: {room}")
        lang = rng.choices(languages, weights=lang_weights)[0]
        domain = rng.choice(domains)
        lexicon = load_lexicon(lang, invented_names, listed_names)
        dialogue = make_dialogue(lexicon, domain, rng.randint(*turns), rng)
        speaker = voices[lang].sample(rng)
        held = (heldout or {}).get(lang)
        owners = {owner[turn.text] for turn in dialogue if turn.text in owner}
        if len(owners) > 1:
            continue
        if owners:
            split = owners.pop()
            if room[split] == 0 or (split == HELDOUT_SPLIT and held is None):
                continue
        else:
            open_splits = [name for name in room if room[name] and (name != HELDOUT_SPLIT or held)]
            if not open_splits:
                continue
            split = rng.choices(open_splits, weights=[room[name] for name in open_splits])[0]
        if held is not None and held.holds(speaker) != (split == HELDOUT_SPLIT):
            speaker = _redraw_speaker(voices[lang], held, split == HELDOUT_SPLIT, rng)
        dialogue = dialogue[: room[split]]
        room[split] -= len(dialogue)
        dialogue_id = f"d{num_dialogues:06d}"
        num_dialogues += 1
        history = ""
        for index, turn in enumerate(dialogue):
            owner[turn.text] = split
            keywords = context_keywords(turn, lexicon, rng.randint(*num_distractors), rng)
            planned.append(PlannedUtterance(
                key=f"{dialogue_id}_{index}", split=split, text=turn.text, lang=lang, domain=domain,
                speaker=speaker, history=history, keywords=tuple(keywords), entities=turn.entities,
                dialogue=dialogue_id,
            ))
            history = turn.text
    return planned


def _redraw_speaker(space: VoiceSpace, held: HeldOutVoices, in_heldout: bool, rng: random.Random) -> Speaker:
    """A speaker of ``space`` that ``held`` holds out exactly when the dialogue is in the held-out split."""
    return space.sample_where(rng, lambda speaker: held.holds(speaker) == in_heldout)


def _check_settings(
    num_utterances: int,
    languages: Sequence[str],
    lang_weights: Mapping[str, float] | None,
    domains: Sequence[str],
    splits: Mapping[str, float],
    turns: tuple[int, int],
    num_distractors: tuple[int, int],
    noise_snr_db: float | None,
    noise_color: str,
    shard_size: int,
    num_workers: int | None,
    invented_names: float,
    listed_names: int | None,
) -> None:
    """Raise ValueError naming the first bad setting other than voices (before any work starts)."""
    if isinstance(num_utterances, bool) or not isinstance(num_utterances, int) or num_utterances < 1:
        raise ValueError(f"num_utterances must be a positive integer, got {num_utterances!r}")
    if not languages or len(set(languages)) != len(languages) or set(languages) - set(LANGUAGES):
        raise ValueError(f"languages must be distinct names from {LANGUAGES}, got {list(languages)}")
    if lang_weights is not None and (
        set(languages) - set(lang_weights)
        or min(lang_weights[lang] for lang in languages) < 0
        or sum(lang_weights[lang] for lang in languages) <= 0
    ):
        raise ValueError(f"lang_weights must give each language of {list(languages)} a non-negative weight, "
                         f"with a positive sum; got {dict(lang_weights)}")
    if not domains or set(domains) - set(DOMAINS):
        raise ValueError(f"domains must be names from {DOMAINS}, got {list(domains)}")
    if not splits or min(splits.values()) < 0 or not math.isclose(sum(splits.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {dict(splits)}")
    if not 1 <= turns[0] <= turns[1]:
        raise ValueError(f"turns must satisfy 1 <= low <= high, got {tuple(turns)}")
    if not 0 <= num_distractors[0] <= num_distractors[1]:
        raise ValueError(f"num_distractors must satisfy 0 <= low <= high, got {tuple(num_distractors)}")
    check_invented_share(invented_names)
    check_listed_names(listed_names)
    if noise_snr_db is not None and not math.isfinite(noise_snr_db):
        raise ValueError(f"noise_snr_db must be a finite number or None, got {noise_snr_db!r}")
    if noise_color not in NOISE_COLORS:
        raise ValueError(f"noise_color must be one of {NOISE_COLORS}, got {noise_color!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 or None, got {num_workers}")


def _check_voices(
    languages: Sequence[str],
    splits: Mapping[str, float],
    voices: Mapping[str, VoiceSpace],
    heldout: Mapping[str, HeldOutVoices],
) -> None:
    """Raise ValueError naming a voice espeak-ng does not know or a bad held-out setting."""
    engine = get_engine()
    for lang in languages:
        voices[lang].check(engine)
    if bool(heldout) != (splits.get(HELDOUT_SPLIT, 0) > 0):
        raise ValueError(f"a {HELDOUT_SPLIT!r} split (fraction > 0) and heldout_voices go together; "
                         f"got splits {dict(splits)} and heldout_voices for {sorted(heldout)}")
    for lang, held in heldout.items():
        if lang not in languages:
            raise ValueError(f"heldout_voices names language {lang!r}, which the corpus does not build "
                             f"(languages: {list(languages)})")
        held.check(lang, voices[lang])


def _tally(items: list[tuple[PlannedUtterance, float]]) -> dict[str, Any]:
    """Counts and hours of (utterance, seconds) pairs, overall and by language, domain and accent."""
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for utt, seconds in items:
        groups["lang"][utt.lang].append(seconds)
        groups["domain"][utt.domain].append(seconds)
        groups["accent"][utt.speaker.voice].append(seconds)
    return {
        "utterances": len(items),
        "dialogues": len({utt.dialogue for utt, _ in items}),
        "distinct_texts": len({utt.text for utt, _ in items}),
        "hours": round(sum(seconds for _, seconds in items) / 3600, 4),
        **{
            name: {
                key: {"utterances": len(values), "hours": round(sum(values) / 3600, 4)}
                for key, values in sorted(group.items())
            }
            for name, group in groups.items()
        },
    }


def build_corpus(
    out_dir: str | Path,
    num_utterances: int,
    seed: int = 0,
    languages: Sequence[str] = LANGUAGES,
    lang_weights: Mapping[str, float] | None = None,
    domains: Sequence[str] = DOMAINS,
    splits: Mapping[str, float] = DEFAULT_SPLITS,
    turns: tuple[int, int] = (2, 4),
    num_distractors: tuple[int, int] = (2, 6),
    invented_names: float = 0.5,
    listed_names: int | None = None,
    noise_snr_db: float | None = None,
    noise_color: str = "white",
    shard_size: int = 1000,
    num_workers: int | None = None,
    voices: Mapping[str, VoiceSpace | Mapping[str, Any]] | None = None,
    heldout_voices: Mapping[str, HeldOutVoices | Mapping[str, Sequence[str]]] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build the synthetic corpus into ``out_dir``: ``{split}/shard-XXXXXX.tar`` and ``stats.json``.

    The same arguments give byte-identical shards whatever ``num_workers`` is.

    Args:
        out_dir: corpus folder.
        num_utterances: utterances over all splits.
        seed: seed of texts, speakers, splits and noise.
        languages: subset of ("en", "zh").
        lang_weights: language -> relative share; languages not in ``languages`` are ignored
            (equal shares when None).
        domains: subset of ("commands", "numbers", "contacts", "sentences"), drawn uniformly.
        splits: split name -> fraction of the utterances (fractions sum to 1).
        turns: inclusive (low, high) utterances per dialogue.
        num_distractors: inclusive (low, high) absent entities added to each utterance's keywords.
        invented_names: probability that an entity or distractor is invented (a name from a space of
            millions, :mod:`seed_asr.corpus.names`) rather than taken from the word lists.
        listed_names: entries kept of each name list (None: all; fewer: each listed name heard more often).
        noise_snr_db: additive noise at this SNR; None for clean speech.
        noise_color: "white" or "pink".
        shard_size: samples per shard.
        num_workers: synthesis processes (None: every usable core; 0 or 1: this process).
        voices: per-language overrides of the default speakers (VoiceSpace or its four keyword arguments),
            only for ``languages``, each with voices of its espeak-ng language (``voice_spaces``).
        heldout_voices: per language, accents and variants (HeldOutVoices or its keyword arguments)
            heard only in the ``heldout`` split, which ``splits`` must then give a fraction.
        overwrite: replace shards already in ``out_dir``.

    Returns:
        The statistics also written to ``stats.json``.

    Raises:
        ValueError: a bad setting or voice, before any work starts.
        FileExistsError: ``out_dir`` already holds shards and ``overwrite`` is false.
    """
    turns, num_distractors = tuple(turns), tuple(num_distractors)
    _check_settings(num_utterances, languages, lang_weights, domains, splits, turns, num_distractors,
                    noise_snr_db, noise_color, shard_size, num_workers, invented_names, listed_names)
    spaces = voice_spaces(voices, languages)
    heldout = held_out_voices(heldout_voices)
    _check_voices(languages, splits, spaces, heldout)
    weights = [1.0 if lang_weights is None else lang_weights[lang] for lang in languages]
    out = Path(out_dir)
    start = time.perf_counter()
    plan = plan_corpus(
        num_utterances, seed, languages, weights, domains, splits, turns, num_distractors, spaces,
        float(invented_names), heldout, listed_names,
    )
    tasks = [
        RenderTask(utt.text, utt.speaker, noise_snr_db, noise_color, (seed, index))
        for index, utt in enumerate(plan)
    ]
    blocks = [tasks[i : i + RENDER_BLOCK] for i in range(0, len(tasks), RENDER_BLOCK)]
    durations: list[tuple[PlannedUtterance, float]] = []
    with contextlib.ExitStack() as stack:
        writers = {
            name: stack.enter_context(SplitWriter(out, name, shard_size, overwrite)) for name in splits
        }
        workers = min(default_workers() if num_workers is None else num_workers, len(blocks))
        rendered = itertools.chain.from_iterable(ordered_map(render_block, blocks, workers, chunksize=1))
        for utt, (flac, num_samples, phonemes) in zip(plan, rendered, strict=True):
            record = make_record(
                text=utt.text, lang=utt.lang, domain=utt.domain, speaker=utt.speaker.name,
                duration=num_samples / SAMPLE_RATE, history=utt.history, keywords=utt.keywords,
                entities=utt.entities, dialogue=utt.dialogue, phonemes=phonemes,
            )
            writers[utt.split].write(utt.key, flac, record)
            durations.append((utt, num_samples / SAMPLE_RATE))
    stats = {
        "seed": seed,
        "settings": {
            "num_utterances": num_utterances, "languages": list(languages),
            "lang_weights": dict(zip(languages, weights, strict=True)),
            "domains": list(domains), "splits": dict(splits), "turns": list(turns),
            "num_distractors": list(num_distractors), "invented_names": invented_names,
            "listed_names": listed_names, "noise_snr_db": noise_snr_db,
            "noise_color": noise_color,
            "shard_size": shard_size, "sample_rate": SAMPLE_RATE, "render_block": RENDER_BLOCK,
            "espeak_ng": get_engine().version,
            "voices": {
                lang: {key: list(value) for key, value in dataclasses.asdict(spaces[lang]).items()}
                for lang in languages
            },
            "heldout_voices": {lang: dataclasses.asdict(held) for lang, held in heldout.items()},
        },
        **_tally(durations),
        "splits": {
            name: {"shards": writer.num_shards, **_tally([d for d in durations if d[0].split == name])}
            for name, writer in writers.items()
        },
    }
    (out / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    log.info("built %d utterances (%.2f h) in %s in %.1f s", len(plan), stats["hours"], out,
             time.perf_counter() - start)
    return stats
