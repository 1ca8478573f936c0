"""Frame arithmetic that maps a teacher's frames onto the codec's 50 Hz grid, and the chunk plan that bounds memory
on long files."""

from __future__ import annotations

import dataclasses

import numpy as np

CODEC_HOP = 320  # samples per codec frame at 16 kHz (SEANet ratios 8·5·4·2 → 50 Hz); shards store this grid.


def codec_frames(num_samples: int, hop: int = CODEC_HOP) -> int:
    """Frames the codec gives for `num_samples` (its convs pad to whole frames): ceil(N / hop)."""
    return -(-num_samples // hop)


def fit_frames(frames_tc: np.ndarray, num_frames: int) -> np.ndarray:
    """Crops or extends (repeating the last frame) a [T, C] array to exactly `num_frames` rows."""
    if len(frames_tc) >= num_frames:
        return frames_tc[:num_frames]
    pad = np.repeat(frames_tc[-1:], num_frames - len(frames_tc), axis=0)
    return np.concatenate([frames_tc, pad], axis=0)


@dataclasses.dataclass(frozen=True)
class Chunk:
    start: int  # first sample given to the model
    stop: int  # one past the last sample given to the model
    keep_start: int  # first codec frame (of the whole file) this chunk's output provides
    keep_stop: int  # one past the last codec frame it provides
    offset: int  # codec frame index of the chunk's first frame (start // hop)


def chunk_plan(num_samples: int, max_samples: int, context_samples: int, hop: int = CODEC_HOP) -> list[Chunk]:
    """Splits a long signal into windows of at most `max_samples` whose outputs tile the codec frame grid.

    Each window's first and last `context_samples` are context only: frames there come from the neighbouring
    window, where they sit in the middle. Window starts are whole hops, so every window's frames line up with the
    file's frame grid. A signal that fits is one chunk.
    """
    total = codec_frames(num_samples, hop)
    if num_samples <= max_samples:
        return [Chunk(0, num_samples, 0, total, 0)]
    window = (max_samples // hop) * hop
    context = -(-context_samples // hop)  # in frames
    step = window // hop - 2 * context  # frames each interior window provides
    if step <= 0:
        raise ValueError(f"chunk of {max_samples} samples is too short for {context_samples} samples of context")
    chunks = []
    keep_start = 0
    while keep_start < total:
        offset = max(0, keep_start - context)
        start = offset * hop
        stop = min(num_samples, start + window)
        last = stop >= num_samples
        keep_stop = total if last else min(total, offset + window // hop - context)
        chunks.append(Chunk(start, stop, keep_start, keep_stop, offset))
        keep_start = keep_stop
    return chunks
