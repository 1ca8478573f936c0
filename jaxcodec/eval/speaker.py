"""Speaker similarity and verification EER from a pretrained speaker encoder.

The encoder runs in a subprocess (`python -m teachers.speaker`, PyTorch) because jaxcodec never imports torch;
files go in, an npz of L2-normalised embeddings comes out. Offline the encoder is resemblyzer's GE2E model, which
ships in its wheel; `ecapa` / `ecapa:DIR` use speechbrain's ECAPA-TDNN.

EER: every pair of utterances in a set is a trial (same speaker = target); the equal error rate is where the
false-acceptance and false-rejection rates of a threshold on cosine similarity cross, read off scikit-learn's ROC
(the midpoint of the two rates at the threshold where they are closest).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from jaxcodec.eval.metrics import MetricUnavailable

DEFAULT_ENCODER = "resemblyzer"


class SpeakerEncoderError(RuntimeError):
    pass


def embed_files(paths: list[str | Path], encoder: str = DEFAULT_ENCODER, device: str = "cpu"
                ) -> tuple[np.ndarray, str, dict[str, str]]:
    """Embeddings [N, dim] (NaN rows for unreadable files), the model's name, and {path: reason} of failures."""
    with tempfile.TemporaryDirectory(prefix="jaxcodec-speaker-") as tmp:
        listing, out = Path(tmp) / "files.txt", Path(tmp) / "embeddings.npz"
        listing.write_text("\n".join(str(p) for p in paths) + "\n")
        done = subprocess.run([sys.executable, "-m", "teachers.speaker", "--encoder", encoder, "--list",
                               str(listing), "--out", str(out), "--device", device],
                              capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            if "No module named" in last:
                raise MetricUnavailable(f"speaker metrics need the eval and teachers extras ({last})")
            raise SpeakerEncoderError(f"speaker encoder {encoder} failed: {last}")
        with np.load(out, allow_pickle=False) as npz:
            return npz["embeddings"], str(npz["model"]), json.loads(str(npz["errors"]))


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
