"""The spectrogram image of jaxcodec/plots.py (TensorBoard's validation images and the reports' panels)."""

import numpy as np

from jaxcodec import plots

SR = 16_000


def test_spectrogram_image_puts_a_tone_on_its_frequency_row():
    t = np.arange(SR) / SR
    low, high = 0.5 * np.sin(2 * np.pi * 1000 * t), 0.5 * np.sin(2 * np.pi * 4000 * t)
    image = plots.spectrogram_image([low, high[: SR // 2]], SR)
    bins = plots.SPECTROGRAM_N_FFT // 2 + 1
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert image.shape[0] == 2 * bins + plots.IMAGE_SEPARATOR_ROWS
    brightness = image.astype(float).sum(-1)
    # Row r of a panel shows bin (bins − 1 − r); 1 kHz is bin 1000 / (16000 / 512) = 32, 4 kHz is bin 128.
    top = brightness[:bins, : image.shape[1] // 4]
    bottom = brightness[bins + plots.IMAGE_SEPARATOR_ROWS:, : image.shape[1] // 4]
    assert bins - 1 - np.argmax(top.mean(1)) == 32
    assert bins - 1 - np.argmax(bottom.mean(1)) == 128
    # The shorter clip is padded on the right with the colormap's darkest colour.
    assert brightness[bins + plots.IMAGE_SEPARATOR_ROWS:, -5:].max() == brightness.min()
