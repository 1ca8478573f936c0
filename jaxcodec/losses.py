"""The codec's training losses, as pure functions of jnp arrays returning float32 scalars.

Sources: EnCodec (arXiv 2210.13438; facebookresearch/encodec encodec/balancer.py; facebookresearch/audiocraft
audiocraft/adversarial/losses.py), HiFi-GAN (arXiv 2010.05646; the same functions copied in ZhangXInFD/
SpeechTokenizer speechtokenizer/trainer/loss.py) and SpeechTokenizer's distillation losses (same file).

Masks are 1.0 for real samples/frames and 0.0 for padding; every masked mean divides by the number of real
entries (at least 1, so an all-padding batch gives 0 instead of NaN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import jax
import jax.numpy as jnp

from jaxcodec import spectral
from jaxcodec.config import LossConfig

# torch.nn.functional.cosine_similarity's default eps, the lower bound of each vector norm.
COSINE_EPS = 1e-8
# HiFi-GAN's feature_loss (and SpeechTokenizer's copy) returns 2 · Σ_k Σ_l mean|D_k^l(x) − D_k^l(x̂)|.
HIFIGAN_FEATURE_LOSS_SCALE = 2.0
# Guard for EnCodec's relative feature loss, whose denominator mean|D_k^l(x)| is 0 only for a dead layer.
FEATURE_SCALE_FLOOR = 1e-12

AdversarialKind = Literal["hinge", "lsgan"]
Reduction = Literal["mean", "sum"]


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean of `values` over the entries where `mask` (same leading shape, broadcast on the right) is 1."""
    values = values.astype(jnp.float32)
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(jnp.float32).reshape(mask.shape + (1,) * (values.ndim - mask.ndim))
    mask = jnp.broadcast_to(mask, values.shape)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


# ------------------------------------------------------------------------------------------- reconstruction


def l1_time(x_bn: jax.Array, y_bn: jax.Array, mask_bn: jax.Array | None = None) -> jax.Array:
    """Mean absolute waveform error over real samples (EnCodec ℓ_t; SpeechTokenizer `recon_loss`)."""
    if x_bn.shape != y_bn.shape:
        raise ValueError(f"l1_time needs equal shapes, got {x_bn.shape} and {y_bn.shape}")
    return _masked_mean(jnp.abs(x_bn.astype(jnp.float32) - y_bn.astype(jnp.float32)), mask_bn)


def mel_loss(x_bn: jax.Array, y_bn: jax.Array, config: LossConfig, sample_rate: int = 16_000,
             mask_bn: jax.Array | None = None) -> jax.Array:
    """The multi-scale mel loss of `config.mel_form` (see `spectral.multiscale_mel_loss`), unweighted."""
    return spectral.multiscale_mel_loss(x_bn, y_bn, config.mel_form, sample_rate, mask_bn)


# ---------------------------------------------------------------------------------------------- adversarial


def _reduce(per_discriminator: list[jax.Array], reduction: Reduction) -> jax.Array:
    if not per_discriminator:
        raise ValueError("no discriminator outputs given")
    total = sum(per_discriminator[1:], per_discriminator[0])
    if reduction == "mean":
        return total / len(per_discriminator)
    if reduction == "sum":
        return total
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def discriminator_loss(real_logits: Sequence[jax.Array], fake_logits: Sequence[jax.Array],
                       kind: AdversarialKind = "hinge", reduction: Reduction = "mean") -> jax.Array:
    """Discriminator loss over K sub-discriminators (one logits array of any shape [B, ...] each).

    hinge (EnCodec eq. 2): mean(relu(1 − D_k(x))) + mean(relu(1 + D_k(x̂))).
    lsgan (HiFi-GAN): mean((1 − D_k(x))²) + mean(D_k(x̂)²).
    reduction="mean" averages over the K sub-discriminators as EnCodec (1/K Σ_k) and audiocraft
    (`normalize=True`); HiFi-GAN and SpeechTokenizer sum them ("sum").
    """
    if len(real_logits) != len(fake_logits):
        raise ValueError(f"{len(real_logits)} real vs {len(fake_logits)} fake discriminator outputs")
    terms = []
    for real, fake in zip(real_logits, fake_logits, strict=True):
        real, fake = real.astype(jnp.float32), fake.astype(jnp.float32)
        if kind == "hinge":
            terms.append(jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake)))
        elif kind == "lsgan":
            terms.append(jnp.mean((1.0 - real) ** 2) + jnp.mean(fake**2))
        else:
            raise ValueError(f"adversarial kind must be 'hinge' or 'lsgan', got {kind!r}")
    return _reduce(terms, reduction)


def generator_adversarial_loss(fake_logits: Sequence[jax.Array], kind: AdversarialKind = "hinge",
                               reduction: Reduction = "mean") -> jax.Array:
    """Generator adversarial loss: hinge mean(relu(1 − D_k(x̂))) (EnCodec paper; audiocraft's code uses
    −mean(D_k(x̂)) instead), lsgan mean((1 − D_k(x̂))²) (HiFi-GAN). Reduction over K as `discriminator_loss`."""
    terms = []
    for fake in fake_logits:
        fake = fake.astype(jnp.float32)
        if kind == "hinge":
            terms.append(jnp.mean(jax.nn.relu(1.0 - fake)))
        elif kind == "lsgan":
            terms.append(jnp.mean((1.0 - fake) ** 2))
        else:
            raise ValueError(f"adversarial kind must be 'hinge' or 'lsgan', got {kind!r}")
    return _reduce(terms, reduction)


def feature_matching_loss(real_fmaps: Sequence[Sequence[jax.Array]], fake_fmaps: Sequence[Sequence[jax.Array]],
                          relative: bool = True) -> jax.Array:
    """Feature matching between the discriminators' feature maps of x (real) and x̂ (fake); real features are
    constants (stop-gradient).

    relative=True, EnCodec eq. 3: 1/K Σ_k 1/L_k Σ_l mean|D_k^l(x) − D_k^l(x̂)| / mean|D_k^l(x)| (the mean over
    layers is taken within each sub-discriminator first, as audiocraft's FeatureMatchingLoss, which equals
    1/(KL) Σ_k,l when every sub-discriminator has L layers). audiocraft computes that denominator but never
    divides by it; the paper's formula does, and so do we.
    relative=False, HiFi-GAN `feature_loss`: 2 · Σ_k Σ_l mean|D_k^l(x) − D_k^l(x̂)|, summed, with HiFi-GAN's
    factor 2 (fold it into λ_feat if unwanted).
    """
    if len(real_fmaps) != len(fake_fmaps):
        raise ValueError(f"{len(real_fmaps)} real vs {len(fake_fmaps)} fake discriminator feature lists")
    per_discriminator = []
    for real_layers, fake_layers in zip(real_fmaps, fake_fmaps, strict=True):
        if len(real_layers) != len(fake_layers) or not real_layers:
            raise ValueError(f"feature map counts differ or are empty: {len(real_layers)} vs {len(fake_layers)}")
        layer_terms = []
        for real, fake in zip(real_layers, fake_layers, strict=True):
            real = jax.lax.stop_gradient(real.astype(jnp.float32))
            distance = jnp.mean(jnp.abs(real - fake.astype(jnp.float32)))
            if relative:
                distance = distance / jnp.maximum(jnp.mean(jnp.abs(real)), FEATURE_SCALE_FLOOR)
            layer_terms.append(distance)
        per_discriminator.append(_reduce(layer_terms, "mean" if relative else "sum"))
    if relative:
        return _reduce(per_discriminator, "mean")
    return HIFIGAN_FEATURE_LOSS_SCALE * _reduce(per_discriminator, "sum")


# ------------------------------------------------------------------------------------- teacher distillation


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
        return _masked_mean(jax.nn.softplus(-cos_bt), mask_bt)
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
    return _masked_mean(kl, mask_bt)


# ------------------------------------------------------------------------------------------------- balancer


def balancer_init(names: Sequence[str]) -> dict[str, dict[str, jax.Array]]:
    """Empty state of EnCodec's gradient-norm EMA: {"fix": {name: 0}, "total": {name: 0}}, a pytree."""
    zeros = {name: jnp.zeros((), jnp.float32) for name in names}
    return {"fix": dict(zeros), "total": dict(zeros)}


def balance_gradients(grads: Mapping[str, jax.Array], weights: Mapping[str, float],
                      state: Mapping[str, Mapping[str, jax.Array]], ema_decay: float = 0.999,
                      total_norm: float = 1.0, epsilon: float = 1e-12, per_batch_item: bool = True
                      ) -> tuple[jax.Array, dict[str, dict[str, jax.Array]], dict[str, jax.Array]]:
    """EnCodec's loss balancer (facebookresearch/encodec, encodec/balancer.py, `Balancer.backward`) as a pure
    function of the per-loss gradients w.r.t. the decoded waveform, grads[name] [B, ...]:

        norm_i = mean_b ||g_i[b]||₂ (per_batch_item) or ||g_i||₂
        avg_i  = EMA of norm_i, debiased: fix ← β·fix + 1, total ← β·total + norm_i, avg_i = total / fix
        G      = Σ_i g_i · (w_i / Σ_j w_j) · total_norm / (epsilon + avg_i)

    encodec's averager is called with weight 1 (its `count` only weights the cross-worker average, which a
    global-batch norm already is). Returns (G in the gradients' dtype, new state, metrics); metrics hold each
    loss's norm, EMA norm, share of the summed EMA norms (encodec's monitor `ratio_*`) and applied scale, so
    the effective loss Σ_i scale_i · loss_i can be logged.
    """
    missing = [name for name in grads if name not in weights or name not in state["fix"]]
    if missing:
        raise KeyError(f"balancer has no weight or state for losses {missing}; weights: {sorted(weights)}")
    norms = {}
    for name, grad in grads.items():
        grad32 = grad.astype(jnp.float32)
        if per_batch_item:
            norms[name] = jnp.mean(jnp.sqrt(jnp.sum(grad32**2, axis=tuple(range(1, grad32.ndim)))))
        else:
            norms[name] = jnp.sqrt(jnp.sum(grad32**2))
    new_state = {"fix": dict(state["fix"]), "total": dict(state["total"])}
    avg_norms = {}
    for name, norm in norms.items():
        new_state["fix"][name] = state["fix"][name] * ema_decay + 1.0
        new_state["total"][name] = state["total"][name] * ema_decay + norm
        avg_norms[name] = new_state["total"][name] / new_state["fix"][name]
    sum_avg_norms = sum(avg_norms.values())
    total_weight = sum(weights[name] for name in grads)
    if total_weight <= 0:
        raise ValueError(f"balancer weights must sum to a positive number, got {dict(weights)}")
    combined = None
    metrics = {}
    for name, grad in grads.items():
        scale = (weights[name] / total_weight) * total_norm / (epsilon + avg_norms[name])
        term = grad.astype(jnp.float32) * scale
        combined = term if combined is None else combined + term
        metrics[f"grad_norm/{name}"] = norms[name]
        metrics[f"avg_grad_norm/{name}"] = avg_norms[name]
        metrics[f"grad_ratio/{name}"] = avg_norms[name] / sum_avg_norms
        metrics[f"balancer_scale/{name}"] = scale
    first = next(iter(grads.values()))
    return combined.astype(first.dtype), new_state, metrics
