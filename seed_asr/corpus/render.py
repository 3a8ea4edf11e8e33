"""Audio of corpus utterances, the unit of work of the synthesis processes.

Kept apart from the builder so that worker processes import only espeak, numpy, scipy and soundfile
(not webdataset, which pulls in torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seed_asr.corpus.noise import add_noise
from seed_asr.corpus.synth import get_engine, synthesize
from seed_asr.corpus.voices import Speaker
from seed_asr.data.audio import encode_flac


@dataclass(frozen=True)
class RenderTask:
    """What a worker needs to produce one utterance's audio.

    Attributes:
        text: what to say.
        speaker: who says it.
        noise_snr_db: SNR of added noise; None for none.
        noise_color: "white" or "pink".
        seed: seed of the utterance (the corpus seed and its index): espeak-ng's and the noise's.
    """

    text: str
    speaker: Speaker
    noise_snr_db: float | None
    noise_color: str
    seed: tuple[int, int]


def render_block(tasks: Sequence[RenderTask]) -> list[tuple[bytes, int, str]]:
    """Synthesise (and add noise to) a block of utterances, in order.

    The engine is reset first: espeak-ng carries signal-generator state from one utterance to the next,
    so a block gives the same audio in any process, after any other work.

    Returns:
        Per task: 16-bit mono FLAC bytes at 16 kHz, the number of samples S, and the IPA phonemes
        espeak-ng read the text as (with the speaker's voice).
    """
    engine = get_engine()
    engine.reset()
    out = []
    for task in tasks:
        seeds = np.random.SeedSequence(task.seed)
        espeak_seed = int(seeds.generate_state(1)[0] & 0x7FFFFFFF)
        speaker = task.speaker
        wave = synthesize(task.text, speaker.espeak_voice, speaker.rate, speaker.pitch, seed=espeak_seed)
        if task.noise_snr_db is not None:
            wave = add_noise(wave, task.noise_snr_db, task.noise_color, np.random.default_rng(seeds))
        out.append((encode_flac(wave), wave.size, engine.phonemes(task.text, speaker.espeak_voice)))
    return out
