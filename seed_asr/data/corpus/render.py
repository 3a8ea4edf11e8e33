"""Audio of one corpus utterance, the unit of work of the synthesis processes.

Kept apart from the builder so that worker processes import only espeak, numpy, scipy and soundfile
(not webdataset, which pulls in torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seed_asr.data.audio import encode_flac
from seed_asr.data.corpus.noise import add_noise
from seed_asr.data.corpus.synth import synthesize
from seed_asr.data.corpus.voices import Speaker


@dataclass(frozen=True)
class RenderTask:
    """What a worker needs to produce one utterance's audio.

    Attributes:
        text: what to say.
        speaker: who says it.
        noise_snr_db: SNR of added noise; None for none.
        noise_color: "white" or "pink".
        noise_seed: seed of the noise (the corpus seed and the utterance index).
    """

    text: str
    speaker: Speaker
    noise_snr_db: float | None
    noise_color: str
    noise_seed: tuple[int, int]


def render(task: RenderTask) -> tuple[bytes, int]:
    """Synthesise (and add noise to) one utterance.

    Returns:
        16-bit mono FLAC bytes at 16 kHz and the number of samples S.
    """
    speaker = task.speaker
    wave = synthesize(task.text, speaker.espeak_voice, speaker.rate, speaker.pitch)
    if task.noise_snr_db is not None:
        wave = add_noise(wave, task.noise_snr_db, task.noise_color, np.random.default_rng(task.noise_seed))
    return encode_flac(wave), wave.size
