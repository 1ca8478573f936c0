"""The audio-quality scores both training's validation and `jaxcodec eval` report (the `eval` extra: pesq,
pystoi), so neither imports the other for them.

PESQ is ITU-T P.862.2 wide-band (16 kHz) via the `pesq` package, the implementation the paper's table and
SpeechTokenizer/EnCodec evaluations use. It is defined for 8 and 16 kHz only and needs a quarter second or more of
speech. STOI is pystoi's.
"""

from __future__ import annotations

import numpy as np

PESQ_SAMPLE_RATE = 16_000  # wide-band P.862.2


class MetricUnavailable(RuntimeError):
    """The metric's package is not installed (install the `eval` extra)."""


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def pesq_available() -> bool:
    return _importable("pesq")


def stoi_available() -> bool:
    return _importable("pystoi")


def pesq_wb(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = PESQ_SAMPLE_RATE) -> float:
    """Wide-band PESQ (MOS-LQO, about 1.04 to 4.64) of `degraded` against `reference` (1-D, same rate).

    Raises MetricUnavailable without the package and ValueError (one line, the reason) for a clip PESQ cannot
    score (wrong rate, too short, no speech detected)."""
    try:
        import pesq
    except ImportError as err:
        raise MetricUnavailable("PESQ needs the eval extra: pip install 'jaxcodec[eval]'") from err
    if sample_rate != PESQ_SAMPLE_RATE:
        raise ValueError(f"wide-band PESQ is defined at {PESQ_SAMPLE_RATE} Hz, got {sample_rate} Hz")
    n = min(len(reference), len(degraded))
    ref = np.asarray(reference[:n], np.float64)
    deg = np.asarray(degraded[:n], np.float64)
    try:
        return float(pesq.pesq(sample_rate, ref, deg, "wb"))
    except pesq.PesqError as err:  # NoUtterancesError, BufferTooShortError, ...
        raise ValueError(f"PESQ cannot score this clip: {type(err).__name__}") from err


def stoi(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = PESQ_SAMPLE_RATE) -> float:
    """Short-time objective intelligibility (Taal et al. 2011, pystoi; 0..1, higher is better)."""
    try:
        from pystoi import stoi as pystoi_stoi
    except ImportError as err:
        raise MetricUnavailable("STOI needs the eval extra: pip install 'jaxcodec[eval]'") from err
    n = min(len(reference), len(degraded))
    return float(pystoi_stoi(np.asarray(reference[:n], np.float64), np.asarray(degraded[:n], np.float64),
                             sample_rate, extended=False))
