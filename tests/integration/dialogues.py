"""A tiny corpus of dialogues for context tests: "call <name> now" turns of synthetic audio with dialogue
history and hot words (the entity and two distractors) in every record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import webdataset as wds

from seed_asr.data.audio import SAMPLE_RATE, encode_flac
from seed_asr.testing.synthetic import synthetic_wave

NAMES = ["Okonkwo", "Brandvold", "Anneliese", "Vasquez", "Ilse", "Tromso", "Marguerite", "Halvorsen"]


def write_split(folder: Path, split: str, dialogues: int, seed: int) -> None:
    """`folder/split/shard-000000.tar`: dialogues of 3 turns with history and hot words."""
    rng = np.random.default_rng(seed)
    (folder / split).mkdir(parents=True)
    with wds.TarWriter(str(folder / split / "shard-000000.tar")) as writer:
        for d in range(dialogues):
            history = ""
            for turn in range(3):
                name, *others = rng.permutation(NAMES)[:3].tolist()
                text = f"call {name} now"
                seconds = float(rng.uniform(0.8, 1.5))
                record = {
                    "text": text,
                    "lang": "en",
                    "domain": "contacts",
                    "speaker": "tone",
                    "duration": seconds,
                    "dialogue": f"{split}{d}",
                    "context": {"history": history, "keywords": [name, *others], "entities": [name]},
                }
                wave = synthetic_wave(rng, seconds)
                writer.write(
                    {
                        "__key__": f"{split}{d}-{turn}",
                        "flac": encode_flac(wave, SAMPLE_RATE),
                        "json": json.dumps(record).encode(),
                    }
                )
                history = text


def write_dialogue_corpus(folder: Path) -> Path:
    """train (8 dialogues), dev (2) and test (3) splits under `folder`."""
    for split, dialogues, seed in (("train", 8, 0), ("dev", 2, 1), ("test", 3, 2)):
        write_split(folder, split, dialogues, seed)
    return folder
