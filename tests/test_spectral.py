"""jaxcodec.spectral against torch.stft, transformers' numpy mel filterbank, and torch ports of the audiocraft
(EnCodec) and SpeechTokenizer mel-loss code."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxcodec import spectral

RTOL = 1e-4


def _transformers_mel_filter_bank():
    # transformers.audio_utils imports torchaudio, which imports once `make install` has disabled its CUDA-only
    # native libraries (scripts/disable_torchaudio_native.py); mel_filter_bank itself is numpy.
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank


def _reference_fb(n_freqs, n_mels, sample_rate, f_min=0.0, f_max=None, norm=None, mel_scale="htk"):
    f_max = float(sample_rate // 2) if f_max is None else f_max
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "mel filter has all zero values" at EnCodec's smallest scales
        return _transformers_mel_filter_bank()(n_freqs, n_mels, f_min, f_max, sample_rate, norm=norm,
                                               mel_scale=mel_scale)


def _rel_err(actual, expected):
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="module")
def wav_bn():
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 16_000
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    return (tone[None] + 0.1 * rng.standard_normal((2, 4000))).astype(np.float32)


def _torch_stft(wav_bn, n_fft, hop, win, center, pad_mode="reflect", normalized=False):
    window = torch.hann_window(win or n_fft, dtype=torch.float64)
    spec = torch.stft(torch.from_numpy(wav_bn).double(), n_fft, hop, win, window=window, center=center,
                      pad_mode=pad_mode, normalized=normalized, return_complex=True)
    return spec.numpy().transpose(0, 2, 1)


@pytest.mark.parametrize("n_fft,hop,win", [(512, 128, None), (400, 160, 300), (1024, 240, 1024), (32, 8, None)])
@pytest.mark.parametrize("center", [True, False])
def test_stft_matches_torch(wav_bn, n_fft, hop, win, center):
    expected = _torch_stft(wav_bn, n_fft, hop, win, center)
    actual = spectral.stft(jnp.asarray(wav_bn), n_fft, hop, win, center=center)
    assert actual.shape == expected.shape
    assert _rel_err(actual, expected) < RTOL


def test_stft_normalizations(wav_bn):
    n_fft, hop, win = 512, 100, 400
    # torch.stft(normalized=True) divides by sqrt(n_fft): our "frame_length".
    expected = _torch_stft(wav_bn, n_fft, hop, win, True, normalized=True)
    assert _rel_err(spectral.stft(jnp.asarray(wav_bn), n_fft, hop, win, normalized="frame_length"), expected) < RTOL
    # torchaudio's Spectrogram(normalized=True) divides the plain STFT by sqrt(sum(window²)).
    window_energy = float(torch.hann_window(win, dtype=torch.float64).pow(2).sum())
    expected = _torch_stft(wav_bn, n_fft, hop, win, True) / math.sqrt(window_energy)
    assert _rel_err(spectral.stft(jnp.asarray(wav_bn), n_fft, hop, win, normalized=True), expected) < RTOL
    assert _rel_err(spectral.stft(jnp.asarray(wav_bn), n_fft, hop, win, normalized="window"), expected) < RTOL


def test_stft_constant_pad_mode(wav_bn):
    expected = _torch_stft(wav_bn, 256, 64, None, True, pad_mode="constant")
    actual = spectral.stft(jnp.asarray(wav_bn), 256, 64, center=True, pad_mode="constant")
    assert _rel_err(actual, expected) < RTOL


def test_frame_signal_matches_unfold():
    x = np.arange(2 * 37, dtype=np.float32).reshape(2, 37)
    for frame_length, hop in [(8, 3), (8, 8), (5, 7), (6, 2)]:
        expected = torch.from_numpy(x).unfold(-1, frame_length, hop).numpy()
        np.testing.assert_array_equal(spectral.frame_signal(jnp.asarray(x), frame_length, hop), expected)


def test_too_short_for_reflect_padding_raises():
    with pytest.raises(ValueError, match="reflect padding"):
        spectral.stft(jnp.zeros((1, 100)), 256, 64)


@pytest.mark.parametrize("norm,mel_scale,f_min,f_max", [(None, "htk", 0.0, None), ("slaney", "htk", 0.0, 8000.0),
                                                       ("slaney", "slaney", 20.0, 7600.0), (None, "htk", 64.0, None)])
def test_mel_filterbank_matches_transformers(norm, mel_scale, f_min, f_max):
    actual = spectral.mel_filterbank(513, 80, 16_000, f_min, f_max, norm=norm, mel_scale=mel_scale)
    expected = _reference_fb(513, 80, 16_000, f_min, f_max, norm, mel_scale)
    assert actual.shape == (513, 80) and actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * expected.max())


def test_mel_spectrogram_power_log10(wav_bn):
    spec = spectral.MelSpectrogram(sample_rate=16_000, n_fft=512, hop_length=128, win_length=400, n_mels=64,
                                   f_min=30.0, power=2.0, normalized=True, log="log10", floor=1e-5)
    stft = _torch_stft(wav_bn, 512, 128, 400, True) / math.sqrt(float(torch.hann_window(400).double().pow(2).sum()))
    expected = np.log10(1e-5 + np.abs(stft) ** 2 @ _reference_fb(257, 64, 16_000, 30.0))
    assert _rel_err(spec(jnp.asarray(wav_bn)), expected) < RTOL


def test_mel_spectrogram_magnitude_clamped_log(wav_bn):
    spec = spectral.MelSpectrogram(n_fft=1024, hop_length=256, n_mels=80, power=1.0, center=False, norm="slaney",
                                   log="log", floor=1e-5, floor_mode="clamp")
    mel = np.abs(_torch_stft(wav_bn, 1024, 256, None, False)) @ _reference_fb(513, 80, 16_000, norm="slaney")
    expected = np.log(np.maximum(mel, 1e-5))
    actual = spec(jnp.asarray(wav_bn))
    assert actual.shape == expected.shape
    assert _rel_err(actual, expected) < RTOL


# ----- multi-scale recipes against torch ports of their reference code -----


def _pad_for_conv1d(x, kernel_size, stride):
    # audiocraft/modules/conv.py get_extra_padding_for_conv1d + pad_for_conv1d (padding_total = 0).
    length = x.shape[-1]
    n_frames = (length - kernel_size) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + kernel_size
    return F.pad(x, (0, ideal_length - length))


def _audiocraft_melspec(x, sample_rate, n_fft, hop, n_mels, f_min, log):
    # audiocraft/losses/specloss.py MelSpectrogramWrapper with torchaudio's MelSpectrogram(normalized=True,
    # center=False, power=2) written out.
    p = int((n_fft - hop) // 2)
    x = F.pad(x.unsqueeze(1), (p, p), "reflect")
    x = _pad_for_conv1d(x, n_fft, hop).squeeze(1)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(x, n_fft, hop, n_fft, window=window, center=False, return_complex=True)
    spec = spec / window.pow(2).sum().sqrt()
    power = spec.abs().pow(2.0)
    fb = torch.from_numpy(_reference_fb(n_fft // 2 + 1, n_mels, sample_rate, f_min))
    mel = torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)
    return torch.log10(1e-5 + mel) if log else mel


@pytest.mark.parametrize("length", [1000, 1003, 1016])
def test_encodec_scale_padding_matches_audiocraft_port(length):
    # Lengths around a hop boundary exercise pad_for_conv1d's extra zeros (0 when the frames already fit).
    x = np.random.default_rng(length).standard_normal((1, length)).astype(np.float32)
    spec = spectral.encodec_mel_scales(16_000)[1]  # n_fft 64, hop 16
    expected = _audiocraft_melspec(torch.from_numpy(x).double(), 16_000, 64, 16, 64, 64.0, False).numpy()
    actual = spec(jnp.asarray(x))
    assert actual.shape == expected.transpose(0, 2, 1).shape
    assert _rel_err(actual, expected.transpose(0, 2, 1)) < RTOL


def _audiocraft_msspec_loss(x, y, sample_rate):
    # MultiScaleMelSpectrogramLoss(range_start=5, range_end=12, n_mels=64, f_min=64, normalized=True, alphas=False)
    loss, total = 0.0, 0.0
    for i in range(5, 12):
        args = (sample_rate, 2**i, 2**i // 4, 64, 64.0)
        loss = loss + F.l1_loss(_audiocraft_melspec(x, *args, False), _audiocraft_melspec(y, *args, False))
        loss = loss + F.mse_loss(_audiocraft_melspec(x, *args, True), _audiocraft_melspec(y, *args, True))
        total += 2
    return float(loss / total)


def _speechtokenizer_mel(y, n_fft, num_mels, sample_rate, hop_size, win_size):
    # speechtokenizer/trainer/loss.py mel_spectrogram with MelScale(norm='slaney', mel_scale='htk').fb written out.
    fb = torch.from_numpy(_reference_fb(n_fft // 2 + 1, num_mels, sample_rate, 0.0, None, "slaney")).T
    pad = int((n_fft - hop_size) / 2)
    y = F.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(y, n_fft, hop_length=hop_size, win_length=win_size,
                      window=torch.hann_window(win_size, dtype=torch.float64), center=False, pad_mode="reflect",
                      normalized=False, onesided=True, return_complex=True)
    spec = torch.matmul(fb, torch.abs(spec) + 1e-9)
    return torch.log(torch.clamp(spec, min=1e-5))


def _speechtokenizer_mel_loss(x, y, sample_rate):
    # trainer.py: Σ lambda_k · mel_loss at n_fft 1024 / 2^k, hop 240 / 2^k, mel_loss_lambdas [45, 1, 1, 1].
    loss = 0.0
    for k, weight in enumerate([45, 1, 1, 1]):
        args = (1024 // 2**k, 80, sample_rate, 240 // 2**k, 1024 // 2**k)
        loss = loss + weight * F.l1_loss(_speechtokenizer_mel(x, *args), _speechtokenizer_mel(y, *args))
    return float(loss)


_LOSS = jax.jit(spectral.multiscale_mel_loss, static_argnums=(2, 3))
_LOSS_AND_GRAD = jax.jit(jax.value_and_grad(spectral.multiscale_mel_loss), static_argnums=(2, 3))


@pytest.fixture(scope="module")
def pair_bn(wav_bn):
    rng = np.random.default_rng(1)
    return wav_bn, (0.8 * wav_bn + 0.05 * rng.standard_normal(wav_bn.shape)).astype(np.float32)


def test_encodec_multiscale_matches_audiocraft_port(pair_bn):
    x, y = pair_bn
    expected = _audiocraft_msspec_loss(torch.from_numpy(x).double(), torch.from_numpy(y).double(), 16_000)
    actual = float(_LOSS(jnp.asarray(x), jnp.asarray(y), "encodec", 16_000))
    assert abs(actual - expected) < RTOL * abs(expected)


def test_speechtokenizer_multiscale_matches_port(pair_bn):
    x, y = pair_bn
    expected = _speechtokenizer_mel_loss(torch.from_numpy(x).double(), torch.from_numpy(y).double(), 16_000)
    actual = float(_LOSS(jnp.asarray(x), jnp.asarray(y), "speechtokenizer", 16_000))
    assert abs(actual - expected) < RTOL * abs(expected)


def test_frame_mask_by_hand():
    # center=True, n_fft 8, hop 4: frame j is centred on sample 4j; 10 real samples of 20 → frames 0..2 real.
    spec = spectral.MelSpectrogram(n_fft=8, hop_length=4, n_mels=2)
    mask_bn = jnp.asarray((np.arange(20) < 10).astype(np.float32))[None]
    np.testing.assert_array_equal(spec.frame_mask(mask_bn)[0], [1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize("form", ["encodec", "speechtokenizer"])
def test_masked_loss_ignores_padding(pair_bn, form):
    x, y = (jnp.asarray(a) for a in pair_bn)
    mask_bn = jnp.asarray((np.arange(x.shape[1]) < 3000).astype(np.float32))[None].repeat(2, 0)
    garbage = y.at[:, 3000:].set(5.0)
    # Only SpeechTokenizer's magnitude (power 1) mel has a sqrt whose gradient could be NaN; its gradient is
    # checked here too, which shares the compilation.
    loss = _LOSS_AND_GRAD if form == "speechtokenizer" else lambda *args: (_LOSS(*args), None)
    clean, grad_bn = loss(x, y, form, 16_000, mask_bn)
    dirty, _ = loss(x, garbage, form, 16_000, mask_bn)
    all_ones, _ = loss(x, y, form, 16_000, jnp.ones_like(x))
    assert float(clean) == pytest.approx(float(dirty), rel=1e-6)
    assert float(_LOSS(x, garbage, form, 16_000)) > 2 * float(clean)
    assert float(all_ones) == pytest.approx(float(_LOSS(x, y, form, 16_000)), rel=1e-6)
    if grad_bn is not None:
        # Frames inside the zeroed padding have |X| = 0 exactly, where a naive sqrt has a NaN gradient (the
        # mask's zero cotangent does not hide it: 0 · NaN = NaN).
        assert bool(jnp.all(jnp.isfinite(grad_bn)))


def test_mel_spectrogram_is_hashable_and_jits(wav_bn):
    spec = spectral.MelSpectrogram(n_fft=256, hop_length=64, n_mels=40, log="log", floor_mode="clamp")
    assert hash(spec) == hash(spectral.MelSpectrogram(n_fft=256, hop_length=64, n_mels=40, log="log",
                                                      floor_mode="clamp"))
    actual = jax.jit(lambda s, x: s(x), static_argnums=0)(spec, jnp.asarray(wav_bn))
    expected = np.log(np.maximum(np.abs(_torch_stft(wav_bn, 256, 64, None, True)) ** 2 @ _reference_fb(129, 40, 16_000),
                                 1e-5))
    assert _rel_err(actual, expected) < RTOL
