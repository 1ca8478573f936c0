"""Masked means for the losses: masks are 1.0 for real samples/frames and 0.0 for padding; every masked mean divides
by the number of real entries (at least 1, so an all-padding batch gives 0 instead of NaN)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean of `values` over the entries where `mask` (same leading shape, broadcast on the right) is 1."""
    values = values.astype(jnp.float32)
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(jnp.float32).reshape(mask.shape + (1,) * (values.ndim - mask.ndim))
    mask = jnp.broadcast_to(mask, values.shape)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)



def masked_rms(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Root mean square of `values` over the real entries (a scale, e.g. of the encoder's latents [B, T, D])."""
    return jnp.sqrt(masked_mean(jnp.square(values.astype(jnp.float32)), mask))
