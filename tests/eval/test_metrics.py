"""Wide-band PESQ wrapper: the P.862.2 ceiling on identical signals, ordering under noise, one-line refusals."""

import numpy as np
import pytest

from jaxcodec import quality
from jaxcodec.eval import metrics

pytest.importorskip("pesq", reason="the eval extra is not installed")
SR = 16_000


def speechlike(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    return 0.1 * voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) ** 2


def test_identical_signals_score_the_wideband_ceiling():
    x = speechlike()
    assert quality.pesq_wb(x, x) == pytest.approx(4.644, abs=0.01)  # P.862.2's maximum MOS-LQO


def test_more_noise_scores_lower():
    x = speechlike()
    noise = np.random.default_rng(0).standard_normal(len(x)) * np.std(x)
    light, heavy = quality.pesq_wb(x, x + 0.03 * noise), quality.pesq_wb(x, x + 0.3 * noise)
    assert 1.0 < heavy < light < 4.6


def test_unscorable_clips_are_refused_with_the_reason():
    x = speechlike()
    with pytest.raises(ValueError, match="defined at 16000 Hz"):
        quality.pesq_wb(x, x, sample_rate=22_050)
    with pytest.raises(ValueError, match="BufferTooShortError"):
        quality.pesq_wb(x[:200], x[:200])


def test_si_sdr_by_hand():
    x = speechlike()
    noise = np.random.default_rng(1).standard_normal(len(x))
    noise -= noise.mean()
    xc = x - x.mean()
    noise -= (noise @ xc) / (xc @ xc) * xc  # orthogonal to the reference: SI-SDR = 10 log10(|x|² / |n|²)
    noise *= np.sqrt((xc @ xc) / (noise @ noise)) / 10  # 20 dB below
    assert metrics.si_sdr(x, 3.0 * (x + noise)) == pytest.approx(20.0, abs=1e-6)  # the scale does not matter
    assert metrics.si_sdr(x, x) > 150


def test_mel_distance_zero_for_identical_and_grows_with_distortion():
    x = speechlike()
    noise = np.random.default_rng(2).standard_normal(len(x)) * np.std(x)
    assert metrics.mel_distance(x, x) == 0.0
    light, heavy = metrics.mel_distance(x, x + 0.01 * noise), metrics.mel_distance(x, x + 0.3 * noise)
    assert 0 < light < heavy
    # A 2× gain is log10(2) in every band above the floor (broadband: every band is).
    y = x + 0.1 * noise
    assert metrics.mel_distance(y, 2 * y) == pytest.approx(np.log10(2), rel=1e-6)


def test_stoi_and_the_combined_scores():
    x = speechlike(3.0)
    noise = np.random.default_rng(3).standard_normal(len(x)) * np.std(x)
    assert quality.stoi(x, x) == pytest.approx(1.0, abs=1e-6)
    assert quality.stoi(x, x + 2.0 * noise) < 0.9
    scores = metrics.reconstruction_scores(x, x + 0.05 * noise, SR)
    assert set(scores) == {"mel_distance", "si_sdr", "pesq", "stoi"} and all(v is not None for v in scores.values())
    assert metrics.reconstruction_scores(x[:200], x[:200], SR)["pesq"] is None  # too short: not a number


def test_stoi_is_one_for_identical_signals_and_falls_with_noise():
    pytest.importorskip("pystoi", reason="the eval extra is not installed")
    x = speechlike(3.0)
    noise = np.random.default_rng(3).standard_normal(len(x)) * np.std(x)
    assert quality.stoi(x, x) == pytest.approx(1.0, abs=1e-6)
    assert quality.stoi(x, x + 3.0 * noise) < quality.stoi(x, x + 0.3 * noise) < 1.0
