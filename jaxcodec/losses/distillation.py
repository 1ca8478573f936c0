"""Teacher distillation: SpeechTokenizer's semantic loss against HuBERT features (ZhangXInFD/SpeechTokenizer
speechtokenizer/trainer/loss.py) and the acoustic KL against ECAPA-TDNN embeddings."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from jaxcodec.losses.masking import masked_mean

# torch.nn.functional.cosine_similarity's default eps, the lower bound of each vector norm.
COSINE_EPS = 1e-8


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


def acoustic_loss(student: jax.Array, teacher: jax.Array, temperature: float = 1.0,
                  mask_bt: jax.Array | None = None) -> jax.Array:
    """KL(softmax(teacher/τ) ‖ softmax(student/τ)) over the last axis, for utterance embeddings [B, C] (mean over
    B) or frame-level ones [B, T, C] (mean over real frames). No τ² factor."""
    if student.shape != teacher.shape:
        raise ValueError(f"acoustic_loss needs equal shapes, got {student.shape} and {teacher.shape}")
    log_p_student = jax.nn.log_softmax(student.astype(jnp.float32) / temperature, axis=-1)
    log_p_teacher = jax.nn.log_softmax(jax.lax.stop_gradient(teacher.astype(jnp.float32)) / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    if kl.ndim == 1 or mask_bt is None:
        return jnp.mean(kl)
    return masked_mean(kl, mask_bt)

