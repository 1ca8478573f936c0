"""Teacher distillation: SpeechTokenizer's semantic loss against the content teacher's frames (HuBERT features;
ZhangXInFD/SpeechTokenizer speechtokenizer/trainer/loss.py) and the acoustic KL against the speaker teacher's
embeddings (ECAPA-TDNN), each with its floor: the value a student that outputs one constant reaches on the batch.
A guidance loss at its floor teaches nothing, whatever its value looks like."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from jaxcodec.losses.masking import masked_mean

# torch.nn.functional.cosine_similarity's default eps, the lower bound of each vector norm.
COSINE_EPS = 1e-8
DEFAULT_TEMPERATURE = 1.0  # the paper's τ, for a config that leaves loss.acoustic_temperature unset and no calibration


def _cosine_similarity(a: jax.Array, b: jax.Array, axis: int, eps: float) -> jax.Array:
    """torch's cosine_similarity: a·b / (max(|a|, eps) · max(|b|, eps)); sqrt(max(|a|², eps²)) has the same value
    and a finite gradient at a = 0 (zeroed padding)."""
    norm_a = jnp.sqrt(jnp.maximum(jnp.sum(a * a, axis=axis), eps * eps))
    norm_b = jnp.sqrt(jnp.maximum(jnp.sum(b * b, axis=axis), eps * eps))
    return jnp.sum(a * b, axis=axis) / (norm_a * norm_b)


def semantic_loss(student_btd: jax.Array, teacher_btd: jax.Array, mask_bt: jax.Array | None = None,
                  axis: Literal["dimension", "time"] = "dimension", eps: float = COSINE_EPS) -> jax.Array:
    """SpeechTokenizer's semantic distillation, −mean log σ(cos(student, teacher)), student/teacher [B, T, D].

    axis="dimension" (SpeechTokenizer's "D-axis", `d_axis_distill_loss`): for each batch item and feature dim d
    the cosine between the two time series (cosine over T), mean over b and d.
    axis="time": the cosine over D per frame, mean over real frames (the similarity term of SpeechTokenizer's
    `t_axis_distill_loss`, without its extra L1 term).
    Only the first min(T_student, T_teacher) frames are compared, as SpeechTokenizer does. Padded frames are
    zeroed in both inputs, which removes them from the time-axis dot products and norms.
    """
    n_frames = min(student_btd.shape[1], teacher_btd.shape[1])
    student_btd = student_btd[:, :n_frames].astype(jnp.float32)
    teacher_btd = jax.lax.stop_gradient(teacher_btd[:, :n_frames].astype(jnp.float32))
    if mask_bt is not None:
        mask_bt = mask_bt[:, :n_frames].astype(jnp.float32)
        student_btd = student_btd * mask_bt[..., None]
        teacher_btd = teacher_btd * mask_bt[..., None]
    if axis == "dimension":
        cos_bd = _cosine_similarity(student_btd, teacher_btd, axis=1, eps=eps)
        return jnp.mean(jax.nn.softplus(-cos_bd))  # −log σ(c) = softplus(−c), stable for any c
    if axis == "time":
        cos_bt = _cosine_similarity(student_btd, teacher_btd, axis=-1, eps=eps)
        return masked_mean(jax.nn.softplus(-cos_bt), mask_bt)
    raise ValueError(f"semantic axis must be 'dimension' or 'time', got {axis!r}")


def _mean_over_examples(values: jax.Array, mask_bt: jax.Array | None) -> jax.Array:
    """Mean over [B] (utterance targets) or over the real frames of [B, T] (frame targets)."""
    if values.ndim == 1 or mask_bt is None:
        return jnp.mean(values)
    return masked_mean(values, mask_bt)


def acoustic_loss(student: jax.Array, teacher: jax.Array, temperature: float | None = None,
                  mask_bt: jax.Array | None = None) -> jax.Array:
    """KL(softmax(teacher/τ) ‖ softmax(student/τ)) over the last axis, for utterance embeddings [B, C] (mean over
    B) or frame-level ones [B, T, C] (mean over real frames). No τ² factor. τ None: DEFAULT_TEMPERATURE."""
    if student.shape != teacher.shape:
        raise ValueError(f"acoustic_loss needs equal shapes, got {student.shape} and {teacher.shape}")
    temperature = DEFAULT_TEMPERATURE if temperature is None else temperature
    log_p_student = jax.nn.log_softmax(student.astype(jnp.float32) / temperature, axis=-1)
    log_p_teacher = jax.nn.log_softmax(jax.lax.stop_gradient(teacher.astype(jnp.float32)) / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    return _mean_over_examples(kl, mask_bt)


def acoustic_floor(teacher: jax.Array, temperature: float | None = None, mask_bt: jax.Array | None = None
                   ) -> jax.Array:
    """The acoustic loss of the best constant student on this batch: mean KL(p_i ‖ p̄), p_i = softmax(teacher_i/τ)
    and p̄ their mean over the batch (over its real frames for [B, T, C]), the distribution that minimises the
    summed KL of one fixed output. A loss at this value has learned nothing about the examples."""
    temperature = DEFAULT_TEMPERATURE if temperature is None else temperature
    log_p = jax.nn.log_softmax(jax.lax.stop_gradient(teacher.astype(jnp.float32)) / temperature, axis=-1)
    p = jnp.exp(log_p)
    if p.ndim == 2 or mask_bt is None:
        mean_p = jnp.mean(p.reshape(-1, p.shape[-1]), axis=0)
    else:
        weights = mask_bt.astype(jnp.float32)[..., None]
        mean_p = jnp.sum(p * weights, axis=(0, 1)) / jnp.maximum(jnp.sum(weights), 1.0)
    kl = jnp.sum(p * (log_p - jnp.log(jnp.maximum(mean_p, jnp.finfo(jnp.float32).tiny))), axis=-1)
    return _mean_over_examples(kl, mask_bt)


def semantic_floor(teacher_btd: jax.Array, mask_bt: jax.Array | None = None,
                   axis: Literal["dimension", "time"] = "dimension", n_frames: int | None = None) -> jax.Array:
    """The semantic loss of a constant student on this batch: the one that outputs the batch's mean teacher frame
    (over real frames) at every frame of every example, the cosine's analogue of the KL's mean distribution.
    `n_frames`: the student's frame count (the loss compares the first min(T_student, T_teacher) frames)."""
    teacher_btd = jax.lax.stop_gradient(teacher_btd.astype(jnp.float32))
    t = teacher_btd.shape[1] if n_frames is None else min(n_frames, teacher_btd.shape[1])
    teacher_btd = teacher_btd[:, :t]
    mask = None if mask_bt is None else mask_bt[:, :t]
    weights = jnp.ones(teacher_btd.shape[:2], jnp.float32) if mask is None else mask.astype(jnp.float32)
    mean_d = jnp.sum(teacher_btd * weights[..., None], axis=(0, 1)) / jnp.maximum(jnp.sum(weights), 1.0)
    constant_btd = jnp.broadcast_to(mean_d, teacher_btd.shape)
    return semantic_loss(constant_btd, teacher_btd, mask, axis=axis)

