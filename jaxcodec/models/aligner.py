"""The two teacher-facing heads of the paper (arXiv 2507.06802).

- `SemanticHead`: RVQ level 1's quantized output → linear → HuBERT's dimension (SpeechTokenizer's `transform`),
  so level 1 is distilled towards linguistic content.
- `AcousticAligner`: the quantized output of levels 2..n_q → an 8-head attention align layer → the speaker
  teacher's space (ECAPA-TDNN's in the paper), so the remaining levels carry timbre and prosody. The input is
  standardised over the batch (`model.aligner_input_norm`: per-channel mean over the real frames removed, divided
  by their RMS): the aligner then cannot profit from a common offset or a larger scale of levels 2..n_q, two
  directions the codec can move in without bound (models/guidance.py), and its input has the same scale whatever
  the codec's latent scale. One self-attention layer (pre-projection, residual, layer norm) relates the frames;
  then either attentive pooling with a learned query gives one utterance vector (the teacher's utterance
  embedding, the default) or a per-frame projection gives [T, C] (frame-level targets).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcodec.config import ModelConfig


class SemanticHead(nnx.Module):
    """[B, T, dimension] → [B, T, semantic_dim]; the identity when the two sizes agree (as SpeechTokenizer)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        same = config.dimension == config.semantic_dim
        self.proj = None if same else nnx.Linear(config.dimension, config.semantic_dim, rngs=rngs)

    def __call__(self, level1_btd: jax.Array) -> jax.Array:
        return level1_btd if self.proj is None else self.proj(level1_btd)


# The variance floor of the standardisation, as a fraction of the input's mean square: it amplifies the spread
# of the batch at most 1/√RELATIVE_VARIANCE_FLOOR = 100× relative to the input's scale. Without it a batch whose
# frames all took one code on levels 2..n_q (an untrained codebook does this) has a spread of float noise (~1e-7
# of its scale, measured), and dividing by that spread makes the noise the aligner's input: on 1 and 8 devices
# the acoustic loss then differed by 0.3 % at step 0 (tests/train/test_training.py, mesh comparison).
RELATIVE_VARIANCE_FLOOR = 1e-4
# Keeps it finite for an all-zero input (one RVQ level, or a batch of silence).
STANDARDISE_EPS = 1e-12


def standardise_over_batch(x_btd: jax.Array, valid_bt: jax.Array) -> jax.Array:
    """x minus its per-channel mean over the real frames of the batch, divided by the root mean square of the
    result over those frames and all channels (floored at RELATIVE_VARIANCE_FLOOR of x's mean square); padded
    frames are zero."""
    weights = valid_bt.astype(x_btd.dtype)[..., None]
    frames = jnp.maximum(jnp.sum(weights), 1.0)
    centred = (x_btd - jnp.sum(x_btd * weights, axis=(0, 1), keepdims=True) / frames) * weights
    variance = jnp.sum(centred * centred) / (frames * x_btd.shape[-1])
    mean_square = jnp.sum(x_btd * x_btd * weights) / (frames * x_btd.shape[-1])
    return centred / jnp.sqrt(variance + RELATIVE_VARIANCE_FLOOR * mean_square + STANDARDISE_EPS)


class AcousticAligner(nnx.Module):
    """[B, T, dimension] (+ frame mask) → [B, acoustic_dim] (utterance) or [B, T, acoustic_dim] (frame)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        width = config.aligner_dim
        if width % config.aligner_heads:
            raise ValueError(f"model.aligner_dim ({width}) must be divisible by model.aligner_heads "
                             f"({config.aligner_heads})")
        self.in_proj = nnx.Linear(config.dimension, width, rngs=rngs)
        self.self_attention = nnx.MultiHeadAttention(config.aligner_heads, width, decode=False, rngs=rngs)
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.mode = config.acoustic_mode
        if self.mode == "utterance":
            self.query = nnx.Param(jax.random.normal(rngs.params(), (1, 1, width)) * 0.02)
            self.pool_attention = nnx.MultiHeadAttention(config.aligner_heads, width, decode=False, rngs=rngs)
        self.out_proj = nnx.Linear(width, config.acoustic_dim, rngs=rngs)
        self.input_norm = config.aligner_input_norm

    def __call__(self, acoustic_btd: jax.Array, mask_bt: jax.Array | None = None) -> jax.Array:
        b, t, _ = acoustic_btd.shape
        valid_bt = jnp.ones((b, t), bool) if mask_bt is None else mask_bt.astype(bool)
        if self.input_norm:
            acoustic_btd = standardise_over_batch(acoustic_btd, valid_bt)
        x = self.in_proj(acoustic_btd)
        frame_mask = valid_bt[:, None, None, :] & valid_bt[:, None, :, None]  # [B, heads=1, Tq, Tk]
        # Padded query rows attend to themselves only, so their softmax never sees an empty row (NaN).
        frame_mask = frame_mask | jnp.eye(t, dtype=bool)[None, None]
        x = self.norm(x + self.self_attention(x, mask=frame_mask))
        if self.mode == "frame":
            return self.out_proj(x)
        query = jnp.broadcast_to(self.query[...].astype(x.dtype), (b, 1, x.shape[-1]))
        pooled = self.pool_attention(query, x, x, mask=valid_bt[:, None, None, :])
        return self.out_proj(pooled[:, 0])
