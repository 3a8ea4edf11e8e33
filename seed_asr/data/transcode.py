"""Re-encoding of audio files as 16 kHz mono FLAC, the unit of work of shard conversion processes.

Kept apart from :mod:`seed_asr.data.shards` so that worker processes do not import webdataset (and
with it torch).
"""

from __future__ import annotations

from pathlib import Path

from seed_asr.data.audio import AudioError, encode_flac, read_audio


def transcode_to_flac(path: Path) -> tuple[bytes, int, list[str]] | str:
    """Read ``path`` by the rule of ``seed_asr.data.audio.read_audio`` (mono, 16 kHz, non-finite audio
    refused, too loud audio scaled, cancelling channels replaced by one) and encode it as 16-bit FLAC.

    Returns:
        (FLAC bytes, samples S, what was changed), or the error message naming the file when it is
        missing or unusable.
    """
    try:
        decoded = read_audio(path)
    except AudioError as err:
        return str(err)
    return encode_flac(decoded.wave), decoded.wave.size, decoded.notes()
