"""The tokenizer's Python API on a micro codec (random weights, lecun init so codes depend on the audio): shapes,
resampling and downmixing against doing it by hand, the level views, batched against one-by-one, refusals."""

import warnings

import numpy as np
import pytest
from flax import nnx

from jaxcodec import audio
from jaxcodec.models.codec import Codec
from jaxcodec.tokenizer import Tokenizer
from tests.train.micro import micro_config


@pytest.fixture(scope="module")
def tokenizer():
    config = micro_config(model={"conv_init": "lecun"}, rvq={"n_q": 4, "kmeans_init": False})
    return Tokenizer.from_codec(Codec(config, rngs=nnx.Rngs(0)))


def _speech_like(seconds: float, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.size)
            ).astype(np.float32)


@pytest.mark.parametrize("seconds", [1.0, 2.5, 60.0])
def test_round_trip_shapes(tokenizer, seconds):
    wav = _speech_like(seconds)
    codes = tokenizer.encode(wav)
    frames = -(-wav.size // 320)
    assert codes.shape == (4, frames) and codes.dtype == np.int32
    assert 0 <= codes.min() and codes.max() < 16
    assert tokenizer.decode(codes).shape == (frames * 320,)
    assert tokenizer.reconstruct(wav).shape == wav.shape
    assert tokenizer.encode(wav[None], n_q=2).shape == (1, 2, frames)


def test_resampling_and_downmix_equal_doing_it_by_hand_and_warn(tokenizer):
    wav_48k = _speech_like(1.3, 48_000)
    with pytest.warns(UserWarning, match="resampling 48000 Hz"):
        codes = tokenizer.encode(wav_48k, sample_rate=48_000)
    np.testing.assert_array_equal(codes, tokenizer.encode(audio.resample(wav_48k, 48_000, 16_000)))
    stereo = np.stack([_speech_like(1.0), _speech_like(1.0, seed=1)])[None]  # [B=1, C=2, N]
    with pytest.warns(UserWarning, match="downmixing 2 channels"):
        codes = tokenizer.encode(stereo)
    np.testing.assert_array_equal(codes, tokenizer.encode(stereo.mean(axis=1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the codec's own rate: no warning
        tokenizer.encode(_speech_like(0.5), sample_rate=16_000)


def test_semantic_and_acoustic_tokens_are_the_level_views(tokenizer):
    wav = _speech_like(1.7)
    codes = tokenizer.encode(wav)
    assert len(np.unique(codes[0])) > 1  # codes depend on the audio
    np.testing.assert_array_equal(tokenizer.semantic_tokens(wav), codes[0])
    np.testing.assert_array_equal(tokenizer.acoustic_tokens(wav), codes[1:])
    assert tokenizer.semantic_tokens(wav[None]).shape == (1, codes.shape[1])


def test_batched_equals_one_by_one_within_a_length_bucket(tokenizer):
    """Inputs are padded to whole 1 s buckets; examples of one bucket give the same codes together or alone."""
    wavs = [_speech_like(0.7, seed=s) for s in range(3)]
    batch = tokenizer.encode(np.stack(wavs))
    for i, wav in enumerate(wavs):
        np.testing.assert_array_equal(batch[i], tokenizer.encode(wav))


def test_bad_inputs_are_refused(tokenizer):
    with pytest.raises(ValueError, match="NaN or Inf"):
        tokenizer.encode(np.array([0.0, np.nan] * 100, np.float32))
    with pytest.raises(ValueError, match="N > 0"):
        tokenizer.encode(np.zeros((2, 0), np.float32))
    with pytest.raises(ValueError, match="n_q must be in 1..4"):
        tokenizer.encode(_speech_like(0.2), n_q=5)
    with pytest.raises(ValueError, match="sample_rate must be positive"):
        tokenizer.encode(_speech_like(0.2), sample_rate=0)
    with pytest.raises(ValueError, match="codes must be in 0..15"):
        tokenizer.decode(np.full((4, 10), 16))
    with pytest.raises(ValueError, match="integer codes"):
        tokenizer.decode(np.zeros((4, 10), np.float32))
    with pytest.raises(ValueError, match="codes have 5 levels"):
        tokenizer.decode(np.zeros((5, 10), np.int32))


def test_60_s_in_windows_equals_the_whole_file_away_from_seams():
    """Long audio runs in 10 s windows with 1 s of context each side here (30 s + 1 s by default). Tolerance: the
    codes must equal a whole-file encoding on every frame at least the context (50 frames) away from a seam, and on
    ≥ 99 % of all frames; decoding in windows must match whole decoding within 1e-4 of the peak."""
    config = micro_config(model={"conv_init": "lecun"}, rvq={"n_q": 4, "kmeans_init": False})
    codec = Codec(config, rngs=nnx.Rngs(0))
    whole = Tokenizer.from_codec(codec, chunk_seconds=0)
    windowed = Tokenizer.from_codec(codec, chunk_seconds=10, context_seconds=1)
    gains = np.random.default_rng(0).uniform(0.3, 1.0, 30)
    wav = np.concatenate([_speech_like(2.0, seed=s) * g for s, g in enumerate(gains)])  # 60 s
    codes, expected = windowed.encode(wav), whole.encode(wav)
    assert codes.shape == expected.shape == (4, 3000)
    frames = np.arange(3000)
    far_from_seams = np.min(np.abs(frames[:, None] - np.arange(500, 3000, 500)[None]), axis=1) >= 50
    np.testing.assert_array_equal(codes[:, far_from_seams], expected[:, far_from_seams])
    assert (codes == expected).mean() >= 0.99
    decoded, decoded_whole = windowed.decode(codes), whole.decode(codes)
    assert decoded.shape == wav.shape
    assert np.abs(decoded - decoded_whole).max() <= 1e-4 * np.abs(decoded_whole).max()
