"""Adversarial losses over K sub-discriminators: the discriminator and generator losses (hinge, EnCodec; least
squares, HiFi-GAN arXiv 2010.05646) and feature matching (EnCodec's relative form, HiFi-GAN's summed one).

Sources: EnCodec (arXiv 2210.13438; facebookresearch/audiocraft audiocraft/adversarial/losses.py) and HiFi-GAN
(the same functions copied in ZhangXInFD/SpeechTokenizer speechtokenizer/trainer/loss.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp

# HiFi-GAN's feature_loss (and SpeechTokenizer's copy) returns 2 · Σ_k Σ_l mean|D_k^l(x) − D_k^l(x̂)|.
HIFIGAN_FEATURE_LOSS_SCALE = 2.0
# Guard for EnCodec's relative feature loss, whose denominator mean|D_k^l(x)| is 0 only for a dead layer.
FEATURE_SCALE_FLOOR = 1e-12

AdversarialKind = Literal["hinge", "lsgan"]
Reduction = Literal["mean", "sum"]


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

