"""Objective speech-quality metrics on numpy waveforms (the `eval` extra: pesq).

PESQ is ITU-T P.862.2 wide-band (16 kHz) via the `pesq` package, the implementation the paper's table and
SpeechTokenizer/EnCodec evaluations use. It is defined for 8 and 16 kHz only and needs a quarter second or more of
speech; clips it cannot score are reported as skipped with the reason, never as a number.
"""

from __future__ import annotations

import numpy as np

PESQ_SAMPLE_RATE = 16_000  # wide-band P.862.2


class MetricUnavailable(RuntimeError):
    """The metric's package is not installed (install the `eval` extra)."""


def pesq_available() -> bool:
    try:
        import pesq  # noqa: F401
    except ImportError:
        return False
    return True


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
