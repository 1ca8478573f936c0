"""The audio front end against independent references: scipy's polyphase resampler, hand-made bad files."""

import struct

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from jaxcodec import audio


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return mono if channels == 1 else np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
def test_read_resamples_like_scipy_polyphase(tmp_path, rate):
    path = tmp_path / "x.wav"
    sf.write(path, tone(1.0, rate), rate, subtype="FLOAT")
    wav, info = audio.read(path)
    assert info.sample_rate == rate and info.channels == 1
    up, down = 16_000 // np.gcd(16_000, rate), rate // np.gcd(16_000, rate)
    reference = scipy.signal.resample_poly(tone(1.0, rate).astype(np.float64), up, down)
    assert abs(len(wav) - len(reference)) <= 1 and len(wav) == 16_000
    inner = slice(400, 15_600)  # the two filters differ only in their edge transients
    assert np.abs(wav[inner] - reference[inner]).max() < 2e-3


def test_streaming_equals_one_shot_resampling(tmp_path, monkeypatch):
    path = tmp_path / "x.wav"
    sf.write(path, tone(2.3, 48_000, 300.0), 48_000, subtype="FLOAT")
    whole = audio.resample(tone(2.3, 48_000, 300.0), 48_000)
    monkeypatch.setattr(audio, "READ_BLOCK_FRAMES", 4_001)  # many blocks with awkward boundaries
    streamed, _ = audio.read(path)
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_stereo_is_the_channel_mean(tmp_path):
    path = tmp_path / "s.flac"
    stereo = tone(0.5, 16_000, channels=2)
    sf.write(path, stereo, 16_000, subtype="PCM_24")
    wav, info = audio.read(path)
    assert info.channels == 2
    np.testing.assert_allclose(wav, stereo.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(b"this is not audio at all " * 40), "not readable as audio"),
    (lambda p: None, "file not found"),
])
def test_unreadable_files_raise_a_one_line_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(audio.AudioError, match=reason) as err:
        audio.read(path)
    assert "\n" not in str(err.value)


def test_truncated_wav_is_detected(tmp_path):
    path = tmp_path / "t.wav"
    sf.write(path, tone(1.0, 16_000), 16_000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # libsndfile alone would read this as a 0.5 s file
    with pytest.raises(audio.AudioError, match="truncated WAV: header declares 32000 bytes of audio, file holds 15978"):
        audio.info(path)


def test_check_rejects_nan_silence_and_length():
    ok = tone(1.0, 16_000)
    levels = audio.check(ok, min_seconds=0.5)
    assert levels.peak == pytest.approx(0.5, abs=1e-4)
    assert levels.rms_db == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    nan = ok.copy()
    nan[10:13] = np.nan
    with pytest.raises(audio.AudioError, match="3 NaN/Inf samples"):
        audio.check(nan)
    with pytest.raises(audio.AudioError, match="silent"):
        audio.check(np.zeros(16_000, np.float32))
    with pytest.raises(audio.AudioError, match=r"too short: 0.050 s < 0.5 s"):
        audio.check(ok[:800], min_seconds=0.5)
    with pytest.raises(audio.AudioError, match="too long"):
        audio.check(ok, max_seconds=0.5)


def test_int16_storage_round_trip_and_overload_gain():
    wav = tone(0.1, 16_000)
    pcm, gain = audio.to_int16(wav)
    assert gain == 1.0 and pcm.dtype == np.int16
    assert np.abs(audio.from_int16(pcm) - wav).max() <= 0.5 / 32_768 + 1e-7
    loud = 3.0 * wav  # float files may exceed full scale: scaled, not clipped
    pcm, gain = audio.to_int16(loud)
    assert gain == pytest.approx(audio.CLIP_LEVEL / 1.5)
    assert pcm.max() <= 32_767 and audio.levels(audio.from_int16(pcm)).clipped_fraction < 0.01
    np.testing.assert_allclose(audio.from_int16(pcm), loud * gain, atol=1 / 32_768)


def test_atomic_write_round_trip(tmp_path):
    path = tmp_path / "out.wav"
    audio.write(path, tone(0.2, 16_000))
    back, info = audio.read(path)
    assert info.subtype == "PCM_16" and len(back) == 3_200
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


COMPRESSED = [("ogg", "OGG", "VORBIS", 44_100), ("mp3", "MP3", "MPEG_LAYER_III", 44_100),
              ("opus", "OGG", "OPUS", 48_000)]


@pytest.mark.parametrize("ext, fmt, subtype, rate", COMPRESSED)
def test_compressed_formats_decode_to_16k_mono(tmp_path, ext, fmt, subtype, rate):
    path = tmp_path / f"x.{ext}"
    sf.write(path, tone(1.0, rate, 300.0), rate, format=fmt, subtype=subtype)
    wav, info = audio.read(path)
    assert info.format == fmt and info.sample_rate == rate
    assert abs(len(wav) - 16_000) <= 16_000 * 0.06  # codec priming/padding frames, at most a few tens of ms
    assert audio.levels(wav).rms_db == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=1.0)


def _wav_header(sample_rate: int, data_bytes: int, channels: int = 1, bits: int = 16) -> bytes:
    """A canonical 44-byte PCM RIFF header, to say what a writer would refuse to."""
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, bits) + b"data"
        + struct.pack("<I", data_bytes))


def test_a_header_rate_of_1_hz_is_refused_before_reading(tmp_path):
    """Issue 18 #8: a 64 KB WAV whose header says 1 Hz was listed by `manifest` as 9 h and read into 512 M
    samples; now its header is refused (as a reject of the scan) and nothing is allocated from it."""
    from jaxcodec.data import manifest

    data = np.random.default_rng(0).integers(-3000, 3000, 32_768).astype("<i2").tobytes()
    (tmp_path / "one_hz.wav").write_bytes(_wav_header(1, len(data)) + data)
    sf.write(tmp_path / "fine.wav", np.full(1600, 0.1, np.float32), 16_000)
    with pytest.raises(audio.AudioError, match="header says 1 Hz, outside 1000..384000 Hz"):
        audio.read(tmp_path / "one_hz.wav")
    entries, rejects = manifest.scan(tmp_path, split_by="utterance", workers=1)
    assert [e["path"] for e in entries] == [str(tmp_path / "fine.wav")]
    assert [r["path"] for r in rejects] == [str(tmp_path / "one_hz.wav")] and "1 Hz" in rejects[0]["reason"]
