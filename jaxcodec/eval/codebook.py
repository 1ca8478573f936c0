"""Codebook health from the tokens of a test set: per-level usage, dead codes, entropy, perplexity, bitrate."""

from __future__ import annotations

import numpy as np


class CodeUsage:
    """Accumulates code counts per RVQ level over utterances (codes int [n_q, T] each)."""

    def __init__(self, n_q: int, codebook_size: int):
        self.counts_qk = np.zeros((n_q, codebook_size), np.int64)

    def add(self, codes_qt: np.ndarray) -> None:
        for level, codes in enumerate(np.asarray(codes_qt)):
            self.counts_qk[level] += np.bincount(codes, minlength=self.counts_qk.shape[1])

    def summary(self, frame_rate: float) -> dict:
        """Per level: codes used, dead codes, entropy (bits), perplexity (2^entropy); totals: the nominal bitrate
        (frame_rate · n_q · log2 K) and the entropy bitrate (what an ideal entropy coder of these tokens needs)."""
        counts = self.counts_qk
        n_q, size = counts.shape
        p = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        entropy = -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0), axis=1)
        used = (counts > 0).sum(1)
        return {
            "codebook_size": int(size),
            "tokens": int(counts[0].sum()),
            "used_codes_per_level": [int(x) for x in used],
            "dead_codes_per_level": [int(size - x) for x in used],
            "entropy_bits_per_level": [round(float(x), 3) for x in entropy],
            "perplexity_per_level": [round(float(2.0 ** x), 2) for x in entropy],
            "tokens_per_second": float(frame_rate * n_q),
            "bits_per_second": float(frame_rate * n_q * np.log2(size)),
            "entropy_bits_per_second": round(float(frame_rate * entropy.sum()), 1),
            "counts_per_level": counts.tolist(),
        }
