"""espeak-ng speech synthesis through ctypes on the library shipped by PyPI ``espeakng-loader``.

No system package is needed: the wheel carries ``libespeak-ng.so`` and its data folder. The C library
keeps one global state per process, so :func:`get_engine` initialises it once per process and hands
out that one :class:`Espeak`.
"""

from __future__ import annotations

import _ctypes
import ctypes
import functools

import espeakng_loader
import numpy as np

from seed_asr.data.audio import SAMPLE_RATE, resample

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE and flag values of speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_RATE, _PITCH = 1, 3
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_EE_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Voice(ctypes.Structure):
    """espeak_VOICE; ``languages`` is a run of (priority byte, NUL-terminated name), ended by a 0 byte."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def _languages(address: int | None) -> list[str]:
    names = []
    while address and ctypes.c_ubyte.from_address(address).value:
        name = ctypes.string_at(address + 1)
        names.append(name.decode())
        address += len(name) + 2
    return names


class Espeak:
    """The process's espeak-ng engine (build it through :func:`get_engine`).

    Attributes:
        sample_rate: rate of the raw synthesis (22050 Hz).
        version: espeak-ng's version (the audio depends on it).
        voices: valid voice name -> espeak-ng voice file. The names are each voice's own language code
            ("en-gb-scotland", "cmn-latn-pinyin"); ``espeak_SetVoiceByName`` needs the file ("gmw/en"
            for "en-gb"), as it does not find every voice by its language code.
        variants: valid variant names (appended as ``voice+variant``: "m1", "f2", "klatt", ...).
    """

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # kept referenced: the library calls it
        self._lib, self.sample_rate = self._open()
        self.version = self._lib.espeak_Info(None).decode()
        self.voices = {langs[0]: ident for ident, langs in reversed(self._list_voices(None)) if langs}
        self.variants = frozenset(ident.split("/", 1)[1] for ident, _ in self._list_voices("variant"))

    def _open(self) -> tuple[ctypes.CDLL, int]:
        """Load and initialise the library; returns it and its sample rate."""
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        data_path = espeakng_loader.get_data_path().encode()
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data at {data_path.decode()}")
        lib.espeak_SetSynthCallback(self._callback)
        self._current: tuple[str, int, int] | None = None
        return lib, sample_rate

    def reset(self) -> None:
        """Unload and reload the library, back to the state of a fresh process.

        espeak-ng keeps signal-generator state (e.g. the pitch flutter phase) from one utterance to
        the next, which even espeak_Terminate + espeak_Initialize keep; only unloading the library
        clears it. Reproducible audio therefore needs a reset before a fixed sequence of utterances.
        (This works while nothing else in the process holds the library open.)
        """
        self._lib.espeak_Terminate()
        _ctypes.dlclose(self._lib._handle)
        self._lib, self.sample_rate = self._open()

    def _collect(self, wav: ctypes._Pointer, num_samples: int, events: int) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # continue synthesis

    def _list_voices(self, language: str | None) -> list[tuple[str, list[str]]]:
        spec = None
        if language is not None:
            name = ctypes.c_char_p(language.encode())
            spec = _Voice(languages=ctypes.cast(name, ctypes.c_void_p))
        found = self._lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
        voices, i = [], 0
        while found[i]:
            voice = found[i].contents
            voices.append((voice.identifier.decode(), _languages(voice.languages)))
            i += 1
        return voices

    def check_voice(self, voice: str) -> None:
        """Raise ValueError unless ``voice`` ("name" or "name+variant") is known to espeak-ng.

        espeak-ng silently falls back to another voice on unknown names, hence this check.
        """
        name, _, variant = voice.partition("+")
        if name not in self.voices:
            raise ValueError(f"unknown espeak-ng voice {name!r} in {voice!r}; known: {sorted(self.voices)}")
        if variant and variant not in self.variants:
            known = sorted(self.variants)
            raise ValueError(f"unknown espeak-ng variant {variant!r} in {voice!r}; known: {known}")

    def _select(self, voice: str, rate: int, pitch: int) -> None:
        if self._current == (voice, rate, pitch):
            return
        self.check_voice(voice)
        name, plus, variant = voice.partition("+")
        if self._lib.espeak_SetVoiceByName(f"{self.voices[name]}{plus}{variant}".encode()) != _EE_OK:
            raise RuntimeError(f"espeak_SetVoiceByName failed for {voice!r}")
        self._lib.espeak_SetParameter(_RATE, rate, 0)
        self._lib.espeak_SetParameter(_PITCH, pitch, 0)
        self._current = (voice, rate, pitch)

    def synthesize(
        self, text: str, voice: str, rate: int = 175, pitch: int = 50, seed: int | None = None
    ) -> np.ndarray:
        """Speak ``text``.

        The audio depends on ``seed`` (espeak-ng's random generator, seeded from the clock when None)
        and on what was synthesised since the last :meth:`reset`.

        Args:
            text: UTF-8 text.
            voice: "name" or "name+variant".
            rate: words per minute (espeak accepts 80..450).
            pitch: 0..100 (50 is the voice's normal pitch).
            seed: seed of espeak-ng's random generator for this utterance.

        Returns:
            (S,) float32 in [-1, 1] at :attr:`sample_rate`.
        """
        self._select(voice, rate, pitch)
        data = text.encode()
        self._chunks.clear()
        if seed is not None:
            self._lib.espeak_ng_SetRandSeed(seed)
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed ({status}) for {text!r}")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks.clear()
        return samples.astype(np.float32) / 32768.0

    def phonemes(self, text: str, voice: str) -> str:
        """IPA phonemes espeak-ng reads ``text`` as (clauses joined by spaces); for checking texts."""
        self._select(voice, 175, 50)
        buffer = ctypes.create_string_buffer(text.encode())
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        clauses = []
        while pointer.value:
            clauses.append(self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA))
        return " ".join(c.decode() for c in clauses if c)


@functools.cache
def get_engine() -> Espeak:
    """The process's espeak-ng engine, initialised on first use."""
    return Espeak()


def synthesize(
    text: str, voice: str, rate: int = 175, pitch: int = 50, seed: int | None = None, sr: int = SAMPLE_RATE
) -> np.ndarray:
    """Speak ``text`` with the process's engine (see :meth:`Espeak.synthesize`) and resample.

    Returns:
        (S,) float32 waveform at ``sr`` (16 kHz by default).
    """
    engine = get_engine()
    return resample(engine.synthesize(text, voice, rate, pitch, seed), engine.sample_rate, sr)
