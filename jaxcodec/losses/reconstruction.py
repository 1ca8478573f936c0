"""Reconstruction losses: waveform L1 and the multi-scale mel loss (EnCodec arXiv 2210.13438 ℓ_t and ℓ_f;
SpeechTokenizer's `recon_loss` and mel loss)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcodec import spectral
from jaxcodec.config import LossConfig
from jaxcodec.losses.masking import masked_mean


def l1_time(x_bn: jax.Array, y_bn: jax.Array, mask_bn: jax.Array | None = None) -> jax.Array:
    """Mean absolute waveform error over real samples (EnCodec ℓ_t; SpeechTokenizer `recon_loss`)."""
    if x_bn.shape != y_bn.shape:
        raise ValueError(f"l1_time needs equal shapes, got {x_bn.shape} and {y_bn.shape}")
    return masked_mean(jnp.abs(x_bn.astype(jnp.float32) - y_bn.astype(jnp.float32)), mask_bn)


def mel_loss(x_bn: jax.Array, y_bn: jax.Array, config: LossConfig, sample_rate: int = 16_000,
             mask_bn: jax.Array | None = None) -> jax.Array:
    """The multi-scale mel loss of `config.mel_form` (see `spectral.multiscale_mel_loss`), unweighted."""
    return spectral.multiscale_mel_loss(x_bn, y_bn, config.mel_form, sample_rate, mask_bn)

