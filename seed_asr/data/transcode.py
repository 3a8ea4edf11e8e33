"""Re-encoding of audio files as 16 kHz mono FLAC, the unit of work of shard conversion processes.

Kept apart from :mod:`seed_asr.data.shards` so that worker processes do not import webdataset (and
with it torch).
"""

from __future__ import annotations

from pathlib import Path

from seed_asr.data.audio import AudioError, decode_audio, encode_flac


def transcode_to_flac(path: Path) -> tuple[bytes, int] | str:
    """Decode ``path`` (mono, resampled to 16 kHz) and encode it as 16-bit FLAC.

    Returns:
        (FLAC bytes, samples S), or the error message naming the file when it is missing or unreadable.
    """
    try:
        wave = decode_audio(path)
    except AudioError as err:
        return str(err)
    return encode_flac(wave), wave.size
