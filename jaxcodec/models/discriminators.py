"""Adversarial discriminators: EnCodec's multi-scale STFT (MS-STFT) and HiFi-GAN's multi-period (MPD) and
multi-scale (MSD) discriminators, channels-last, built from the weight-normalised convs of `conv.py`.

Each sub-discriminator maps a waveform `wav_bn` [B, N] to `(logits, fmaps)`, the list of feature maps the
feature-matching loss compares. What each returns follows its reference exactly, so imported weights and
published losses carry over:

- `STFTDiscriminator` (encodec/msstftd.py, DiscriminatorSTFT): logits [B, frames', freq', 1] (EnCodec's 4-D
  `b 1 t w`); fmaps = the 5 activations after each conv, the post conv excluded.
- `PeriodDiscriminator` (hifi-gan/models.py, DiscriminatorP): logits flattened to [B, n]; fmaps = the 5
  activations plus the post conv's output (6 maps, [B, T/p', p, C]).
- `ScaleDiscriminator` (hifi-gan/models.py, DiscriminatorS): logits flattened to [B, n]; fmaps = the 7
  activations plus the post conv's output (8 maps, [B, T', C]).

`Discriminators` holds the families selected by `DiscriminatorConfig.kinds` and concatenates their outputs in a
fixed order: all MS-STFT scales (in `msstft_n_ffts` order), then all MPD periods (in `mpd_periods` order), then
the MSD scales (raw, ×2 pooled, ×4 pooled, ...). `Discriminators.names` labels each entry ("msstft_2048",
"mpd_2", "msd_0").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcodec import spectral
from jaxcodec.config import DiscriminatorConfig
from jaxcodec.models import remat
from jaxcodec.models.conv import Conv1d, Conv2d

KINDS = ("msstft", "mpd", "msd")

DiscriminatorOutput = tuple[list[jax.Array], list[list[jax.Array]]]


def get_2d_padding(kernel_size: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """'Same' zero padding of a 2-D conv (EnCodec's helper of the same name)."""
    return ((kernel_size[0] - 1) * dilation[0]) // 2, ((kernel_size[1] - 1) * dilation[1]) // 2


def spectrogram(wav_bn: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
    """Complex STFT [B, frames, n_fft//2 + 1] as torchaudio's `Spectrogram(n_fft, hop_length, win_length=n_fft,
    window_fn=hann_window, normalized=True, center=False, power=None)`, which EnCodec's discriminator uses:
    torchaudio's `normalized=True` divides by sqrt(sum(window²)), not by sqrt(n_fft) as `torch.stft` would.
    Runs in float32 whatever the input dtype (see `spectral.stft`)."""
    length = wav_bn.shape[-1]
    if length < n_fft:
        raise ValueError(f"STFT discriminator with n_fft={n_fft} needs at least {n_fft} samples, got {length}; "
                         "use longer training segments or drop that scale from disc.msstft_n_ffts")
    return spectral.stft(wav_bn, n_fft, hop_length, win_length=n_fft, center=False, normalized="window")


class STFTDiscriminator(nnx.Module):
    """EnCodec's DiscriminatorSTFT: 2-D convs over the real/imag spectrogram, strided along frequency.

    Reference: facebookresearch/encodec, encodec/msstftd.py (DiscriminatorSTFT). Hop n_fft//4, window n_fft.
    """

    def __init__(self, n_fft: int, *, filters: int = 32, max_filters: int = 1024, filters_scale: int = 1,
                 kernel_size: tuple[int, int] = (3, 9), dilations: tuple[int, ...] = (1, 2, 4),
                 stride: tuple[int, int] = (1, 2), init: str = "pytorch", rngs: nnx.Rngs):
        self.n_fft, self.hop_length = n_fft, n_fft // 4
        # Quirk kept from EnCodec: its first NormConv2d is built without `norm=...`, so NormConv2d's default
        # norm='none' applies and this conv is a plain (not weight-normalised) Conv2d; all later convs are.
        convs = [Conv2d(2, filters, kernel_size, padding=get_2d_padding(kernel_size), weight_norm=False, init=init,
                        rngs=rngs)]
        # EnCodec sets the next conv's input width to min(filters_scale * filters, max_filters), which differs
        # from the first conv's output when filters_scale > 1 (its code fails there). We chain the actual widths
        # instead: identical to EnCodec at its default filters_scale = 1.
        in_chs = filters
        for i, dilation in enumerate(dilations):
            out_chs = min(filters_scale ** (i + 1) * filters, max_filters)
            convs.append(Conv2d(in_chs, out_chs, kernel_size, stride=stride, dilation=(dilation, 1),
                                padding=get_2d_padding(kernel_size, (dilation, 1)), init=init, rngs=rngs))
            in_chs = out_chs
        square = (kernel_size[0], kernel_size[0])
        out_chs = min(filters_scale ** (len(dilations) + 1) * filters, max_filters)
        convs.append(Conv2d(in_chs, out_chs, square, padding=get_2d_padding(square), init=init, rngs=rngs))
        self.convs = nnx.List(convs)
        self.conv_post = Conv2d(out_chs, 1, square, padding=get_2d_padding(square), init=init, rngs=rngs)

    def __call__(self, wav_bn: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        spec = spectrogram(wav_bn, self.n_fft, self.hop_length)
        # EnCodec's `b c t w` (channels real, imag; time; frequency) in channels-last.
        z_btfc = jnp.stack([spec.real, spec.imag], axis=-1).astype(wav_bn.dtype)
        fmaps = []
        for conv in self.convs:
            z_btfc = jax.nn.leaky_relu(conv(z_btfc), 0.2)
            fmaps.append(z_btfc)
        return self.conv_post(z_btfc), fmaps


# HiFi-GAN's LeakyReLU slope (LRELU_SLOPE in hifi-gan/models.py).
HIFIGAN_LRELU_SLOPE = 0.1


def _hifigan_stack(convs, conv_post, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """HiFi-GAN's discriminator body: conv → leaky ReLU per layer, then the post conv; the feature maps include
    the post conv's output, and the logits are flattened to [B, n]."""
    fmaps = []
    for conv in convs:
        x = jax.nn.leaky_relu(conv(x), HIFIGAN_LRELU_SLOPE)
        fmaps.append(x)
    x = conv_post(x)
    fmaps.append(x)
    return x.reshape(x.shape[0], -1), fmaps


class PeriodDiscriminator(nnx.Module):
    """HiFi-GAN's DiscriminatorP: the waveform folded into [T/p, p] and convolved along T/p only.

    Reference: jik876/hifi-gan, models.py (DiscriminatorP, use_spectral_norm=False → weight norm).
    """

    def __init__(self, period: int, *, kernel_size: int = 5, stride: int = 3, init: str = "pytorch",
                 rngs: nnx.Rngs):
        self.period = period
        pad = ((kernel_size - 1) // 2, 0)  # HiFi-GAN's get_padding(5, 1) = 2
        widths = (1, 32, 128, 512, 1024)
        convs = [Conv2d(c_in, c_out, (kernel_size, 1), stride=(stride, 1), padding=pad, init=init, rngs=rngs)
                 for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)]
        convs.append(Conv2d(1024, 1024, (kernel_size, 1), padding=(2, 0), init=init, rngs=rngs))
        self.convs = nnx.List(convs)
        self.conv_post = Conv2d(1024, 1, (3, 1), padding=(1, 0), init=init, rngs=rngs)

    def __call__(self, wav_bn: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        batch, length = wav_bn.shape
        if length % self.period:
            wav_bn = jnp.pad(wav_bn, ((0, 0), (0, self.period - length % self.period)), mode="reflect")
        # torch's view(b, 1, t/p, p) in channels-last: H = t/p, W = p, one channel.
        return _hifigan_stack(self.convs, self.conv_post, wav_bn.reshape(batch, -1, self.period, 1))


class ScaleDiscriminator(nnx.Module):
    """HiFi-GAN's DiscriminatorS: strided, grouped 1-D convs over the raw (or pooled) waveform.

    Reference: jik876/hifi-gan, models.py (DiscriminatorS). HiFi-GAN puts spectral norm on the first scale; we use
    weight norm on every scale, because spectral norm needs power-iteration state (a running estimate of each
    kernel's top singular vector, updated every call) that a pure train step would have to thread through.
    """

    # (in, out, kernel, stride, groups), HiFi-GAN's layer list; padding is (kernel - 1) // 2 each side.
    LAYERS = ((1, 128, 15, 1, 1), (128, 128, 41, 2, 4), (128, 256, 41, 2, 16), (256, 512, 41, 4, 16),
              (512, 1024, 41, 4, 16), (1024, 1024, 41, 1, 16), (1024, 1024, 5, 1, 1))

    def __init__(self, *, init: str = "pytorch", rngs: nnx.Rngs):
        self.convs = nnx.List([Conv1d(c_in, c_out, k, stride=s, groups=g, padding="symmetric", init=init, rngs=rngs)
                               for c_in, c_out, k, s, g in self.LAYERS])
        self.conv_post = Conv1d(1024, 1, 3, padding="symmetric", init=init, rngs=rngs)

    def __call__(self, wav_bn: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        return _hifigan_stack(self.convs, self.conv_post, wav_bn[:, :, None])


def avg_pool_1d(wav_bn: jax.Array, kernel: int = 4, stride: int = 2, padding: int = 2) -> jax.Array:
    """torch.nn.AvgPool1d(kernel, stride, padding) with its defaults (count_include_pad=True, floor mode):
    zero padding counts in the mean, so edge outputs are damped."""
    padded = jnp.pad(wav_bn, ((0, 0), (padding, padding)))
    n_out = (padded.shape[-1] - kernel) // stride + 1
    # A sum of `kernel` strided slices: plain slicing, cheap to differentiate.
    summed = sum(padded[:, j : j + stride * (n_out - 1) + 1 : stride] for j in range(kernel))
    return summed / kernel


class Discriminators(nnx.Module):
    """All selected discriminator families; one (logits, fmaps) entry per sub-discriminator, in `names` order.

    `dtype` is the compute dtype (e.g. "bfloat16"): the input is cast to it, parameters stay float32 and are cast
    at use; the STFT itself runs in float32.
    """

    def __init__(self, config: DiscriminatorConfig, *, dtype: str | jnp.dtype | None = None,
                 remat_policy: str | None = None, rngs: nnx.Rngs):
        unknown = [k for k in config.kinds if k not in KINDS]
        if unknown:  # empty is allowed: a reconstruction-only codec (the loop never runs the GAN step)
            raise ValueError(f"disc.kinds must be a subset of {list(KINDS)}, got {list(config.kinds)}")
        self.dtype = None if dtype is None else jnp.dtype(dtype)
        self.remat_policy = remat_policy  # each sub-discriminator rematerialised under it (models/remat.py)
        names: list[str] = []
        self.msstft = nnx.List()
        self.mpd = nnx.List()
        self.msd = nnx.List()
        if "msstft" in config.kinds:
            for n_fft in config.msstft_n_ffts:
                self.msstft.append(STFTDiscriminator(n_fft, filters=config.msstft_filters,
                                                     max_filters=config.msstft_max_filters,
                                                     filters_scale=config.msstft_filters_scale,
                                                     init=config.conv_init, rngs=rngs))
                names.append(f"msstft_{n_fft}")
        if "mpd" in config.kinds:
            for period in config.mpd_periods:
                self.mpd.append(PeriodDiscriminator(period, init=config.conv_init, rngs=rngs))
                names.append(f"mpd_{period}")
        if "msd" in config.kinds:
            for scale in range(config.msd_scales):
                self.msd.append(ScaleDiscriminator(init=config.conv_init, rngs=rngs))
                names.append(f"msd_{scale}")
        self.names = tuple(names)

    def __call__(self, wav_bn: jax.Array) -> DiscriminatorOutput:
        if wav_bn.ndim != 2:
            raise ValueError(f"discriminators take a waveform [batch, samples], got shape {wav_bn.shape}")
        if not self.names:
            raise ValueError("no discriminators configured (disc.kinds is empty)")
        if self.dtype is not None:
            wav_bn = wav_bn.astype(self.dtype)
        logits, fmaps = [], []
        for disc in [*self.msstft, *self.mpd]:
            logit, fmap = remat.call(disc, type(disc).__call__, self.remat_policy, wav_bn)
            logits.append(logit)
            fmaps.append(fmap)
        pooled_bn = wav_bn
        for i, disc in enumerate(self.msd):
            if i:  # scale i sees the waveform average-pooled i times (HiFi-GAN's meanpools)
                pooled_bn = avg_pool_1d(pooled_bn)
            logit, fmap = remat.call(disc, type(disc).__call__, self.remat_policy, pooled_bn)
            logits.append(logit)
            fmaps.append(fmap)
        return logits, fmaps
