"""WORLD-based metrics: SPTK's mel-cepstrum against an analytic case, MCD and F0 scores by hand, identity = 0."""

import numpy as np
import pytest

from jaxcodec.eval import world

pytest.importorskip("pyworld", reason="the eval extra is not installed")
SR = 16_000


def vowel(f0: float = 150.0, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return 0.1 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 20))


def test_mel_cepstrum_of_a_one_pole_filter_is_the_analytic_warped_cepstrum():
    # H(z) = 1 / (1 - a z^-1) under the all-pass warping z~^-1 = (z^-1 - α) / (1 - α z^-1) becomes
    # (1 + α z~^-1) / ((1 - aα)(1 - b z~^-1)), b = (a - α) / (1 - aα); its cepstrum, by the log series:
    # c~_0 = -log(1 - aα), c~_n = (b^n - (-α)^n) / n.
    a, alpha = 0.6, world.MEL_ALPHA_16K
    omega = np.linspace(0, np.pi, 513)
    power = 1.0 / np.abs(1 - a * np.exp(-1j * omega)) ** 2
    mc = world.mel_cepstrum(power[None], order=24, alpha=alpha)[0]
    b, n = (a - alpha) / (1 - a * alpha), np.arange(1, 25)
    np.testing.assert_allclose(mc[0], -np.log(1 - a * alpha), atol=1e-10)
    np.testing.assert_allclose(mc[1:], (b**n - (-alpha) ** n) / n, atol=1e-10)
    # α = 0 is no warping: the plain cepstrum, a^n / n.
    np.testing.assert_allclose(world.mel_cepstrum(power[None], 24, 0.0)[0, 1:], a**n / n, atol=1e-10)


def test_mcd_is_kubichek_distance_over_the_alignment():
    rng = np.random.default_rng(0)
    mc = rng.standard_normal((40, 25))
    assert world.mcd_from_mel_cepstra(mc, mc) == 0.0
    shifted = mc.copy()
    shifted[:, 3] += 0.5  # c0 changes are ignored; one coefficient off by 0.5 in every frame:
    shifted[:, 0] += 7.0
    expected = 10 / np.log(10) * np.sqrt(2 * 0.25)
    assert world.mcd_from_mel_cepstra(mc, shifted) == pytest.approx(expected, rel=1e-12)
    # DTW absorbs a time stretch that frame-by-frame comparison does not.
    stretched = np.repeat(mc, 2, axis=0)
    assert world.mcd_from_mel_cepstra(mc, stretched) == pytest.approx(0.0, abs=1e-12)
    assert world.mcd_from_mel_cepstra(mc, stretched, align=False) > 1.0


def test_f0_scores_by_hand():
    ref = np.array([0, 100, 110, 120, 0, 0])
    deg = np.array([0, 100, 120, 0, 90, 0])  # both voiced at frames 1-2; voicing disagrees at 3 and 4
    scores = world.f0_scores(ref, deg)
    assert scores["vuv_error"] == pytest.approx(2 / 6)
    assert scores["f0_rmse"] == pytest.approx(np.sqrt((0 + 100) / 2))
    assert scores["f0_corr"] == pytest.approx(1.0)  # two points are always on a line
    assert world.f0_scores(ref, np.zeros(6))["f0_rmse"] is None


def test_identity_scores_zero_and_harvest_finds_the_pitch():
    x = vowel(150.0)
    analysis = world.Analysis(x, SR)
    voiced = analysis.f0[analysis.f0 > 0]
    assert len(voiced) > 0.8 * len(analysis.f0) and np.median(voiced) == pytest.approx(150.0, rel=0.02)
    same = analysis.compare(world.Analysis(x, SR))
    assert same["mcd"] == 0.0 and same["f0_rmse"] == 0.0 and same["vuv_error"] == 0.0
    # A fifth up: F0 error ≈ 75 Hz; a spectral change gives MCD > 0.
    other = analysis.compare(world.Analysis(vowel(225.0), SR))
    assert other["f0_rmse"] == pytest.approx(75.0, rel=0.05) and other["mcd"] > 1.0
