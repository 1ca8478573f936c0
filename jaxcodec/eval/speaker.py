"""Speaker similarity and verification EER from a pretrained speaker encoder.

The encoder runs in a subprocess (`python -m teachers.evaluation.speaker`, PyTorch) because jaxcodec never imports
torch; files go in, an npz of L2-normalised embeddings comes out. Offline the encoder is resemblyzer's GE2E model, which
ships in its wheel; `ecapa` / `ecapa:DIR` use speechbrain's ECAPA-TDNN.

EER: every pair of utterances in a set is a trial (same speaker = target); the equal error rate is where the
false-acceptance and false-rejection rates of a threshold on cosine similarity cross, read off scikit-learn's ROC
(the midpoint of the two rates at the threshold where they are closest).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxcodec.eval.torch_subprocess import ToolError, run_on_files

DEFAULT_ENCODER = "resemblyzer"


class SpeakerEncoderError(RuntimeError):
    pass


def embed_files(paths: list[str | Path], encoder: str = DEFAULT_ENCODER, device: str = "cpu"
                ) -> tuple[np.ndarray, str, dict[str, str]]:
    """Embeddings [N, dim] (NaN rows for unreadable files), the model's name, and {path: reason} of failures."""

    def read(out: Path):
        with np.load(out, allow_pickle=False) as npz:
            return npz["embeddings"], str(npz["model"]), json.loads(str(npz["errors"]))

    try:
        return run_on_files("teachers.evaluation.speaker", paths, ["--encoder", encoder, "--device", device], ".npz",
                            read)
    except ToolError as err:
        raise SpeakerEncoderError(f"speaker encoder {encoder} failed: {err}") from err


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of [N, D] and [N, D] (NaN where a row is NaN)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)


def equal_error_rate(scores: np.ndarray, is_target: np.ndarray) -> float:
    """EER of verification trials (higher score = more likely the same speaker)."""
    from sklearn.metrics import roc_curve

    is_target = np.asarray(is_target, bool)
    if is_target.all() or not is_target.any():
        raise ValueError("EER needs both same-speaker and different-speaker trials")
    false_accept, true_accept, _ = roc_curve(is_target, scores)
    false_reject = 1.0 - true_accept
    i = int(np.argmin(np.abs(false_accept - false_reject)))
    return float((false_accept[i] + false_reject[i]) / 2)


def verification_eer(embeddings: np.ndarray, speakers: list[str]) -> float | None:
    """EER over all pairs of the rows that embedded (None when the set has a single speaker)."""
    keep = ~np.isnan(embeddings).any(axis=1)
    emb, spk = embeddings[keep], np.asarray(speakers)[keep]
    i, j = np.triu_indices(len(emb), k=1)
    is_target = spk[i] == spk[j]
    if len(i) == 0 or is_target.all() or not is_target.any():
        return None
    return equal_error_rate(cosine(emb[i], emb[j]), is_target)
