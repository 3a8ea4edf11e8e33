"""espeak-ng synthesis and the speaker space of the built-in corpus."""

import random

import numpy as np
import pytest

from seed_asr.corpus.synth import get_engine, synthesize
from seed_asr.corpus.voices import DEFAULT_VOICES, Speaker, VoiceSpace, voice_spaces
from seed_asr.data.audio import SAMPLE_RATE


def _rms(wave):
    return float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))


def test_speaker_names_round_trip():
    speaker = Speaker("en-gb-scotland", "f2", 160, 55)
    assert speaker.name == "en-gb-scotland+f2/r160/p55"
    assert Speaker.parse(speaker.name) == speaker
    assert Speaker.parse("cmn-latn-pinyin/r150/p40") == Speaker("cmn-latn-pinyin", "", 150, 40)
    with pytest.raises(ValueError, match="not of the form"):
        Speaker.parse("en-us+m1")


def test_default_voices_are_known_to_espeak_and_sound_different():
    engine = get_engine()
    for space in DEFAULT_VOICES.values():
        space.check(engine)
    waves = {accent: synthesize("call Anneliese Okonkwo", accent) for accent in DEFAULT_VOICES["en"].accents}
    assert len({w.tobytes() for w in waves.values()}) == len(waves)  # no silent fallback to one voice
    variants = {v: synthesize("call Anneliese", f"en-us+{v}" if v else "en-us")
                for v in DEFAULT_VOICES["en"].variants}
    assert len({w.tobytes() for w in variants.values()}) == len(variants)


@pytest.mark.parametrize("voice", ["en-gb-scotlnd", "en", "en-us+m99", "cmn-latn-pinyin+nobody"])
def test_unknown_voices_are_errors(voice):
    with pytest.raises(ValueError, match="unknown espeak-ng"):
        get_engine().check_voice(voice)
    with pytest.raises(ValueError, match="unknown espeak-ng"):
        synthesize("hello", voice)


def test_reset_makes_synthesis_reproducible():
    engine = get_engine()
    engine.reset()
    first = engine.synthesize("set a timer for ten minutes", "en-us", 175, 50, seed=3)
    again = engine.synthesize("set a timer for ten minutes", "en-us", 175, 50, seed=3)
    engine.reset()
    after_reset = engine.synthesize("set a timer for ten minutes", "en-us", 175, 50, seed=3)
    assert np.array_equal(first, after_reset)
    assert not np.array_equal(first, again)  # the state espeak-ng carries over, which reset clears


def test_synthesis_is_speech_at_16_khz():
    engine = get_engine()
    engine.reset()
    raw = engine.synthesize("set a timer for ten minutes", "en-us", 175, 50, seed=1)
    engine.reset()
    wave = synthesize("set a timer for ten minutes", "en-us", 175, 50, seed=1)
    assert engine.sample_rate == 22050 and wave.dtype == np.float32
    assert abs(wave.size - raw.size * SAMPLE_RATE / engine.sample_rate) <= 1
    assert 1.0 < wave.size / SAMPLE_RATE < 4.0 and _rms(wave) > 0.02 and np.abs(wave).max() <= 1.0
    zh = synthesize("给张子涵打电话", "cmn-latn-pinyin")
    assert 7 * 0.15 < zh.size / SAMPLE_RATE < 7 * 0.6 and _rms(zh) > 0.02  # about 0.3 s per character


def test_rate_and_pitch_change_the_voice():
    slow = synthesize("turn on the lights in the kitchen", "en-gb", rate=130)
    fast = synthesize("turn on the lights in the kitchen", "en-gb", rate=210)
    assert fast.size < 0.8 * slow.size
    low = synthesize("turn on the lights", "en-gb", pitch=20)
    high = synthesize("turn on the lights", "en-gb", pitch=80)
    assert low.tobytes() != high.tobytes()


def test_voice_space_sampling_and_validation():
    space = VoiceSpace(accents=["en-us", "en-029"], variants=["", "m3"], rates=[150, 160], pitches=[40, 40])
    assert space.rates == (150, 160)  # lists from Hydra become tuples
    speakers = {space.sample(random.Random(i)) for i in range(50)}
    assert {s.voice for s in speakers} == {"en-us", "en-029"} and {s.variant for s in speakers} == {"", "m3"}
    assert {s.rate for s in speakers} <= {150, 155, 160} and {s.pitch for s in speakers} == {40}
    with pytest.raises(ValueError, match="rates"):
        VoiceSpace(accents=("en-us",), variants=("",), rates=(200, 100), pitches=(40, 60))
    with pytest.raises(ValueError, match="unknown espeak-ng variant 'x9'"):
        VoiceSpace(("en-us",), ("x9",), (150, 160), (40, 60)).check(get_engine())
    overridden = voice_spaces({"en": {"accents": ["en-us"], "variants": [""], "rates": [150, 150],
                                      "pitches": [50, 50]}})
    assert overridden["en"].accents == ("en-us",) and overridden["zh"] == DEFAULT_VOICES["zh"]
