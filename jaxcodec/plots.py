"""Pictures of audio shared by training's TensorBoard logs and the evaluation and demo reports (numpy in, an RGB
image out; matplotlib only for its colormap), so neither imports the other for them."""

from __future__ import annotations

import numpy as np

SPECTROGRAM_N_FFT = 512  # 32 ms at 16 kHz: the usual speech spectrogram resolution
SPECTROGRAM_HOP = 128  # 8 ms
SPECTROGRAM_RANGE_DB = 80.0  # dynamic range shown below each image's peak
IMAGE_SEPARATOR_ROWS = 4  # white rows between the original and the reconstruction


def spectrogram_image(wavs: list[np.ndarray], sample_rate: int) -> np.ndarray:
    """Log-magnitude spectrograms of `wavs` stacked top to bottom (low frequencies down), as an RGB uint8
    [H, W, 3] image coloured with matplotlib's magma, on a shared dB scale so they can be compared."""
    import scipy.signal  # here, not at the top: 0.6 s of every run's start-up, for validation images only
    from matplotlib import colormaps

    specs = []
    for wav in wavs:
        _, _, z = scipy.signal.stft(np.asarray(wav, np.float64), fs=sample_rate, nperseg=SPECTROGRAM_N_FFT,
                                    noverlap=SPECTROGRAM_N_FFT - SPECTROGRAM_HOP)
        specs.append(20 * np.log10(np.abs(z) + 1e-10)[::-1])  # frequency ascending → image rows top-down
    top = max(s.max() for s in specs)
    width = max(s.shape[1] for s in specs)
    rows = []
    for i, spec in enumerate(specs):
        scaled = np.clip((spec - (top - SPECTROGRAM_RANGE_DB)) / SPECTROGRAM_RANGE_DB, 0.0, 1.0)
        padded = np.zeros((spec.shape[0], width))
        padded[:, :spec.shape[1]] = scaled
        rgb = colormaps["magma"](padded)[..., :3]
        if i:
            rows.append(np.ones((IMAGE_SEPARATOR_ROWS, width, 3)))
        rows.append(rgb)
    return (np.concatenate(rows) * 255).round().astype(np.uint8)
