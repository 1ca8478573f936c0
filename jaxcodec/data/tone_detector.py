"""Is a clip a synthetic tone (a beep, a two-tone signal, a sequence of pure notes) rather than speech? Voice prompt
collections ship such sounds beside the speech (Asterisk's beep, ascending-2tone, confbridge-join, ...), and a
speech corpus must not teach a codec that a sine wave is a voice.

A tone is a steady sinusoid: in a short frame nearly all its energy lies in one spectral peak, and that peak's
frequency does not move from one frame to the next. Speech meets the first condition in some frames (a nasal or a
close vowel at a high pitch puts ~99 % of a frame's energy in its first harmonic), but its pitch drifts: a
synthetic tone holds its frequency to a fraction of a hertz, a voice does not. A frame is tonal when both hold;
a clip is a tone when a large share of its loud frames are tonal.

Measured on the three Asterisk G.722 voice packages (fr_CA_f_June, it_IT_m_Carlo, ru_RU_f_IvrvoiceRU, 1,736
clips, decoded): every beep and ascending/descending-2tone and the fr/it confbridge-join/leave have 0.80-1.0 of
their loud frames tonal, the ru confbridge-leave (four decaying notes with overtones) 0.50; the most tone-like
speech clip 0.29 (ru letters/e, a 0.29 s sustained vowel), the most tone-like speech clip of usable length 0.26 (ru
digits/18). The threshold, 0.4, lies between. The ru confbridge-join (a chime like its -leave, 0.17) is not steady
enough and passes this test; the corpus builder rejects it because the same prompt is a tone in the other packages.
A harmonic buzz (beeperr: 344 Hz with strong harmonics) is not a tone by this rule either. numpy only.
"""

from __future__ import annotations

import numpy as np

FRAME_SECONDS = 0.064  # 1024 samples at 16 kHz: 15.6 Hz bins, finer than any voice's harmonic spacing (F0 > 60 Hz)
HOP_SECONDS = 0.032  # half a frame: a 0.2 s two-tone beep still spans five frames
PEAK_HALF_WIDTH_BINS = 2  # a Hann window's main lobe spans ±2 bins: a pure sinusoid's energy lies there
# Bins below this are left out of every frame: one package's chime carries a DC offset that would otherwise count
# as a second peak, and no voice has energy there (F0 ≥ ~60 Hz even for a low male voice).
MIN_HZ = 60.0
LOUD_DB = 30.0  # frames within 30 dB of the clip's loudest are judged; pauses and decaying tails are not
# A tonal frame: the strongest peak holds at least this share of the frame's energy (the packages' tones: 0.9-1.0
# in their frames, as G.722 adds its quantisation noise), and its frequency (interpolated) is within STEADY_HZ of a
# neighbouring frame's. Speech frames pass the first condition often and the second rarely.
PURE_PEAK_SHARE = 0.8
STEADY_HZ = 1.0
TONE_FRAME_SHARE = 0.4  # a clip is a tone when at least this share of its loud frames are tonal (see above)
TINY = 1e-30  # keeps logs and ratios finite in digital silence


def frame_power(wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Hann-windowed power spectra [frames, bins] (zero-padded to one frame when shorter) and the bin width in Hz."""
    frame = int(round(FRAME_SECONDS * sample_rate))
    hop = int(round(HOP_SECONDS * sample_rate))
    wav = np.asarray(wav, dtype=np.float64)
    if len(wav) < frame:
        wav = np.pad(wav, (0, frame - len(wav)))
    frames = np.lib.stride_tricks.sliding_window_view(wav, frame)[::hop] * np.hanning(frame)
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2, sample_rate / frame


def tonal_frames(wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(tonal, loud): boolean per frame, as the module docstring defines them."""
    power, bin_hz = frame_power(wav, sample_rate)
    power[:, : int(np.ceil(MIN_HZ / bin_hz))] = 0.0
    energy = power.sum(axis=1)
    loud = energy > energy.max() * 10 ** (-LOUD_DB / 10) if energy.max() > 0 else np.zeros(len(power), bool)
    n_bins = power.shape[1]
    peak = np.clip(np.argmax(power, axis=1), 1, n_bins - 2)
    offsets = np.arange(-PEAK_HALF_WIDTH_BINS, PEAK_HALF_WIDTH_BINS + 1)
    lobe = np.clip(peak[:, None] + offsets, 0, n_bins - 1)
    share = np.take_along_axis(power, lobe, axis=1).sum(axis=1) / np.maximum(energy, TINY)
    # Parabolic interpolation of the log spectrum around the peak: the frequency to a fraction of a bin.
    rows = np.arange(len(power))
    below, at, above = (np.log(power[rows, peak + k] + TINY) for k in (-1, 0, 1))
    curvature = below - 2 * at + above
    shift = np.where(curvature < 0, 0.5 * (below - above) / np.where(curvature < 0, curvature, -1.0), 0.0)
    frequency = (peak + shift) * bin_hz
    steady = np.zeros(len(power), bool)
    close = np.abs(np.diff(frequency)) < STEADY_HZ
    steady[:-1] |= close
    steady[1:] |= close
    return (share >= PURE_PEAK_SHARE) & steady, loud


def tonal_share(wav: np.ndarray, sample_rate: int) -> float:
    """The share of the clip's loud frames that are tonal, in [0, 1] (0 for silence)."""
    tonal, loud = tonal_frames(wav, sample_rate)
    return float(tonal[loud].mean()) if loud.any() else 0.0


def is_tone(wav: np.ndarray, sample_rate: int) -> bool:
    return tonal_share(wav, sample_rate) >= TONE_FRAME_SHARE
