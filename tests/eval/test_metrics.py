"""Wide-band PESQ wrapper: the P.862.2 ceiling on identical signals, ordering under noise, one-line refusals."""

import numpy as np
import pytest

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
    assert metrics.pesq_wb(x, x) == pytest.approx(4.644, abs=0.01)  # P.862.2's maximum MOS-LQO


def test_more_noise_scores_lower():
    x = speechlike()
    noise = np.random.default_rng(0).standard_normal(len(x)) * np.std(x)
    light, heavy = metrics.pesq_wb(x, x + 0.03 * noise), metrics.pesq_wb(x, x + 0.3 * noise)
    assert 1.0 < heavy < light < 4.6


def test_unscorable_clips_are_refused_with_the_reason():
    x = speechlike()
    with pytest.raises(ValueError, match="defined at 16000 Hz"):
        metrics.pesq_wb(x, x, sample_rate=22_050)
    with pytest.raises(ValueError, match="BufferTooShortError"):
        metrics.pesq_wb(x[:200], x[:200])
