"""SEANet encoder and decoder as in EnCodec (Défossez et al. 2022, `encodec/modules/seanet.py`).

Encoder: conv → per ratio (reversed: 2, 4, 5, 8) residual blocks then a strided conv doubling the channels →
LSTM → conv to `dimension`. Decoder mirrors it with transposed convs. Hop = Π ratios = 320 at the defaults, so
16 kHz audio becomes 50 latent frames per second. ELU precedes every conv but the first.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxcodec.config import ModelConfig
from jaxcodec.models import remat
from jaxcodec.models.conv import Conv1d, ConvTranspose1d
from jaxcodec.models.lstm import SLSTM


def _conv(config: ModelConfig, in_ch: int, out_ch: int, kernel: int, rngs: nnx.Rngs, **kw) -> Conv1d:
    return Conv1d(in_ch, out_ch, kernel, causal=config.causal, pad_mode=config.pad_mode,
                  weight_norm=config.norm == "weight_norm", init=config.conv_init, rngs=rngs, **kw)


class ResidualBlock(nnx.Module):
    """ELU → dilated conv (dim → dim/compress) → ELU → 1×1 conv (→ dim), plus a shortcut (identity or 1×1 conv)."""

    def __init__(self, config: ModelConfig, dim: int, dilation: int, *, rngs: nnx.Rngs):
        hidden = dim // config.compress
        self.conv_dilated = _conv(config, dim, hidden, config.residual_kernel_size, rngs, dilation=dilation)
        self.conv_pointwise = _conv(config, hidden, dim, 1, rngs)
        self.shortcut = None if config.true_skip else _conv(config, dim, dim, 1, rngs)

    def __call__(self, x_btc: jax.Array) -> jax.Array:
        y = self.conv_pointwise(jax.nn.elu(self.conv_dilated(jax.nn.elu(x_btc))))
        skip = x_btc if self.shortcut is None else self.shortcut(x_btc)
        return skip + y


class EncoderBlock(nnx.Module):
    """Residual blocks at one resolution, then ELU and a strided conv (kernel 2·ratio) doubling the channels."""

    def __init__(self, config: ModelConfig, dim: int, ratio: int, *, remat_policy: str | None = None,
                 rngs: nnx.Rngs):
        self.residuals = nnx.List([ResidualBlock(config, dim, config.dilation_base**j, rngs=rngs)
                                   for j in range(config.n_residual_layers)])
        self.downsample = _conv(config, dim, dim * 2, ratio * 2, rngs, stride=ratio)
        self.remat_policy = remat_policy

    def _forward(self, x_btc: jax.Array) -> jax.Array:
        for block in self.residuals:
            x_btc = block(x_btc)
        return self.downsample(jax.nn.elu(x_btc))

    def __call__(self, x_btc: jax.Array) -> jax.Array:
        return remat.call(self, EncoderBlock._forward, self.remat_policy, x_btc)


class DecoderBlock(nnx.Module):
    """ELU and a transposed conv (kernel 2·ratio) halving the channels, then residual blocks."""

    def __init__(self, config: ModelConfig, dim: int, ratio: int, *, remat_policy: str | None = None,
                 rngs: nnx.Rngs):
        self.upsample = ConvTranspose1d(dim, dim // 2, ratio * 2, stride=ratio, causal=config.causal,
                                        weight_norm=config.norm == "weight_norm", init=config.conv_init, rngs=rngs)
        self.residuals = nnx.List([ResidualBlock(config, dim // 2, config.dilation_base**j, rngs=rngs)
                                   for j in range(config.n_residual_layers)])
        self.remat_policy = remat_policy

    def _forward(self, x_btc: jax.Array) -> jax.Array:
        x_btc = self.upsample(jax.nn.elu(x_btc))
        for block in self.residuals:
            x_btc = block(x_btc)
        return x_btc

    def __call__(self, x_btc: jax.Array) -> jax.Array:
        return remat.call(self, DecoderBlock._forward, self.remat_policy, x_btc)


class SEANetEncoder(nnx.Module):
    """Waveform [B, N, channels] → latents [B, ceil(N / hop), dimension]. `remat_policy`: each resolution's block
    is rematerialised under that policy (models/remat.py); None keeps every activation."""

    def __init__(self, config: ModelConfig, *, remat_policy: str | None = None, rngs: nnx.Rngs):
        width = config.n_filters
        self.conv_in = _conv(config, config.channels, width, config.kernel_size, rngs)
        blocks = []
        for ratio in reversed(config.ratios):
            blocks.append(EncoderBlock(config, width, ratio, remat_policy=remat_policy, rngs=rngs))
            width *= 2
        self.blocks = nnx.List(blocks)
        self.lstm = SLSTM(width, config.lstm_layers, bidirectional=config.encoder_bidirectional,
                          rngs=rngs) if config.lstm_layers else None
        lstm_out = width * (2 if config.encoder_bidirectional and config.lstm_layers else 1)
        self.conv_out = _conv(config, lstm_out, config.dimension, config.last_kernel_size, rngs)

    def __call__(self, wav_btc: jax.Array) -> jax.Array:
        x = self.conv_in(wav_btc)
        for block in self.blocks:
            x = block(x)
        if self.lstm is not None:
            x = self.lstm(x)
        return self.conv_out(jax.nn.elu(x))


class SEANetDecoder(nnx.Module):
    """Latents [B, T, dimension] → waveform [B, T · hop, channels] (no final activation, as EnCodec).
    `remat_policy` as the encoder's."""

    def __init__(self, config: ModelConfig, *, remat_policy: str | None = None, rngs: nnx.Rngs):
        width = config.n_filters * 2 ** len(config.ratios)
        self.conv_in = _conv(config, config.dimension, width, config.kernel_size, rngs)
        self.lstm = SLSTM(width, config.lstm_layers, rngs=rngs) if config.lstm_layers else None
        blocks = []
        for ratio in config.ratios:
            blocks.append(DecoderBlock(config, width, ratio, remat_policy=remat_policy, rngs=rngs))
            width //= 2
        self.blocks = nnx.List(blocks)
        self.conv_out = _conv(config, width, config.channels, config.last_kernel_size, rngs)

    def __call__(self, z_btd: jax.Array) -> jax.Array:
        x = self.conv_in(z_btd)
        if self.lstm is not None:
            x = self.lstm(x)
        for block in self.blocks:
            x = block(x)
        return self.conv_out(jax.nn.elu(x))
