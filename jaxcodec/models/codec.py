"""The codec (generator): SEANet encoder → RVQ → SEANet decoder, plus the two teacher-facing heads.

`encode`/`decode` are the tokenizer; `__call__` is the training forward and returns everything the losses need.
Waveforms are [B, N] float at `model.sample_rate`; codes are int32 [B, n_q, ceil(N / hop)].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcodec.config import Config
from jaxcodec.models import guidance
from jaxcodec.models.aligner import AcousticAligner, SemanticHead
from jaxcodec.models.quantizer import QuantizerOutput, ResidualVectorQuantizer
from jaxcodec.models.seanet import SEANetDecoder, SEANetEncoder


@dataclasses.dataclass(frozen=True)
class CodecOutput:
    wav_bn: jax.Array  # reconstruction, trimmed to the input length
    latents_btd: jax.Array  # encoder output before quantization
    quantizer: QuantizerOutput
    semantic_btd: jax.Array  # level 1 → HuBERT space
    acoustic: jax.Array  # levels 2..n_q → speaker-teacher space: [B, C] (utterance) or [B, T, C] (frame)
    mask_bt: jax.Array  # valid latent frames


jax.tree_util.register_dataclass(CodecOutput, data_fields=[f.name for f in dataclasses.fields(CodecOutput)],
                                 meta_fields=[])


def frame_mask(mask_bn: jax.Array, hop: int) -> jax.Array:
    """A latent frame is valid when its first sample is (crops are hop-aligned, padding only at the end)."""
    frames = -(-mask_bn.shape[1] // hop)
    padded = jnp.pad(mask_bn, ((0, 0), (0, frames * hop - mask_bn.shape[1])))
    return padded[:, ::hop].astype(jnp.float32)


class Codec(nnx.Module):
    def __init__(self, config: Config, *, rngs: nnx.Rngs):
        self.config = config
        remat_policy = config.train.remat_policy_of("seanet")
        self.encoder = SEANetEncoder(config.model, remat_policy=remat_policy, rngs=rngs)
        self.quantizer = ResidualVectorQuantizer(config.rvq, config.model.dimension, rngs=rngs)
        self.decoder = SEANetDecoder(config.model, remat_policy=remat_policy, rngs=rngs)
        self.semantic_head = SemanticHead(config.model, rngs=rngs)
        self.acoustic_aligner = AcousticAligner(config.model, rngs=rngs)

    @property
    def hop_length(self) -> int:
        return self.config.model.hop_length

    def _check_wav(self, wav_bn: jax.Array) -> None:
        if wav_bn.ndim != 2:
            raise ValueError(f"expected a waveform batch [B, N], got shape {tuple(wav_bn.shape)}")

    def _encode_latents(self, wav_bn: jax.Array) -> jax.Array:
        dtype = jnp.dtype(self.config.model.compute_dtype)
        return self.encoder(wav_bn.astype(dtype)[..., None]).astype(jnp.float32)

    def _decode_latents(self, z_btd: jax.Array, length: int) -> jax.Array:
        dtype = jnp.dtype(self.config.model.compute_dtype)
        return self.decoder(z_btd.astype(dtype))[:, :length, 0].astype(jnp.float32)

    def encode(self, wav_bn: jax.Array, n_q: int | None = None) -> jax.Array:
        """Waveform [B, N] → codes int32 [B, n_q, ceil(N / hop)]."""
        self._check_wav(wav_bn)
        return self.quantizer(self._encode_latents(wav_bn), n_q=n_q).codes_bqt

    def decode(self, codes_bqt: jax.Array, n_levels: jax.Array | int | None = None) -> jax.Array:
        """Codes [B, n_q', T] (the first n_q' ≤ n_q levels; of those, the first `n_levels`) → waveform
        [B, T · hop]."""
        if codes_bqt.ndim != 3:
            raise ValueError(f"expected codes [B, n_q, T], got shape {tuple(codes_bqt.shape)}")
        z = self.quantizer.decode(codes_bqt, n_levels)
        return self._decode_latents(z, codes_bqt.shape[-1] * self.hop_length)

    def __call__(self, wav_bn: jax.Array, mask_bn: jax.Array | None = None, *, n_q: int | None = None,
                 key: jax.Array | None = None) -> CodecOutput:
        """The training forward: reconstruction, quantizer output (losses and EMA statistics), head outputs.
        `key` makes it a training forward for the quantizer (dead-code re-seeding, quantizer dropout)."""
        self._check_wav(wav_bn)
        if mask_bn is None:
            mask_bn = jnp.ones(wav_bn.shape, jnp.float32)
        mask_bt = frame_mask(mask_bn, self.hop_length)
        z = self._encode_latents(wav_bn)
        quantized = self.quantizer(z, mask_bt, n_q=n_q, key=key)
        semantic = self.semantic_head(quantized.levels_qbtd[0])
        acoustic_in = guidance.acoustic_input(quantized.levels_qbtd, quantized.codes_bqt, mask_bt,
                                              self.config.rvq.codebook_size,
                                              centred=self.config.model.acoustic_gradient == "centred")
        acoustic = self.acoustic_aligner(acoustic_in, mask_bt)
        recon = self._decode_latents(quantized.quantized_btd, wav_bn.shape[1])
        return CodecOutput(recon, z, quantized, semantic, acoustic, mask_bt)

    def init_codebooks(self, wav_bn: jax.Array, mask_bn: jax.Array | None, key: jax.Array) -> None:
        """k-means initialisation of the RVQ from one batch's latents (run once before the first step)."""
        mask_bt = None if mask_bn is None else frame_mask(mask_bn, self.hop_length)
        self.quantizer.initialize(self._encode_latents(wav_bn), mask_bt, key)
