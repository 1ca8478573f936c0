"""The audio front end shared by the manifest, the teachers' precompute and tokenization (numpy, soundfile, soxr;
no jax, no torch): read any file libsndfile decodes, downmix to mono, resample to the codec's rate, and reject what
no model should see, each rejection an `AudioError` whose message is the one-line reason a user reads.

Long files are streamed block by block through a streaming resampler, so memory is bounded by the 16 kHz mono
output, not by the input's rate and channel count.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from jaxcodec import atomic

SAMPLE_RATE = 16_000  # Hz: the codec's and both teachers' rate (HuBERT and ECAPA-TDNN are trained at 16 kHz).
READ_BLOCK_FRAMES = 1 << 16  # input frames per streamed block (~1.4 s at 48 kHz): bounds read memory.
RESAMPLE_QUALITY = "VHQ"  # soxr's very-high-quality filter: passband to 0.91·Nyquist, -175 dB stop band.
SILENCE_PEAK = 10 ** (-80 / 20)  # peak below −80 dBFS (~3 int16 steps): digital silence, nothing to learn from.
CLIP_LEVEL = 32_767 / 32_768  # |x| at or above the int16 full scale counts as clipped.
INT16_SCALE = 32_768.0  # int16 ⇄ float in [-1, 1), as soundfile reads PCM_16.
# A header's rate outside this range is damage, not audio: below 1 kHz no speech band survives (telephone speech is
# 8 kHz), above 384 kHz no converter records; a 1 Hz header would make a 64 KB file 9 h long and its 16 kHz read
# half a billion samples.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
# Bytes per stored sample of the uncompressed encodings in the containers that store them as they are (FLAC also
# reports PCM_16/PCM_24, but compressed): for these the header's frames × channels × this is data the file must
# hold, so a header claiming more is refused before anything is allocated from it.
UNCOMPRESSED_CONTAINERS = ("WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF")
PCM_BYTES_PER_SAMPLE = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4,
                        "FLOAT": 4, "DOUBLE": 8}
# read() allocates its output from the header's length up to this many samples (10 min at 16 kHz, 38 MB) and
# grows it as data actually decodes beyond that: a compressed file's header cannot make us allocate more.
MAX_PREALLOCATED_SAMPLES = 10 * 60 * SAMPLE_RATE
EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")


class AudioError(ValueError):
    """An audio file that cannot or should not be used; the message is a one-line reason."""


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    frames: int  # samples per channel, as stored
    sample_rate: int
    channels: int
    format: str  # container, e.g. WAV, FLAC
    subtype: str  # encoding, e.g. PCM_16, FLOAT

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


@dataclasses.dataclass(frozen=True)
class Levels:
    peak: float  # max |x|
    rms_db: float  # RMS level in dBFS
    clipped_fraction: float  # fraction of samples at full scale


def info(path: str | os.PathLike) -> AudioInfo:
    """Header information; raises AudioError when the file is missing, not audio, empty or truncated."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        header = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"not readable as audio: {_one_line(err)}") from None
    if header.frames <= 0:
        raise AudioError("no audio samples in the file")
    if not MIN_SAMPLE_RATE <= header.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(f"header says {header.samplerate} Hz, outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz: "
                         f"damaged header")
    if header.format in ("WAV", "WAVEX", "RF64"):
        _check_wav_data_size(path)
    bytes_per_sample = PCM_BYTES_PER_SAMPLE.get(header.subtype)
    if header.format in UNCOMPRESSED_CONTAINERS and bytes_per_sample is not None:
        implied = header.frames * header.channels * bytes_per_sample
        if implied > path.stat().st_size:
            raise AudioError(f"header declares {header.frames} frames × {header.channels} channels "
                             f"({implied} bytes of {header.subtype}), file holds {path.stat().st_size} bytes")
    return AudioInfo(header.frames, header.samplerate, header.channels, header.format, header.subtype)


def _check_wav_data_size(path: Path) -> None:
    """libsndfile silently reads a truncated WAV as a shorter one; a transcript would then not match the audio.
    Compare the size the RIFF 'data' chunk declares with the bytes the file holds."""
    with open(path, "rb") as f:
        if f.read(4) not in (b"RIFF", b"RF64"):
            return
        f.seek(12)
        file_size = path.stat().st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"data":
                available = file_size - f.tell()
                # 0 and 0xFFFFFFFF mean "unknown" (streamed writers, RF64): nothing to compare.
                if size not in (0, 0xFFFFFFFF) and size > available:
                    raise AudioError(f"truncated WAV: header declares {size} bytes of audio, file holds {available}")
                return
            f.seek(size + (size & 1), os.SEEK_CUR)


def downmix(block: np.ndarray) -> np.ndarray:
    """[n] or [n, channels] → mono [n] float32 (the channel mean, as torchaudio/librosa do)."""
    block = np.asarray(block, dtype=np.float32)
    return block if block.ndim == 1 else block.mean(axis=1, dtype=np.float32)


def resample(wav: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling of a mono float32 signal (soxr, very high quality)."""
    wav = np.asarray(wav, dtype=np.float32)
    if from_rate == to_rate:
        return wav
    return soxr.resample(wav, from_rate, to_rate, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)


def read(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, AudioInfo]:
    """Reads a whole file as mono float32 at `sample_rate`, streaming it in blocks (bounded memory).

    Raises AudioError for missing, empty, non-audio, truncated or undecodable files.
    """
    header = info(path)
    resampler = None
    if header.sample_rate != sample_rate:
        resampler = soxr.ResampleStream(header.sample_rate, sample_rate, 1, dtype="float32",
                                        quality=RESAMPLE_QUALITY)
    expected = int(np.ceil(header.frames * sample_rate / header.sample_rate))
    # soxr may return a few samples more than the ratio says; _append grows the array past what the header said.
    out = np.empty(min(expected, MAX_PREALLOCATED_SAMPLES) + 16, dtype=np.float32)
    filled = 0
    read_frames = 0
    try:
        with sf.SoundFile(str(path)) as f:
            blocks = f.blocks(READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
            for block in blocks:
                read_frames += len(block)
                mono = downmix(block)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=False)
                out, filled = _append(out, filled, mono)
            if resampler is not None:
                out, filled = _append(out, filled, resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"decoding failed after {read_frames} frames: {_one_line(err)}") from None
    if read_frames == 0:
        raise AudioError("no audio samples could be decoded")
    return out[:filled], header


def _append(out: np.ndarray, filled: int, chunk: np.ndarray) -> tuple[np.ndarray, int]:
    if filled + len(chunk) > len(out):  # compressed formats may hold more frames than the header said
        grown = np.empty(max(2 * len(out), filled + len(chunk)), dtype=np.float32)
        grown[:filled] = out[:filled]
        out = grown
    out[filled:filled + len(chunk)] = chunk
    return out, filled + len(chunk)


def levels(wav: np.ndarray) -> Levels:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.size == 0:
        return Levels(0.0, float("-inf"), 0.0)
    peak = float(np.max(np.abs(wav)))
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    rms_db = 20.0 * np.log10(rms) if rms > 0 else float("-inf")
    clipped = float(np.mean(np.abs(wav) >= CLIP_LEVEL))
    return Levels(peak, rms_db, clipped)


def check_finite(wav: np.ndarray) -> None:
    """AudioError when any sample is NaN or Inf (float files can hold them; no model should see them)."""
    if not np.all(np.isfinite(wav)):
        bad = int(np.count_nonzero(~np.isfinite(wav)))
        raise AudioError(f"{bad} NaN/Inf samples")


def check(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, min_seconds: float = 0.0,
          max_seconds: float | None = None) -> Levels:
    """Rejects (AudioError) NaN/Inf samples, digital silence and clips outside [min_seconds, max_seconds];
    returns the levels of what passes."""
    seconds = len(wav) / sample_rate
    check_finite(wav)
    if seconds < min_seconds:
        raise AudioError(f"too short: {seconds:.3f} s < {min_seconds:g} s")
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"too long: {seconds:.1f} s > {max_seconds:g} s")
    found = levels(wav)
    if found.peak < SILENCE_PEAK:
        raise AudioError(f"silent: peak {found.peak:.2e} is below -80 dBFS")
    return found


def to_int16(wav: np.ndarray) -> tuple[np.ndarray, float]:
    """float [-1, 1] → int16, and the gain applied: a signal whose peak exceeds full scale (float files can) is
    scaled down to just under it rather than clipped, so no waveform is distorted by storage."""
    wav = np.asarray(wav, dtype=np.float32)
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    gain = 1.0 if peak <= CLIP_LEVEL else CLIP_LEVEL / peak
    scaled = np.round(wav * (gain * INT16_SCALE))
    return np.clip(scaled, -32_768, 32_767).astype(np.int16), gain


def from_int16(pcm: np.ndarray) -> np.ndarray:
    return np.asarray(pcm, dtype=np.float32) / INT16_SCALE


def write(path: str | os.PathLike, wav: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> None:
    """Writes a mono file atomically (a temporary name, then rename)."""
    path = Path(path)
    with atomic.replacing(path) as tmp:
        sf.write(str(tmp), np.asarray(wav, dtype=np.float32), sample_rate, subtype=subtype,
                 format=path.suffix.lstrip(".").upper() or "WAV")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
