"""Where the acoustic guidance enters the codec: the acoustic aligner's input, RVQ levels 2..n_q, and the gradient
it passes back to the encoder.

The value is Σ_{l≥2} q_l, with the straight-through gradient handed to the encoder's latent z once (through level
2's residual z − q_1), as the decoder's z + sg(Σq − z) does: summing the per-level straight-through outputs would
hand the encoder n_q − 1 copies of it.

The gradient is centred within each level-1 code (`model.acoustic_gradient: centred`). Levels 2..n_q quantize
the residual r = z − q_1, and level 1's EMA codebook moves each code to the mean of the latents it serves. So the
part of the aligner's gradient that is common to the frames of one level-1 code asks for something level 1 takes
back: move those frames of z together, and within a few steps (decay 0.9: ~10) code q_1 has followed them and r
is what it was. The straight-through estimator cannot see that, the request never ends, and Adam integrates it:
the encoder grows an offset and a scale without bound while the codebooks chase it, the commitment loss and the
gradient norm grow by orders of magnitude and the reconstruction gradient vanishes (measured: latent RMS 0.9 →
6000 in 300 steps with a calibrated teacher; bench/learning.md). Removing, per level-1 code, the mean of the
gradient over that code's frames in the batch passes on only what levels 2..n_q can hold: the variation of the
residual within a code. The forward value is unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def centred_within_codes(x_btd: jax.Array, codes_bt: jax.Array, mask_bt: jax.Array, num_codes: int) -> jax.Array:
    """Identity on `x_btd`; its gradient has, for each code of `codes_bt` (0..num_codes − 1), its mean over that
    code's real frames (mask_bt > 0) in the batch removed; padded frames get no gradient."""
    return x_btd


def _centred_forward(x_btd, codes_bt, mask_bt, num_codes):
    return x_btd, (codes_bt, mask_bt)


def _centred_backward(num_codes, residuals, grad_btd):
    codes_bt, mask_bt = residuals
    flat_codes = codes_bt.reshape(-1)
    weights = mask_bt.reshape(-1).astype(grad_btd.dtype)
    flat_grad = grad_btd.reshape(-1, grad_btd.shape[-1]) * weights[:, None]
    sums_kd = jax.ops.segment_sum(flat_grad, flat_codes, num_segments=num_codes)
    counts_k = jax.ops.segment_sum(weights, flat_codes, num_segments=num_codes)
    means_kd = sums_kd / jnp.maximum(counts_k, 1.0)[:, None]
    centred = (flat_grad - means_kd[flat_codes] * weights[:, None]).reshape(grad_btd.shape)
    return centred, None, None


centred_within_codes.defvjp(_centred_forward, _centred_backward)


def acoustic_input(levels_qbtd: jax.Array, codes_bqt: jax.Array, mask_bt: jax.Array, codebook_size: int,
                   centred: bool = True) -> jax.Array:
    """The acoustic aligner's input [B, T, D]: Σ_{l≥2} q_l (zeros with a single level), its straight-through
    gradient passed to the encoder once, and with `centred` centred within each level-1 code (module docstring)."""
    if levels_qbtd.shape[0] < 2:
        return jnp.zeros_like(levels_qbtd[0])
    through = levels_qbtd[1]
    summed = through + jax.lax.stop_gradient(levels_qbtd[1:].sum(0) - through)
    if not centred:
        return summed
    return centred_within_codes(summed, codes_bqt[:, 0], mask_bt, codebook_size)
