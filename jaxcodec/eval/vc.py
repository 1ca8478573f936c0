"""Voice conversion by token swap, the paper's (and SpeechTokenizer's) test of disentanglement: RVQ level 1
carries content, levels 2..n_q timbre. Keep the source's level 1, take levels 2..n_q from a target utterance of
another speaker, decode."""

from __future__ import annotations

import numpy as np


def swap_tokens(source_qt: np.ndarray, target_qt: np.ndarray, n_q: int | None = None) -> np.ndarray:
    """int [n_q, T_src]: the source's level 1 and the target's levels 2..n_q, the target time-aligned to the
    source by repeating it (shorter) or cropping it (longer), as SpeechTokenizer's VC does."""
    n_q = source_qt.shape[0] if n_q is None else n_q
    if not 2 <= n_q <= min(source_qt.shape[0], target_qt.shape[0]):
        raise ValueError(f"token swap needs 2..{min(source_qt.shape[0], target_qt.shape[0])} levels, got {n_q}")
    frames = source_qt.shape[1]
    aligned = target_qt[1:n_q, np.arange(frames) % target_qt.shape[1]]
    return np.concatenate([source_qt[:1], aligned], axis=0)


def pair_targets(entries: list[dict]) -> list[tuple[int, int]]:
    """(source, target) index pairs: each utterance is converted to the next speaker's voice (speakers in sorted
    order, cyclically), preferring that speaker's utterance of the same sentence (a parallel reference), else its
    utterance at the same position. Deterministic; empty when there is a single speaker."""
    speakers = sorted({str(e["speaker"]) for e in entries})
    if len(speakers) < 2:
        return []
    by_speaker: dict[str, list[int]] = {s: [] for s in speakers}
    for i, entry in enumerate(entries):
        by_speaker[str(entry["speaker"])].append(i)
    pairs = []
    for source_speaker in speakers:
        target_speaker = speakers[(speakers.index(source_speaker) + 1) % len(speakers)]
        candidates = by_speaker[target_speaker]
        for position, source in enumerate(by_speaker[source_speaker]):
            text = entries[source].get("text")
            parallel = [t for t in candidates if text and entries[t].get("text") == text]
            pairs.append((source, parallel[0] if parallel else candidates[position % len(candidates)]))
    return pairs
