"""Calibration of the speaker teacher: what makes the acoustic KL informative, measured on the training split and
recorded in the shard set's provenance (`provenance["speaker"]["calibration"]`). numpy only: the teachers' side
computes it when a shard set is merged, training applies it.

Why. The acoustic loss is KL(softmax(teacher/τ) ‖ softmax(student/τ)). Whether its target carries speaker
information depends on the teacher's scale and offset, not on the speaker: resemblyzer's embeddings are
L2-normalised and non-negative (256-d), so at τ = 1 their softmax is uniform to within 0.03 % and the KL between
*different speakers'* distributions is ~0.002 nats; a student that outputs one constant vector reaches the loss's
value. A random ECAPA-TDNN (unnormalised, 192-d) gives 0.03 nats. Nothing about the paper's τ = 1 transfers from
one teacher to another.

The rule (SPEAKER_RULE). From the training split's utterance embeddings e (at most MAX_UTTERANCES, dealt evenly
over speakers): centre c = mean(e) and scale s = the root mean square of e − c over all coordinates, so the
standardised embedding (e − c) / s has unit mean square; then the temperature τ (bisection on log τ) at which the
mean KL between the distributions softmax((e − c) / (s τ)) of utterances of *different* speakers is
`target_nats` (DEFAULT_TARGET_NATS). The centring removes what every utterance shares (for resemblyzer most of
each embedding); the scale makes τ comparable between teachers; the target says how different two speakers'
targets are. A shard set with one training speaker uses the KL between different utterances instead (recorded).

`measures` gives the numbers a researcher checks (entropy against log(dim), mean KL between and within speakers,
the batch floor: what a constant student reaches on batches of FLOOR_BATCH utterances), before (raw, τ = 1) and
after calibration; `jaxcodec shards info` prints them and `jaxcodec shards calibrate` recomputes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SPEAKER_RULE = ("centre on the training split's mean embedding, divide by the root mean square of the centred "
                "values, then the temperature at which the mean KL between the teacher distributions of utterances "
                "of different training speakers equals the target")
# Target of the rule, in nats: large enough that a batch's floor (what a constant student reaches, ~0.35× the
# between-speaker KL on 8-utterance batches of the demo's 9-12 speakers) stays well above 0.3 nats, small enough
# that the distributions are not near one-hot (entropy stays above half of log(dim) for both offline teachers).
# Measured on the demo corpus (bench/learning.md, "Teacher calibration").
DEFAULT_TARGET_NATS = 1.5
MAX_UTTERANCES = 2000  # embeddings the rule reads: the pairwise KL matrix is MAX² entries (32 MB of float64)
FLOOR_BATCH = 8  # the CPU recipe's batch (configs/cpu.yaml): the floor `measures` reports
FLOOR_DRAWS = 500  # random batches averaged for that floor
TAU_BOUNDS = (1e-3, 1e3)  # bisection range of τ; the KL is monotone in τ over it for any non-constant embedding
BISECTION_STEPS = 60  # halvings of log τ's range: τ to ~1e-17 relative, far below float32 noise
MIN_SCALE = 1e-8  # centred embeddings with a smaller RMS are constant: nothing to calibrate


class CalibrationError(ValueError):
    """The embeddings cannot be calibrated (too few, or all equal); the message says why."""


def log_distributions(embeddings_nd: np.ndarray, center: np.ndarray | float, scale: float, tau: float) -> np.ndarray:
    """log softmax((e − c) / (s τ)) per row, float64."""
    logits = (np.asarray(embeddings_nd, np.float64) - center) / (scale * tau)
    logits -= logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def _pairwise_kl(log_p: np.ndarray) -> np.ndarray:
    """KL(p_i ‖ p_j) for every pair: Σ p_i log p_i − Σ p_i log p_j."""
    p = np.exp(log_p)
    return np.sum(p * log_p, axis=1)[:, None] - p @ log_p.T


def _between_mask(speakers: np.ndarray) -> np.ndarray:
    different = speakers[:, None] != speakers[None, :]
    if different.any():
        return different
    return ~np.eye(len(speakers), dtype=bool)  # one speaker: between utterances instead


def measures(embeddings_nd: np.ndarray, speakers: Sequence[str], center: np.ndarray | float = 0.0,
             scale: float = 1.0, tau: float = 1.0, seed: int = 0) -> dict:
    """What the teacher distributions softmax((e − c) / (s τ)) carry: entropy (and the uniform's, log dim), the
    mean KL between utterances of different speakers and of the same speaker, and the batch floor: the mean over
    random FLOOR_BATCH-utterance batches of mean_i KL(p_i ‖ batch mean), the acoustic loss of a constant student."""
    speakers = np.asarray([str(s) for s in speakers])
    log_p = log_distributions(embeddings_nd, center, scale, tau)
    p = np.exp(log_p)
    kl = _pairwise_kl(log_p)
    same = (speakers[:, None] == speakers[None, :]) & ~np.eye(len(speakers), dtype=bool)
    rng = np.random.default_rng(seed)
    batch = min(FLOOR_BATCH, len(p))
    floors = []
    for _ in range(FLOOR_DRAWS if len(p) > batch else 1):
        rows = rng.choice(len(p), batch, replace=False)
        mean_p = p[rows].mean(axis=0)
        floors.append(float(np.mean(np.sum(p[rows] * (log_p[rows] - np.log(mean_p)), axis=1))))
    return {
        "temperature": float(tau),
        "entropy": float(np.mean(-np.sum(p * log_p, axis=1))),
        "uniform_entropy": float(math.log(p.shape[1])),
        "kl_between_speakers": float(kl[_between_mask(speakers)].mean()) if len(p) > 1 else 0.0,
        "kl_within_speakers": float(kl[same].mean()) if same.any() else None,
        f"floor_batch{batch}": float(np.mean(floors)),
    }


def _temperature_for(log_kl_target: float, standardised: np.ndarray, between: np.ndarray) -> float:
    """τ with mean between-speaker KL = exp(log_kl_target): bisection on log τ (the KL falls as τ grows)."""
    def log_kl(log_tau: float) -> float:
        kl = _pairwise_kl(log_distributions(standardised, 0.0, 1.0, math.exp(log_tau)))[between].mean()
        return math.log(max(kl, 1e-300))

    low, high = (math.log(bound) for bound in TAU_BOUNDS)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        if log_kl(middle) > log_kl_target:
            low = middle  # still too different: a higher temperature
        else:
            high = middle
    return math.exp((low + high) / 2)


def speaker_calibration(embeddings_nd: np.ndarray, speakers: Sequence[str],
                        target_nats: float = DEFAULT_TARGET_NATS) -> dict:
    """The rule of the module docstring on utterance embeddings [N, D] with their speakers: centre, scale,
    temperature, and the measures before (raw, τ = 1) and after. JSON-ready."""
    embeddings_nd = np.asarray(embeddings_nd, np.float64)
    speakers = [str(s) for s in speakers]
    if embeddings_nd.ndim != 2 or len(embeddings_nd) < 2:
        raise CalibrationError(f"calibration needs at least 2 training utterances, got {len(embeddings_nd)}")
    if not (math.isfinite(target_nats) and target_nats > 0):
        raise CalibrationError(f"the target KL must be a positive number of nats, got {target_nats!r}")
    center = embeddings_nd.mean(axis=0)
    scale = float(np.sqrt(np.mean((embeddings_nd - center) ** 2)))
    if scale < MIN_SCALE:
        raise CalibrationError("every training embedding is the same: the speaker teacher carries nothing to "
                               "calibrate")
    standardised = (embeddings_nd - center) / scale
    between = _between_mask(np.asarray(speakers))
    tau = _temperature_for(math.log(target_nats), standardised, between)
    return {
        "rule": SPEAKER_RULE,
        "target_nats": float(target_nats),
        "between": "speakers" if len(set(speakers)) > 1 else "utterances (one training speaker)",
        "utterances": len(speakers),
        "speakers": len(set(speakers)),
        "center": [float(v) for v in center],
        "scale": scale,
        "temperature": tau,
        "raw": measures(embeddings_nd, speakers),
        "calibrated": measures(embeddings_nd, speakers, center, scale, tau),
    }


def sample_rows(speakers: Sequence[str], limit: int = MAX_UTTERANCES) -> list[int]:
    """At most `limit` positions, dealt round-robin over speakers in order of first appearance (each speaker's
    utterances in their given order): every speaker is represented, none dominates."""
    by_speaker: dict[str, list[int]] = {}
    for position, speaker in enumerate(speakers):
        by_speaker.setdefault(str(speaker), []).append(position)
    queues = list(by_speaker.values())
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(q) for q in queues):
        chosen += [q[depth] for q in queues if depth < len(q)][:limit - len(chosen)]
        depth += 1
    return sorted(chosen)


def standardise(embeddings: np.ndarray, calibration: dict) -> np.ndarray:
    """(e − centre) / scale, float32: the teacher target training uses (its temperature is applied in the loss)."""
    center = np.asarray(calibration["center"], np.float32)
    return ((np.asarray(embeddings, np.float32) - center) / np.float32(calibration["scale"])).astype(np.float32)


def calibrate_shards(reader, target_nats: float = DEFAULT_TARGET_NATS, split: str = "train") -> dict:
    """The speaker teacher's calibration from a shard set (a ShardReader): the rule on at most MAX_UTTERANCES
    utterance embeddings of `split`, dealt over speakers when the index lists them (else spread evenly over the
    split). Raises CalibrationError when the split has no usable embeddings."""
    from jaxcodec.data.shards.format import SPEAKER_EMBEDDING

    positions = reader.indices(split)
    if len(positions) == 0:
        raise CalibrationError(f"the shard set has no {split!r} utterances to calibrate on")
    if reader.speakers is not None:
        chosen = positions[sample_rows([reader.speakers[i] for i in positions])]
    else:  # a set indexed before per-record speakers: an even spread, speakers read from the records
        chosen = positions[np.unique(np.linspace(0, len(positions) - 1, min(len(positions), MAX_UTTERANCES))
                                     .round().astype(int))]
    records = [reader[int(i)] for i in chosen]
    embeddings = np.stack([np.asarray(r[SPEAKER_EMBEDDING], np.float32) for r in records])
    return speaker_calibration(embeddings, [r.get("speaker") or "" for r in records], target_nats)
