"""TensorBoard logs of a run (tensorboardX: event files without TensorFlow or torch).

`W/tensorboard/` gets the training metrics as scalars (per-level codebook metrics as one scalar per level),
validation scores, and at each validation the first clips as audio and as original-over-reconstruction
spectrogram images. Only process 0 writes. On resume the writer is opened with `purge_step` = the resume step,
so TensorBoard drops the previous run's points from that step on instead of drawing two overlapping curves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from jaxcodec.plots import spectrogram_image


def scalar_items(row: dict) -> list[tuple[str, float]]:
    """(tag, value) pairs of a metrics row: numbers as they are, per-level lists as `name/level_L`; bookkeeping
    keys (step, elapsed) are skipped."""
    items = []
    for key, value in row.items():
        if key in ("step", "elapsed"):
            continue
        if isinstance(value, list | tuple | np.ndarray):
            base = key[:-2] if key.endswith("_q") else key
            items += [(f"{base}/level_{level}", float(v)) for level, v in enumerate(np.ravel(value))]
        elif isinstance(value, int | float | np.number):
            items.append((key, float(value)))
    return items


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without torch. tensorboardX imports torch whenever it is installed
    (to accept torch tensors, which jaxcodec never passes): 2 s of a resumed run's ~10 s start-up, and
    jaxcodec/ does not import torch. In a process that already has torch nothing changes."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError: tensorboardX's numpy-only fallback
    try:
        from tensorboardX import SummaryWriter
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter


class TensorBoard:
    """A no-op unless `enabled` (process 0): the loop calls it the same way on every process."""

    def __init__(self, logdir: Path, start_step: int, enabled: bool = True):
        self.writer = None
        if enabled:
            self.writer = _summary_writer_class()(str(logdir), purge_step=start_step or None, flush_secs=30)

    def scalars(self, step: int, row: dict) -> None:
        if self.writer is not None:
            for tag, value in scalar_items(row):
                self.writer.add_scalar(tag, value, step)

    def clip(self, step: int, name: str, original: np.ndarray, reconstruction: np.ndarray, sample_rate: int) -> None:
        """One validation clip: both waveforms as audio, and their spectrograms in one image."""
        if self.writer is None:
            return
        for kind, wav in (("original", original), ("reconstruction", reconstruction)):
            self.writer.add_audio(f"{name}/{kind}", np.clip(np.asarray(wav, np.float32), -1, 1), step,
                                  sample_rate=sample_rate)
        self.writer.add_image(f"{name}/spectrogram", spectrogram_image([original, reconstruction], sample_rate),
                              step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
