"""Speaker variety of the built-in corpus: espeak-ng voices (accents), variants, rates and pitches."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

from seed_asr.corpus.synth import Espeak

T = TypeVar("T")


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker; its name is ``voice[+variant]/r<rate>/p<pitch>``."""

    voice: str
    variant: str
    rate: int
    pitch: int

    @property
    def espeak_voice(self) -> str:
        """The name espeak-ng takes: "en-gb-scotland+f2"."""
        return f"{self.voice}+{self.variant}" if self.variant else self.voice

    @property
    def name(self) -> str:
        """"en-gb-scotland+f2/r160/p55"."""
        return f"{self.espeak_voice}/r{self.rate}/p{self.pitch}"

    @classmethod
    def parse(cls, name: str) -> Speaker:
        """Inverse of :attr:`name`."""
        match = re.fullmatch(r"([^+/]+)(?:\+([^/]+))?/r(\d+)/p(\d+)", name)
        if match is None:
            raise ValueError(f"speaker {name!r} is not of the form voice[+variant]/r<rate>/p<pitch>")
        voice, variant, rate, pitch = match.groups()
        return cls(voice, variant or "", int(rate), int(pitch))


@dataclass(frozen=True)
class VoiceSpace:
    """The speakers of one language: every combination of accent, variant, rate and pitch.

    Attributes:
        accents: espeak-ng voice names.
        variants: espeak-ng variants; "" keeps the voice's own.
        rates: inclusive (low, high) words per minute, drawn in steps of 5.
        pitches: inclusive (low, high) espeak pitch (0..100), drawn in steps of 5.
    """

    accents: tuple[str, ...]
    variants: tuple[str, ...]
    rates: tuple[int, int]
    pitches: tuple[int, int]

    def __post_init__(self) -> None:
        for field in fields(self):  # Hydra hands lists; keep the dataclass hashable and immutable
            object.__setattr__(self, field.name, tuple(getattr(self, field.name)))
        if not self.accents or not self.variants:
            raise ValueError(f"VoiceSpace needs at least one accent and one variant, got {self}")
        for label, (low, high), (least, most) in (
            ("rates", self.rates, (80, 450)),
            ("pitches", self.pitches, (0, 100)),
        ):
            if not least <= low <= high <= most:
                raise ValueError(f"VoiceSpace {label} must satisfy {least} <= low <= high <= {most}, "
                                 f"got {(low, high)}")

    def sample(self, rng: random.Random) -> Speaker:
        return Speaker(
            voice=rng.choice(self.accents),
            variant=rng.choice(self.variants),
            rate=rng.randrange(self.rates[0], self.rates[1] + 1, 5),
            pitch=rng.randrange(self.pitches[0], self.pitches[1] + 1, 5),
        )

    def sample_where(self, rng: random.Random, keep: Callable[[Speaker], bool]) -> Speaker:
        """A speaker drawn uniformly among those ``keep`` accepts (rejection sampling).

        Raises:
            ValueError: no (accent, variant) of this space is accepted.
        """
        combos = [Speaker(a, v, self.rates[0], self.pitches[0]) for a in self.accents for v in self.variants]
        if not any(map(keep, combos)):
            raise ValueError(f"no speaker of {self} is accepted")
        while not keep(speaker := self.sample(rng)):
            pass
        return speaker

    def check(self, engine: Espeak) -> None:
        """Raise ValueError naming the first accent or variant espeak-ng does not know."""
        for accent in self.accents:
            engine.check_voice(accent)
        for variant in filter(None, self.variants):
            engine.check_voice(f"{self.accents[0]}+{variant}")


_MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
_FEMALE = ("f1", "f2", "f3", "f4")

#: Default speakers per language.
DEFAULT_VOICES: Mapping[str, VoiceSpace] = {
    "en": VoiceSpace(
        accents=("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                 "en-029", "en-us-nyc"),
        variants=("", *_MALE, *_FEMALE),
        rates=(130, 210),
        pitches=(30, 70),
    ),
    # cmn-latn-pinyin reads Chinese characters as Mandarin (plain "cmn" reads them as English pinyin).
    "zh": VoiceSpace(accents=("cmn-latn-pinyin",), variants=("", *_MALE, *_FEMALE), rates=(120, 190),
                     pitches=(30, 70)),
}


#: The espeak-ng language of each corpus language: its voices are named by that code, alone or followed by
#: "-" ("en", "en-gb-scotland"; "cmn", "cmn-latn-pinyin"). A voice of another language reads the text its
#: own way ("en-us" says "Chinese letter" for each Chinese character) under the corpus language's labels.
ESPEAK_LANGUAGES: Mapping[str, str] = {"en": "en", "zh": "cmn"}


@dataclass(frozen=True)
class HeldOutVoices:
    """Accents and variants of one language kept out of training: a speaker using any of them is held out.

    The corpus puts held-out speakers in its ``heldout`` split only, so that split measures how a model
    generalises to voices it never heard.
    """

    accents: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str):
                raise ValueError(f"HeldOutVoices {field.name} must be a list of names, got {value!r}")
            object.__setattr__(self, field.name, tuple(value))
        if not self.accents and not self.variants:
            raise ValueError("HeldOutVoices needs at least one accent or variant")

    def holds(self, speaker: Speaker) -> bool:
        """Whether ``speaker`` uses a held-out accent or variant."""
        return speaker.voice in self.accents or speaker.variant in self.variants

    def check(self, lang: str, space: VoiceSpace) -> None:
        """Raise ValueError unless every name is in ``space`` and some speakers of it remain for training."""
        for label, names, known in (("accents", self.accents, space.accents),
                                    ("variants", self.variants, space.variants)):
            unknown = [name for name in names if name not in known]
            if unknown:
                raise ValueError(f"heldout_voices.{lang}.{label}: {unknown} are not among the language's "
                                 f"{label} {list(known)}")
        if set(space.accents) <= set(self.accents) or set(space.variants) <= set(self.variants):
            raise ValueError(f"heldout_voices.{lang} holds out every accent or every variant of {space}: "
                             "no speaker is left for training")


def held_out_voices(
    config: Mapping[str, HeldOutVoices | Mapping[str, Sequence[str]]] | None,
) -> dict[str, HeldOutVoices]:
    """Language -> :class:`HeldOutVoices` from a config mapping (None: nothing held out).

    Raises:
        ValueError: an entry that is not ``{accents: [...], variants: [...]}``, naming its language.
    """
    held = {}
    for lang, value in (config or {}).items():
        try:
            held[lang] = value if isinstance(value, HeldOutVoices) else from_entry(HeldOutVoices, value)
        except ValueError as err:
            raise ValueError(f"heldout_voices.{lang} must be {{accents: [...], variants: [...]}}: "
                             f"{err}") from err
    return held


def from_entry(cls: type[T], entry: Any) -> T:
    """An instance of the dataclass ``cls`` from a config entry: a mapping that gives every field without
    a default and no other key.

    Raises:
        ValueError: not a mapping, missing or unknown keys (named), or a bad value (``cls``'s own check).
    """
    names = [field.name for field in fields(cls)]
    if not isinstance(entry, Mapping):
        raise ValueError(f"must be a mapping of {names}, got {entry!r}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in entry]
    unknown = sorted(set(entry) - set(names))
    if missing or unknown:
        wrong = [f"{label} {keys}" for label, keys in (("missing", missing), ("unknown", unknown)) if keys]
        raise ValueError(f"an entry gives {names} (required: {required}): {', '.join(wrong)}")
    return cls(**entry)


def voice_spaces(
    overrides: Mapping[str, VoiceSpace | Mapping[str, Any]] | None = None,
    languages: Sequence[str] = tuple(DEFAULT_VOICES),
) -> dict[str, VoiceSpace]:
    """The speakers of each of ``languages``: :data:`DEFAULT_VOICES` with per-language ``overrides``
    (VoiceSpace, or its four keyword arguments).

    Raises:
        ValueError: naming and counting every problem: an override for a language not in ``languages``,
            an entry with missing, unknown or bad fields, accents of another espeak-ng language
            (:data:`ESPEAK_LANGUAGES`). Whether espeak-ng knows each name is :meth:`VoiceSpace.check`'s.
    """
    overrides = overrides or {}
    problems = [f"voices.{lang}: the corpus does not build {lang!r} (languages: {list(languages)})"
                for lang in overrides if lang not in languages]
    spaces = {}
    for lang in languages:
        if lang not in ESPEAK_LANGUAGES:
            problems.append(f"voices.{lang}: no espeak-ng language for {lang!r} "
                            f"(known: {list(ESPEAK_LANGUAGES)})")
            continue
        entry = overrides[lang] if lang in overrides else DEFAULT_VOICES[lang]
        try:
            spaces[lang] = entry if isinstance(entry, VoiceSpace) else from_entry(VoiceSpace, entry)
        except (TypeError, ValueError) as err:
            problems.append(f"voices.{lang}: {err}")
            continue
        code = ESPEAK_LANGUAGES[lang]
        foreign = [a for a in spaces[lang].accents if a != code and not a.startswith(f"{code}-")]
        if foreign:
            problems.append(f"voices.{lang}.accents: {foreign} are espeak-ng voices of another language than "
                            f"{lang!r}, whose voices are {code!r} or {code}-*")
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ValueError(f"{count} in voices: " + "; ".join(problems))
    return spaces
