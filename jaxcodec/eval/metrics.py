"""Objective speech-quality metrics on numpy waveforms: mel distance, SI-SDR, and every reconstruction score of
one clip. PESQ and STOI, which training's validation also reports, are jaxcodec.quality's; clips they cannot
score are reported as skipped with the reason, never as a number.
"""

from __future__ import annotations

import numpy as np

from jaxcodec.quality import PESQ_SAMPLE_RATE, MetricUnavailable, pesq_wb, stoi

# Mel distance as in the DAC/EnCodec evaluations: mean |log10 mel(ref) − log10 mel(deg)| over an 80-band,
# 1024-point, 256-hop magnitude mel spectrogram (a fixed, project-wide definition so numbers compare).
MEL_N_FFT, MEL_HOP, MEL_BANDS = 1024, 256, 80
MEL_FLOOR = 1e-5  # magnitude floor before the log (−100 dB): silence does not dominate the distance


def _log_mel(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    import scipy.signal

    from jaxcodec.spectral import mel_filterbank

    wav = np.asarray(wav, np.float64)
    if len(wav) < MEL_N_FFT:  # shorter than one window: zero-pad to one frame
        wav = np.pad(wav, (0, MEL_N_FFT - len(wav)))
    _, _, z = scipy.signal.stft(wav, fs=sample_rate, window="hann", nperseg=MEL_N_FFT,
                                noverlap=MEL_N_FFT - MEL_HOP, boundary="even", padded=True)
    fb = mel_filterbank(MEL_N_FFT // 2 + 1, MEL_BANDS, sample_rate).astype(np.float64)
    # scipy scales the STFT by 1/sum(window); undo it so magnitudes are torch.stft's (the usual definition).
    magnitude = np.abs(z) * np.hanning(MEL_N_FFT + 1)[:-1].sum()
    return np.log10(np.maximum(fb.T @ magnitude, MEL_FLOOR))


def mel_distance(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = PESQ_SAMPLE_RATE) -> float:
    """Mean absolute log10-mel difference (0 for identical signals; lower is better)."""
    n = min(len(reference), len(degraded))
    return float(np.mean(np.abs(_log_mel(reference[:n], sample_rate) - _log_mel(degraded[:n], sample_rate))))


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019): the estimate projected on the zero-mean reference."""
    n = min(len(reference), len(estimate))
    ref = np.asarray(reference[:n], np.float64) - np.mean(reference[:n])
    est = np.asarray(estimate[:n], np.float64) - np.mean(estimate[:n])
    target = (est @ ref) / max(ref @ ref, 1e-20) * ref
    noise = est - target
    return float(10 * np.log10(max(target @ target, 1e-20) / max(noise @ noise, 1e-20)))


def reconstruction_scores(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> dict[str, float | None]:
    """Every reconstruction metric of one clip; a metric that cannot score it (or is not installed) is None."""
    scores: dict[str, float | None] = {"mel_distance": mel_distance(reference, degraded, sample_rate),
                                       "si_sdr": si_sdr(reference, degraded)}
    for name, fn in (("pesq", pesq_wb), ("stoi", stoi)):
        try:
            scores[name] = fn(reference, degraded, sample_rate)
        except (ValueError, MetricUnavailable):
            scores[name] = None
    return scores
